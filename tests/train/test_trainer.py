"""The trainer on a tiny phantom: metrics, exact resume, crash safety, torchrun."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.phantom.test_dataset import SMALL
from tests.train.common import SCRIPT, torchrun_fit
from vipet.config import from_dict, to_dict
from vipet.data.dataset import DataConfig
from vipet.model.checkpoint import load_vipet
from vipet.phantom.dataset import write_dataset
from vipet.train.config import OptimConfig, TrainConfig
from vipet.train.losses import LossWeights
from vipet.train.trainer import fit, lr_lambda, read_checkpoint_config

PARTS = ("loss/lm", "loss/diag", "loss/align", "loss/total")


def _cfg(out: Path, **kw) -> TrainConfig:
    optim = OptimConfig(lr=1e-3, warmup_steps=2, max_steps=kw.pop("max_steps", 6), batch_size=2)
    data = DataConfig(langs=("en",), max_length=256)
    return TrainConfig(model="tiny", data=data, optim=optim, out_dir=str(out), **kw)


def _train_lines(out: Path) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "train"]


def _losses(out: Path) -> dict[int, list[float]]:
    return {r["step"]: [r[k] for k in PARTS] for r in _train_lines(out)}


def _weights(out: Path) -> dict[str, torch.Tensor]:
    model, _ = load_vipet(out / "model")
    return model.state_dict()


@pytest.fixture(scope="module")
def straight(tok, data, tmp_path_factory) -> Path:
    """The uninterrupted 6-step run every resume is compared with."""
    out = tmp_path_factory.mktemp("run_a")
    fit(_cfg(out, eval_every=3), tok, *data)
    return out


# ---- config ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model": "huge"},
        {"precision": "fp8"},
        {"log_every": 0},
        {"checkpoint_every": -1},
        {"resume": "yes"},
        {"val_split": "train"},
    ],
)
def test_config_rejects_bad_values(kwargs) -> None:
    with pytest.raises(ValueError):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [{"lr": 0.0}, {"max_steps": 0}, {"grad_accum": 0}])
def test_optim_config_rejects_bad_values(kwargs) -> None:
    with pytest.raises(ValueError):
        OptimConfig(**kwargs)


def test_config_round_trips_through_plain_data() -> None:
    cfg = _cfg(Path("x"), resume=True)
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg


def test_schedule_warms_up_then_decays_to_zero() -> None:
    lrs = [lr_lambda(s, 2, 10) for s in range(11)]
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[1:]))
    assert lrs[10] == pytest.approx(0.0)


# ---- runs -----------------------------------------------------------------------------


def test_fit_logs_every_step_with_every_loss_part(straight) -> None:
    lines = _train_lines(straight)
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]
    for r in lines:
        for key in (*PARTS, "lr", "grad_norm"):
            assert key in r and torch.isfinite(torch.tensor(r[key]))
    assert lines[0]["lr"] == pytest.approx(5e-4)  # half-way through warm-up
    vals = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in vals if r["split"] == "val"] == [3, 6]
    assert (straight / "model" / "config.json").is_file()


def test_resume_reproduces_the_uninterrupted_curve(tok, data, straight, tmp_path) -> None:
    out = tmp_path / "run_b"
    fit(_cfg(out, checkpoint_every=3, eval_every=3), tok, *data, until=3)
    assert read_checkpoint_config(out / "checkpoint").optim.max_steps == 6
    fit(_cfg(out, checkpoint_every=3, eval_every=3, resume=True), tok, *data)
    a, b = _losses(straight), _losses(out)
    assert sorted(b) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        assert torch.allclose(torch.tensor(a[step]), torch.tensor(b[step]), atol=1e-5)
    wa, wb = _weights(straight), _weights(out)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_sigkill_mid_run_then_resume_matches(tok, tok_dir, data, straight, tmp_path) -> None:
    out = tmp_path / "run_c"
    cfg = _cfg(out, checkpoint_every=2, eval_every=3)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(to_dict(cfg)))
    env = {**os.environ, "VIPET_TEST_SLEEP_AFTER_STEP": "3"}
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(config), str(tok_dir), *map(str, data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        for line in proc.stdout:
            if "step 3 done" in line:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    # Only complete checkpoints: the step-2 one, nothing half-written in its place.
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint"]
    assert {p.name for p in (out / "checkpoint").iterdir()} == {
        "state.pt",
        "rng_0.pt",
        "config.json",
    }
    assert [r["step"] for r in _train_lines(out)] == [1, 2, 3]
    fit(replace(cfg, resume=True), tok, *data)
    a, c = _losses(straight), _losses(out)
    assert sorted(c) == [1, 2, 3, 4, 5, 6]  # step 3 re-run, not logged twice
    for step in range(1, 7):
        assert torch.allclose(torch.tensor(a[step]), torch.tensor(c[step]), atol=1e-5)


def test_torchrun_two_cpu_processes(tok_dir, data, tmp_path) -> None:
    out = tmp_path / "run_ddp"
    torchrun_fit(_cfg(out, max_steps=2, checkpoint_every=2), tok_dir, data)
    assert [r["step"] for r in _train_lines(out)] == [1, 2]
    assert {p.name for p in (out / "checkpoint").iterdir()} >= {"rng_0.pt", "rng_1.pt"}
    assert (out / "model" / "config.json").is_file()


def test_grad_accum_without_alignment(tok, data, tmp_path) -> None:
    cfg = _cfg(tmp_path, max_steps=2)
    cfg = replace(
        cfg,
        optim=replace(cfg.optim, grad_accum=2),
        loss=LossWeights(align=0.0),
        val_split=None,
    )
    result = fit(cfg, tok, *data)
    lines = _train_lines(tmp_path)
    assert [r["step"] for r in lines] == [1, 2] and result["step"] == 2
    assert "loss/align" not in lines[0] and torch.isfinite(torch.tensor(lines[-1]["loss/total"]))


def test_token_lesion_loss_and_a_fixed_validation_subset(tok, data, tmp_path) -> None:
    cfg = replace(
        _cfg(tmp_path, max_steps=2, eval_every=1, eval_batches=1),
        loss=LossWeights(lesion=1.0),
    )
    fit(cfg, tok, *data)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"]
    assert all(r["loss/lesion"] > 0 for r in train) and len(val) == 2
    assert (tmp_path / "curves.png").is_file()  # drawn at the end of every run


def test_vision_steps_train_the_findings_first_then_the_lm(tok, data, tmp_path) -> None:
    cfg = replace(
        _cfg(tmp_path, max_steps=3, vision_steps=2),
        loss=LossWeights(lm=1.0, diag=1.0, align=0.5, lesion=1.0, lesion_class=1.0),
    )
    fit(cfg, tok, *data)
    train = _train_lines(tmp_path)
    vision = {"loss/diag", "loss/lesion", "loss/lesion_class", "loss/total"}
    # the first two steps have no language-model pass at all, the third has every loss
    assert [set(k for k in r if k.startswith("loss/")) for r in train[:2]] == [vision] * 2
    assert vision | {"loss/lm", "loss/align"} == {k for k in train[2] if k.startswith("loss/")}
    assert all(r["loss/lesion_class"] > 0 for r in train)
    with pytest.raises(ValueError, match="vision_steps"):
        _cfg(tmp_path, vision_steps=-1)


def test_vision_steps_pass_over_whole_study_batches(tok, data, tmp_path, monkeypatch) -> None:
    from vipet.train import trainer

    seen: list[tuple[int, int]] = []  # (step, regions per item) of every batch trained on
    inner = trainer.compute_losses

    def spy(state, batch, **kw):
        seen.append((state.step, int(batch["ct"].shape[1])))
        return inner(state, batch, **kw)

    monkeypatch.setattr(trainer, "compute_losses", spy)
    cfg = replace(
        _cfg(tmp_path, max_steps=8, vision_steps=4),
        data=DataConfig(langs=("en",), max_length=256, report_scope="both"),
    )
    fit(cfg, tok, *data)
    assert [r for step, r in seen if step < 4] == [1] * 4
    assert len(seen) == 8  # the skipped batches are not trained on; every step still is


@pytest.mark.parametrize(
    ("device", "precision", "dtype"),
    [
        ("cpu", "bf16", torch.bfloat16),
        ("cpu", "fp16", None),
        ("cpu", "fp32", None),
        ("cuda", "fp16", torch.float16),
    ],
)
def test_autocast_by_device_and_precision(device, precision, dtype) -> None:
    from types import SimpleNamespace

    from vipet.train.trainer import _autocast

    state = SimpleNamespace(
        dist=SimpleNamespace(device=torch.device(device)),
        cfg=SimpleNamespace(precision=precision),
    )
    ctx = _autocast(state)
    if dtype is None:
        assert not isinstance(ctx, torch.autocast)
    else:
        assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == dtype


def test_dense_loss_needs_a_dense_model(tok, data, tmp_path) -> None:
    from vipet.errors import ConfigError

    cfg = replace(_cfg(tmp_path, max_steps=1), loss=LossWeights(lesion_dense=1.0))
    with pytest.raises(ConfigError, match="dense_lesion"):
        fit(cfg, tok, *data)


def test_slot_teacher_forces_the_chosen_steps(tok, data, tmp_path, monkeypatch) -> None:
    from vipet.errors import ConfigError
    from vipet.model import presets, vipet

    with pytest.raises(ConfigError, match="finding slots"):
        fit(_cfg(tmp_path / "none", max_steps=1, slot_teacher=1.0), tok, *data)
    monkeypatch.setitem(presets.PRESETS, "tiny", {**presets.PRESETS["tiny"], "findings_slots": 2})
    forced: list[bool] = []
    encode = vipet.ViPetModel.encode_images

    def spy(self, ct, pet, with_attention=False, slot_lesions=None):
        forced.append(slot_lesions is not None)
        return encode(self, ct, pet, with_attention, slot_lesions)

    monkeypatch.setattr(vipet.ViPetModel, "encode_images", spy)
    out = tmp_path / "half"
    fit(_cfg(out, max_steps=8, slot_teacher=0.5, vision_steps=2), tok, *data)
    logged = [r["slot_teacher"] for r in _train_lines(out)]
    # vision steps are never forced; the rest follow the seeded draw, and the forward
    # passes got the ground-truth lesions exactly on the steps logged as forced
    assert logged[:2] == [0.0, 0.0] and 0.0 in logged[2:] and 1.0 in logged[2:]
    assert forced == [bool(x) for x in logged]
    with pytest.raises(ValueError, match="slot_teacher"):
        _cfg(out, slot_teacher=1.5)


def test_cli_train_with_config_and_overrides(tmp_path, capsys) -> None:
    from vipet.cli import main

    data = tmp_path / "ph"
    write_dataset(data, 4, seed=1, config=SMALL, progress=False)
    out = tmp_path / "run"
    config = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
    code = main(
        [
            "train",
            "--config",
            str(config),
            "--data",
            str(data),
            "optim.max_steps=2",
            "optim.warmup_steps=0",
            f"out_dir={out}",
            "eval_every=0",
            "checkpoint_every=0",
        ]
    )
    assert code == 0, capsys.readouterr().err
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and (out / "model" / "config.json").is_file()
    assert (out / "cache" / "manifest.json").is_file()
