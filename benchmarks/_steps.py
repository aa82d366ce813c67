"""Timing of training steps for the step benchmarks (language_step.py, vision_step.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vipet.train import trainer as T


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
