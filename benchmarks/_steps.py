"""Shared parts of the step benchmarks (vision_step.py, language_step.py,
train_throughput.py): their config, the language phase's memo, the timing."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vipet.config import load_config
from vipet.train import trainer as T
from vipet.train.config import TrainConfig


def step_parser(doc: str, steps: int, weights: bool = True) -> argparse.ArgumentParser:
    """The arguments every step benchmark takes (a script adds its own before parsing);
    ``weights``: also ``--weights``, a saved model to start from."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True)
    if weights:
        ap.add_argument("--weights", type=Path, help="a saved model whose weights to load")
    ap.add_argument("--split", default="val")
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    return ap


def weights_and_tokenizer(weights: Path | None, data: Path) -> tuple[dict | None, Any]:
    """A saved model's state dict and tokenizer, or (None, a tokenizer trained on the
    dataset's texts) without one."""
    if weights is not None:
        from vipet.model.checkpoint import load_vipet

        model, tok = load_vipet(weights)
        return model.state_dict(), tok
    from vipet.data.tokenizer import corpus_from_dataset, train_tokenizer

    return None, train_tokenizer(corpus_from_dataset(data), vocab_size=4000)


def bench_config(config: Path, split: str, *overrides: str) -> TrainConfig:
    """``config`` trained on ``split`` alone: no validation split, so no slot calibration
    either (it tunes on validation), then ``overrides``."""
    return load_config(
        TrainConfig,
        config,
        [f"train_split={split}", "val_split=null", "calibrate_slots=false", *overrides],
    )


def fill_memo(state: Any, batches: Iterator[Any]) -> None:
    """One epoch of language batches through the memo: every volume of the split and its
    teacher slots computed once, as a run has them after its first language epoch."""
    assert state.memo is not None
    for _ in range(len(state.loader)):
        batch = next(batches)
        vision = state.memo.vision(state.raw_model, batch, T._autocast(state))
        if state.cfg.slot_teacher > 0:
            state.memo.teacher(state.raw_model, batch, vision.grid)


def time_steps(
    state: Any, batches: Iterator[Any], steps: int, warmup: int, profile: Path | None
) -> float:
    """Seconds per optimizer step over ``steps`` steps after ``warmup`` untimed ones;
    with ``profile`` (pyinstrument installed) the timed steps are profiled to it."""
    for _ in range(warmup):
        T.train_step(state, [next(batches)])
    profiler = None
    if profile:
        import pyinstrument

        profiler = pyinstrument.Profiler(interval=0.005)
        profiler.start()
    t0 = time.perf_counter()
    for _ in range(steps):
        T.train_step(state, [next(batches)])
    per_step = (time.perf_counter() - t0) / steps
    if profiler is not None:
        profiler.stop()
        profile.write_text(profiler.output_text(unicode=False, color=False))
    return per_step
