"""strategy="fsdp" (FSDP2) under torchrun on two CPU processes (gloo): every step logged,
checkpoints and the final model hold ordinary full tensors, the math matches DDP, and a
resumed run follows the uninterrupted curve."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.distributed.tensor import DTensor

from tests.train.common import torchrun_fit
from tests.train.test_trainer import LANGUAGE, PARTS, VISION, _train_lines
from vipet.data.dataset import DataConfig
from vipet.model.checkpoint import load_vipet
from vipet.model.vipet import VISION_PARTS, ViPetModel
from vipet.train.config import OptimConfig, TrainConfig

STEPS = 4


def _cfg(out: Path, strategy: str = "fsdp", **kw) -> TrainConfig:
    """Two micro-batches of one example per step and rank: exercises gradient
    accumulation (no sync on the first) and, with 5 studies, epoch roll-over."""
    optim = OptimConfig(lr=1e-3, warmup_steps=2, max_steps=STEPS, batch_size=1, grad_accum=2)
    return TrainConfig(
        model="tiny",
        data=DataConfig(langs=("en",), max_length=256),
        optim=optim,
        out_dir=str(out),
        strategy=strategy,
        checkpoint_every=2,
        eval_every=2,
        **kw,
    )


def _curve(out: Path) -> dict[int, torch.Tensor]:
    return {r["step"]: torch.tensor([r[k] for k in PARTS]) for r in _train_lines(out)}


def _weights(out: Path) -> dict[str, torch.Tensor]:
    model, _ = load_vipet(out / "model")
    return model.state_dict()


def _tensors(obj) -> list[torch.Tensor]:
    """Every tensor nested in dicts/lists/tuples of ``obj``."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []


@pytest.fixture(scope="module")
def fsdp_run(tok_dir, data, tmp_path_factory) -> Path:
    """The uninterrupted FSDP run the other tests compare with."""
    out = tmp_path_factory.mktemp("fsdp") / "run"
    torchrun_fit(_cfg(out), tok_dir, data)
    return out


def test_strategy_must_be_known() -> None:
    with pytest.raises(ValueError, match="strategy must be one of"):
        TrainConfig(strategy="nope")


def test_fsdp_logs_every_step_and_saves_a_plain_model(fsdp_run) -> None:
    lines = _train_lines(fsdp_run)
    assert [r["step"] for r in lines] == list(range(1, STEPS + 1))
    for r in lines:
        for key in (*PARTS, "lr", "grad_norm"):
            assert isinstance(r[key], float) and torch.isfinite(torch.tensor(r[key])), key
    records = [json.loads(x) for x in (fsdp_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "val"] == [2, 4]
    model, _ = load_vipet(fsdp_run / "model")
    assert type(model) is ViPetModel
    assert not any(isinstance(p, DTensor) for p in model.parameters())


def test_fsdp_checkpoint_holds_full_tensors(fsdp_run) -> None:
    blob = torch.load(fsdp_run / "checkpoint" / "state.pt", weights_only=False)
    assert blob["strategy"] == "fsdp" and blob["world"] == 2 and blob["step"] == STEPS
    assert not any(isinstance(t, DTensor) for t in _tensors(blob))
    weights = _weights(fsdp_run)
    assert blob["model"].keys() == weights.keys()
    assert all(blob["model"][k].shape == v.shape for k, v in weights.items())
    # The optimizer state reads as Optimizer.state_dict writes it (keyed by index).
    assert blob["optimizer"]["state"] and all(
        isinstance(k, int) for k in blob["optimizer"]["state"]
    )


@pytest.mark.slow  # one more two-process launch (~15-20 s)
def test_fsdp_matches_ddp(tok_dir, data, fsdp_run, tmp_path) -> None:
    out = tmp_path / "ddp"
    torchrun_fit(_cfg(out, strategy="ddp"), tok_dir, data)
    a, b = _curve(fsdp_run), _curve(out)
    assert sorted(a) == sorted(b)
    for step in a:  # the same math; only the order of the gradient reductions differs
        assert torch.allclose(a[step], b[step], atol=1e-5), step
    model, _ = load_vipet(fsdp_run / "model")
    wa, wb = model.state_dict(), _weights(out)
    # A conv bias right before a GroupNorm of one channel per group changes nothing (the
    # norm subtracts it): its gradient is float noise, which AdamW scales to lr-sized
    # steps, different for each reduction order. Every other weight follows the math.
    noise = _norm_cancelled(model)
    assert noise and all(torch.allclose(wa[k], wb[k], atol=1e-4) for k in wa if k not in noise)


def _norm_cancelled(model: nn.Module) -> set[str]:
    """Names of the conv biases that a following per-channel GroupNorm cancels."""
    out = set()
    for name, module in model.named_modules():
        kids = list(module.named_children())
        for (key, conv), (_, norm) in itertools.pairwise(kids):
            if (
                isinstance(conv, nn.Conv3d)
                and conv.bias is not None
                and isinstance(norm, nn.GroupNorm)
                and norm.num_groups == norm.num_channels
            ):
                out.add(f"{name}.{key}.bias".lstrip("."))
    return out


def test_fsdp_resume_reproduces_the_uninterrupted_curve(tok_dir, data, fsdp_run, tmp_path):
    out = tmp_path / "resumed"
    torchrun_fit(_cfg(out), tok_dir, data, until=2)
    assert [r["step"] for r in _train_lines(out)] == [1, 2]
    torchrun_fit(_cfg(out, resume=True), tok_dir, data)
    a, b = _curve(fsdp_run), _curve(out)
    assert sorted(b) == list(range(1, STEPS + 1))
    for step in range(3, STEPS + 1):
        assert torch.equal(a[step], b[step]), step
    wa, wb = _weights(fsdp_run), _weights(out)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_fsdp_vision_phase_then_frozen_language_phase(tok_dir, data, tmp_path) -> None:
    """The vision phase on crops under FSDP, then the language phase with the vision side
    frozen — run inside every forward (no memo: it would call the vision side outside the
    root's forward, on ungathered shards) — resumed at the phase boundary."""
    out = tmp_path / "phased"
    cfg = _cfg(out, vision_steps=2, vision_batch_size=2)
    torchrun_fit(cfg, tok_dir, data, until=2)
    switch = torch.load(out / "checkpoint" / "state.pt", weights_only=False)
    assert switch["phase"] == "vision" and switch["step"] == 2
    torchrun_fit(replace(cfg, resume=True), tok_dir, data)
    lines = _train_lines(out)
    assert [r["step"] for r in lines] == list(range(1, STEPS + 1))
    keys = [{k for k in r if k.startswith("loss/")} for r in lines]
    assert keys[:2] == [VISION] * 2 and keys[2:] == [LANGUAGE] * 2  # as under DDP
    weights = _weights(out)
    assert switch["model"].keys() == weights.keys()
    changed = [n for n, v in switch["model"].items() if not torch.equal(v, weights[n])]
    assert changed and not any(n.split(".")[0] in VISION_PARTS for n in changed)
    assert any(n.startswith("language_model.") for n in changed)
