"""The trainer on a tiny phantom: metrics, exact resume, crash safety, torchrun."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.phantom.test_dataset import SMALL
from tests.train.common import SCRIPT, torchrun_fit
from vipet.config import from_dict, load_config, to_dict
from vipet.data.dataset import DataConfig
from vipet.data.vision import CropConfig
from vipet.errors import ConfigError
from vipet.model.checkpoint import load_vipet
from vipet.model.vipet import PARTS as MODEL_PARTS
from vipet.model.vipet import VISION_PARTS
from vipet.phantom.dataset import write_dataset
from vipet.train.config import OptimConfig, TrainConfig
from vipet.train.losses import LossWeights
from vipet.train.trainer import fit, lr_lambda, read_checkpoint_config

PARTS = ("loss/lm", "loss/diag", "loss/align", "loss/total")
VISION = {"loss/diag", "loss/heat", "loss/lesion", "loss/attributes", "loss/total"}
"""What a vision-phase step logs: the findings head's losses only."""
LANGUAGE = {"loss/lm", "loss/align", "loss/total"}
"""What a language-phase step logs once the vision side is frozen."""
FINDINGS = LossWeights(heat=1.0, lesion=1.0, attributes=1.0)
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


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


def _curve(out: Path) -> dict[tuple[int, str], dict[str, float]]:
    """Every logged number by (step, split)."""
    lines = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    return {(r["step"], r["split"]): {k: v for k, v in r.items() if k != "split"} for r in lines}


def _loss_keys(row: dict) -> set[str]:
    return {k for k in row if k.startswith("loss/")}


def _is_vision(key: str) -> bool:
    return key.split(".")[0] in VISION_PARTS


def _phased(out: Path, **kw) -> TrainConfig:
    """Two vision steps on crops (peak lr 2e-3), then two language steps (vision frozen);
    every findings loss weighted, evaluation after each phase."""
    return _cfg(
        out,
        max_steps=4,
        vision_steps=2,
        vision_lr=2e-3,
        vision_batch_size=4,
        loss=FINDINGS,
        eval_every=2,
        **kw,
    )


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
        {"vision_steps": -1},
        {"vision_lr": -1e-3},
        {"vision_batch_size": 0},
        {"freeze_vision": "yes"},
        {"slot_teacher": 1.5},
        {"align_tasks": ()},
        {"align_tasks": ("summary",)},
        {"lm_reduction": "mean"},
        {"heat_non_avid": 0.0},
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
    phased = _phased(Path("x"), crops=CropConfig(tokens=(2, 2)), slot_teacher=0.5)
    assert from_dict(TrainConfig, to_dict(phased)) == phased


@pytest.mark.parametrize(
    "name",
    [
        "tiny.yaml",
        "cpu-small.yaml",
        "gpu-qwen2.5-1.5b.yaml",
        "gpu-qwen2.5-7b.yaml",
        *(f"stages/{n}" for n in ("1-encoders.yaml", "2-align.yaml", "3-instruct.yaml")),
    ],
)
def test_shipped_configs_load(name) -> None:
    # every loss and phase key they set exists (no lesion_class, lesion_dense, ...)
    cfg = load_config(TrainConfig, CONFIGS / name)
    assert isinstance(cfg.loss, LossWeights) and cfg.vision_steps >= 0


def test_schedule_warms_up_then_decays_to_zero() -> None:
    lrs = [lr_lambda(s, 2, 10) for s in range(11)]
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[1:]))
    assert lrs[10] == pytest.approx(0.0)


def test_each_phase_has_its_own_warm_up_and_decay() -> None:
    lrs = [lr_lambda(s, 2, 10, vision_steps=4, vision_scale=2.0) for s in range(11)]
    # the vision phase (steps 0-3) peaks at twice the base rate and decays to 0 at its end
    assert lrs[:2] == pytest.approx([1.0, 2.0]) and lrs[3] == pytest.approx(1.0)
    assert lrs[4:6] == pytest.approx([0.5, 1.0])  # the language phase warms up again
    assert all(a >= b for a, b in itertools.pairwise(lrs[5:])) and lrs[10] == pytest.approx(0.0)
    # without a vision phase the scale is unused
    assert [lr_lambda(s, 2, 10, 0, 2.0) for s in range(11)] == [
        lr_lambda(s, 2, 10) for s in range(11)
    ]


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
    cfg = _cfg(out, max_steps=2, checkpoint_every=2, vision_steps=1, vision_batch_size=2)
    torchrun_fit(cfg, tok_dir, data)
    lines = _train_lines(out)
    assert [r["step"] for r in lines] == [1, 2]
    # DDP through both phases: crops first, then the frozen vision side's memo
    assert _loss_keys(lines[0]) == VISION and _loss_keys(lines[1]) == LANGUAGE
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


@pytest.mark.parametrize(
    ("device", "native_bf16", "precision", "dtype"),
    [
        ("cpu", True, "bf16", torch.bfloat16),
        ("cpu", False, "bf16", None),  # emulated bf16 is ~190x slower than fp32: fp32
        ("cpu", True, "fp16", None),
        ("cpu", True, "fp32", None),
        ("cuda", False, "fp16", torch.float16),
    ],
)
def test_autocast_by_device_and_precision(
    device, native_bf16, precision, dtype, monkeypatch
) -> None:
    from types import SimpleNamespace

    import vipet.model.vipet as vipet_model
    from vipet.train.trainer import _autocast, run_precision

    monkeypatch.setattr(vipet_model, "cpu_has_native_bf16", lambda: native_bf16)
    state = SimpleNamespace(
        dist=SimpleNamespace(device=torch.device(device)),
        cfg=SimpleNamespace(precision=precision),
    )
    ctx = _autocast(state)
    if dtype is None:
        assert not isinstance(ctx, torch.autocast)
        assert run_precision(precision, torch.device(device)) == "fp32"
    else:
        assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == dtype
        assert run_precision(precision, torch.device(device)) == precision


def test_a_cpu_without_native_bf16_trains_in_fp32_and_says_so(
    tok, data, tmp_path, capsys, monkeypatch
) -> None:
    import vipet.model.vipet as vipet_model

    monkeypatch.setattr(vipet_model, "cpu_has_native_bf16", lambda: False)
    fit(_cfg(tmp_path / "run", max_steps=1, precision="bf16"), tok, *data)
    assert "precision bf16 is not native on this cpu" in capsys.readouterr().out


# ---- the vision phase, then the language phase ------------------------------------------


@pytest.fixture(scope="module")
def phased(tok, data, tmp_path_factory) -> SimpleNamespace:
    """The uninterrupted two-phase run, with what it trained on (``batches``: step index,
    crops or not, image shape, training or evaluating) and the state after each step."""
    from vipet.train import trainer

    out = tmp_path_factory.mktemp("phased")
    batches: list[tuple[int, bool, tuple[int, ...], bool]] = []
    steps: dict[int, dict] = {}
    inner = trainer.compute_losses

    def spy(state, batch, **kw):
        batches.append(
            (state.step, "offsets" in batch, tuple(batch["ct"].shape), state.raw_model.training)
        )
        return inner(state, batch, **kw)

    def on_step(state, log) -> None:
        raw = state.raw_model
        steps[state.step] = {
            "phase": state.phase,
            "memo": None if state.memo is None else len(state.memo),
            "trains": {
                name: any(p.requires_grad for p in getattr(raw, name).parameters())
                for name in MODEL_PARTS
            },
            "weights": {k: v.detach().clone() for k, v in raw.state_dict().items()},
        }

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "compute_losses", spy)
        fit(_phased(out), tok, *data, on_step=on_step)
    return SimpleNamespace(out=out, batches=batches, steps=steps)


def test_vision_phase_trains_the_findings_head_then_the_lm(phased) -> None:
    lines = _train_lines(phased.out)
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    # the vision steps run no language model at all; once the vision side is frozen its
    # losses are left out (they would teach nothing)
    assert [_loss_keys(r) for r in lines] == [VISION, VISION, LANGUAGE, LANGUAGE]
    for r in lines:
        assert all(r[k] > 0 and torch.isfinite(torch.tensor(r[k])) for k in _loss_keys(r))
    # each phase warms up on its own; the vision phase peaks at vision_lr
    assert [r["lr"] for r in lines] == pytest.approx([1e-3, 2e-3, 5e-4, 1e-3])
    curve = _curve(phased.out)
    assert _loss_keys(curve[2, "val"]) == VISION and _loss_keys(curve[4, "val"]) == LANGUAGE
    # vision steps see crops (whole depth, 3 x 3 tokens in-plane), evaluated on val crops
    crops = [(i, shape, train) for i, crop, shape, train in phased.batches if crop]
    assert crops[:2] == [(0, (4, 1, 8, 24, 24), True), (1, (4, 1, 8, 24, 24), True)]
    assert crops[2:] and all((i, train) == (2, False) for i, _, train in crops[2:])
    language = [i for i, crop, _, train in phased.batches if train and not crop]
    assert language == [2, 3]


def test_the_vision_side_is_frozen_and_memoised_after_its_phase(phased) -> None:
    steps = phased.steps
    assert [steps[s]["phase"] for s in (1, 2, 3, 4)] == ["vision"] * 2 + ["language"] * 2
    assert steps[2]["memo"] is None and 0 < steps[3]["memo"] <= steps[4]["memo"]
    assert all(steps[2]["trains"].values())
    assert steps[3]["trains"] == {name: name not in VISION_PARTS for name in MODEL_PARTS}
    switch, final = steps[2]["weights"], _weights(phased.out)
    assert switch.keys() == final.keys()
    for part in MODEL_PARTS:
        keys = [k for k in switch if k.split(".")[0] == part]
        changed = any(not torch.equal(switch[k], final[k]) for k in keys)
        assert keys and changed == (part not in VISION_PARTS), part
    # ...while the vision phase did train the vision side
    first = steps[1]["weights"]
    assert any(not torch.equal(first[k], switch[k]) for k in switch if _is_vision(k))


def test_resume_across_the_phase_boundary(tok, data, phased, tmp_path) -> None:
    out = tmp_path / "cut"
    cfg = _phased(out, checkpoint_every=1)
    state = out / "checkpoint" / "state.pt"
    fit(cfg, tok, *data, until=1)  # a checkpoint inside the vision phase
    assert torch.load(state, weights_only=False)["phase"] == "vision"
    fit(replace(cfg, resume=True), tok, *data, until=3)  # through the boundary
    assert torch.load(state, weights_only=False)["phase"] == "language"
    fit(replace(cfg, resume=True), tok, *data)  # from inside the language phase (memo refilled)
    a, b = _curve(phased.out), _curve(out)
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].keys() == b[key].keys(), key
        got, want = torch.tensor(list(b[key].values())), torch.tensor(list(a[key].values()))
        assert torch.allclose(got, want, atol=1e-5), key
    # not bit-exact: the memo runs volumes through the vision side a few at a time, and
    # which ones share a pass depends on what it already holds (float noise only)
    wa, wb = _weights(phased.out), _weights(out)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_without_freeze_vision_the_language_phase_trains_everything(tok, data, tmp_path) -> None:
    seen: dict[int, tuple] = {}

    def on_step(state, log) -> None:
        vision = {k: v.clone() for k, v in state.raw_model.state_dict().items() if _is_vision(k)}
        seen[state.step] = (state.memo, vision)

    cfg = _cfg(tmp_path, max_steps=2, vision_steps=1, freeze_vision=False, loss=FINDINGS)
    fit(cfg, tok, *data, on_step=on_step)
    lines = _train_lines(tmp_path)
    # whole-volume findings losses beside the LM's in the language phase
    assert _loss_keys(lines[0]) == VISION and _loss_keys(lines[1]) == VISION | LANGUAGE
    assert seen[2][0] is None
    assert any(not torch.equal(seen[1][1][k], seen[2][1][k]) for k in seen[1][1])


def test_vision_steps_need_the_findings_head(tok, data, tmp_path, monkeypatch) -> None:
    from vipet.model import presets

    tiny = presets.PRESETS["tiny"]
    linear = {k: v for k, v in tiny.items() if k != "diag_head"}
    for enc in ("ct_encoder", "pet_encoder"):
        linear[enc] = {k: v for k, v in tiny[enc].items() if k != "stem" and "pyramid" not in k}
    linear.update(findings_token=False, findings_slots=0)
    monkeypatch.setitem(presets.PRESETS, "tiny", linear)
    with pytest.raises(ConfigError, match="findings head"):
        fit(_cfg(tmp_path, max_steps=1, vision_steps=1), tok, *data)


def test_slot_teacher_forces_the_chosen_steps(tok, data, tmp_path, monkeypatch) -> None:
    from vipet.model import presets, vipet

    with monkeypatch.context() as m:
        no_slots = {**presets.PRESETS["tiny"], "findings_slots": 0, "findings_token": False}
        m.setitem(presets.PRESETS, "tiny", no_slots)
        with pytest.raises(ConfigError, match="finding slots"):
            fit(_cfg(tmp_path / "none", max_steps=1, slot_teacher=1.0), tok, *data)
    teachers: list = []
    inner = vipet.ViPetModel.visual_tokens

    def spy(self, vision, batch, with_attention=False, teacher=None):
        teachers.append(teacher)
        return inner(self, vision, batch, with_attention, teacher)

    monkeypatch.setattr(vipet.ViPetModel, "visual_tokens", spy)
    out = tmp_path / "half"
    cfg = _cfg(out, max_steps=7, slot_teacher=0.5, vision_steps=1, eval_every=7, eval_batches=1)
    fit(cfg, tok, *data)
    logged = [r["slot_teacher"] for r in _train_lines(out)]
    # the vision step is never forced (and makes no visual tokens); the language steps
    # follow the seeded draw, and got the report's lesions exactly on the forced ones
    assert logged[0] == 0.0 and {0.0, 1.0} <= set(logged[1:])
    *train, val = teachers
    assert [t is not None for t in train] == [bool(x) for x in logged[1:]]
    assert val is None  # validation always uses the head's detections
    slots = presets.PRESETS["tiny"]["findings_slots"]
    from vipet.model.findings_slots import Detections

    for t in train:
        if t is not None:  # built once per volume by the memo of the language phase
            assert isinstance(t, Detections) and t.slots == slots
            assert bool(t.filled.any()) and (t.scores == t.filled.float()).all()


def test_align_tasks_align_only_their_examples(tok, data, tmp_path) -> None:
    from vipet.train import trainer

    calls: list[tuple[list[str], int]] = []  # (the batch's tasks, rows the loss saw)
    inner_losses, inner_tversky = trainer.language_losses, trainer.focal_tversky_from_counts

    def losses(state, batch, teacher=False):
        calls.append((list(batch["task"]), 0))
        return inner_losses(state, batch, teacher)

    def tversky(maps, inside, total):
        calls[-1] = (calls[-1][0], maps.shape[0])
        return inner_tversky(maps, inside, total)

    cfg = _cfg(tmp_path, max_steps=8, align_tasks=("report",), loss=LossWeights(align=0.5))
    with pytest.MonkeyPatch.context() as m:
        m.setattr(trainer, "language_losses", losses)
        m.setattr(trainer, "focal_tversky_from_counts", tversky)
        fit(cfg, tok, *data)
    train = calls[:8]  # the training steps (validation batches follow)
    assert {t for batch, _ in train for t in batch} == {"report", "vqa"}
    # the loss sees exactly the batch's reports; a batch of questions logs no loss/align
    assert all(rows == batch.count("report") for batch, rows in calls)
    logged = {r["step"]: "loss/align" in r for r in _train_lines(tmp_path)}
    assert [logged[i + 1] for i in range(8)] == ["report" in batch for batch, _ in train]


def test_lm_reduction_sample_trains_on_per_example_means(tok, data, tmp_path) -> None:
    from vipet.train import trainer

    seen: list[str] = []
    inner = trainer.answer_cross_entropy

    def spy(logits, labels, reduction="token"):
        seen.append(reduction)
        return inner(logits, labels, reduction)

    cfg = _cfg(tmp_path, max_steps=3, lm_reduction="sample", eval_every=0)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(trainer, "answer_cross_entropy", spy)
        fit(cfg, tok, *data)
    assert seen[:3] == ["sample"] * 3  # every step's LM loss, from the logits
    lm = [r["loss/lm"] for r in _train_lines(tmp_path)]
    assert len(lm) == 3 and all(math.isfinite(v) and v > 0 for v in lm)


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


def test_calibrate_slots_after_training(tok, data, tmp_path, capsys) -> None:
    """calibrate_slots tunes the saved model's thresholds on the validation split; the
    command does the same afterwards, and a dry run writes nothing."""
    from vipet.cli import main

    out = tmp_path / "cal"
    fit(_cfg(out, max_steps=2, vision_steps=1, loss=FINDINGS, calibrate_slots=True), tok, *data)
    result = json.loads((out / "calibration.json").read_text())
    assert set(result) == {"default", "thresholds", "before", "after", "support"}
    model, _ = load_vipet(out / "model")  # the stored thresholds pass the config's checks
    assert model.config.slot_thresholds == (result["thresholds"] or None)
    before = (out / "model" / "config.json").read_text()
    args = ["calibrate", "--checkpoint", str(out / "model"), "--data", str(data[0])]
    assert main([*args, "--cache", str(data[1]), "--dry-run"]) == 0
    assert "F1-TPF" in capsys.readouterr().out
    assert (out / "model" / "config.json").read_text() == before
    with pytest.raises(ValueError, match="calibrate_slots"):
        _cfg(out, calibrate_slots=True, val_split=None)


def test_fit_scorer_reads_the_peaks_of_the_volumes_the_memo_encoded(
    tok, data, tmp_path, monkeypatch
) -> None:
    """With precision bf16 (computed in bf16 where the CPU runs it natively, as the
    test-time vision then is, else in fp32 as that is) the language phase's memo hands
    each training volume's maps to the scorer's examples as it encodes it; the fit after
    training reads those and encodes only the studies the memo did not see — the same
    examples as a fit that encodes them all."""
    from collections import Counter

    from vipet.evaluation.detector import load_split
    from vipet.inference.rescore import PeakBook, _class_label, study_lesions

    out = tmp_path / "book"
    cfg = _cfg(
        out,
        max_steps=5,
        vision_steps=1,
        loss=FINDINGS,
        calibrate_slots=True,
        fit_scorer=True,
        precision="bf16",
    )
    booked: list[int | None] = []
    fit(cfg, tok, *data, on_step=lambda s, _: booked.append(s.peak_book and len(s.peak_book)))
    assert booked[0] is None  # the vision phase keeps no book
    assert booked[-1] and booked[-1] >= 2  # the language steps' volumes are in it
    record = json.loads((out / "scorer.json").read_text())
    model, tok2 = load_vipet(out / "model")
    ds, ids, _ = load_split(data[0], data[1], "train", model, tok2)
    _, y = PeakBook(study_lesions(ds)).examples(model, ds, ids, progress=False)
    assert record["examples"] == len(y)
    assert record["by_class"] == dict(Counter(_class_label(int(c)) for c in y).most_common())
    # an fp32 memo on a CPU whose test-time vision runs bf16: the memo's maps are not the
    # ones the scorer reads at test time, so no book (the fit encodes the split itself)
    import vipet.model.vipet as vipet_model

    monkeypatch.setattr(vipet_model, "cpu_has_native_bf16", lambda: True)
    fp32 = tmp_path / "fp32"
    booked.clear()
    fit(
        replace(cfg, out_dir=str(fp32), precision="fp32"),
        tok,
        *data,
        on_step=lambda s, _: booked.append(s.peak_book),
    )
    assert booked[-1] is None and (fp32 / "scorer.json").is_file()


def test_fit_scorer_after_training(tok, data, tmp_path, capsys) -> None:
    """fit_scorer fits the candidate scorer on the training split's peaks before the
    calibration; the saved model carries it and detects through it; the command does the
    same on a saved model, and refuses to do it in a dry run."""
    from vipet.cli import main

    out = tmp_path / "scorer"
    cfg = _cfg(
        out, max_steps=2, vision_steps=1, loss=FINDINGS, calibrate_slots=True, fit_scorer=True
    )
    fit(cfg, tok, *data)
    record = json.loads((out / "scorer.json").read_text())
    assert record["examples"] == sum(record["by_class"].values()) > 0
    model, _ = load_vipet(out / "model")
    assert model.candidate_scorer is not None and model.config.candidate_scorer == {
        "members": 5,
        "hidden": 64,
    }
    assert (out / "calibration.json").is_file()
    args = ["calibrate", "--checkpoint", str(out / "model"), "--data", str(data[0])]
    assert main([*args, "--cache", str(data[1]), "--fit-scorer", "--dry-run"]) == 1
    assert "not with --dry-run" in capsys.readouterr().err
    assert main([*args, "--cache", str(data[1]), "--fit-scorer"]) == 0
    assert "candidate scorer:" in capsys.readouterr().out
    with pytest.raises(ValueError, match="fit_scorer needs calibrate_slots"):
        _cfg(out, fit_scorer=True)
    with pytest.raises(ValueError, match="fit_scorer must be true or false"):
        _cfg(out, fit_scorer="yes", calibrate_slots=True)


def test_fit_places_before_the_calibration(tok, data, tmp_path, capsys) -> None:
    """fit_places lists each type's places on the training split before the
    calibration; the saved model carries them and its detections keep to them; the
    command does the same on a saved model, and refuses to in a dry run."""
    from vipet.cli import main
    from vipet.evaluation.detector import candidates, load_split
    from vipet.evaluation.runner import references, split_ids
    from vipet.inference.places import fit_places

    out = tmp_path / "places"
    cfg = _cfg(
        out, max_steps=2, vision_steps=1, loss=FINDINGS, calibrate_slots=True, fit_places=True
    )
    fit(cfg, tok, *data)
    record = json.loads((out / "places.json").read_text())
    ids = split_ids(data[0], "train")
    refs = references(data[0], ids, "en")
    want = fit_places({sid: refs[sid]["lesions"] for sid in ids}).places
    assert record["places"] == want and record["lesions"] > 0
    assert "places fitted on" in capsys.readouterr().out
    model, tok2 = load_vipet(out / "model")
    assert model.config.slot_places == want
    ds, val_ids, _ = load_split(data[0], data[1], "val", model, tok2)
    found = candidates(model, ds, val_ids, floor=0.0, max_per_volume=8, progress=False)
    placed = [(c.region, c.finding) for cands in found.values() for c in cands]
    assert placed  # every peak of the untrained head, each at a place of its type there
    assert all(
        a["location_detail"] in want.get(r, {}).get(a["type"], [a["location_detail"]])
        for r, a in placed
    )
    args = ["calibrate", "--checkpoint", str(out / "model"), "--data", str(data[0])]
    assert main([*args, "--cache", str(data[1]), "--fit-places", "--dry-run"]) == 1
    assert "not with --dry-run" in capsys.readouterr().err
    assert main([*args, "--cache", str(data[1]), "--fit-places"]) == 0
    assert "| type | lesions | places |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="fit_places needs calibrate_slots"):
        _cfg(out, fit_places=True)
    with pytest.raises(ValueError, match="fit_places must be true or false"):
        _cfg(out, fit_places="yes", calibrate_slots=True)


def test_fit_yes_no_last_reads_the_memo_and_the_peak_book(
    tok, data, tmp_path, capsys, monkeypatch
) -> None:
    """fit_yes_no fits the yes/no head last, on the training split's bare yes/no answers
    under the saved model's own detections. The studies the language phase's memo holds
    come from it, their slots rebuilt from the scorer's peak book: the slots and the
    visual tokens of encoding them again. The command fits it on a saved model too, under
    the thresholds it has just calibrated, and keeps them in the saved model."""
    from vipet.cli import main
    from vipet.errors import InputError
    from vipet.evaluation.detector import load_split
    from vipet.evaluation.runner import split_ids
    from vipet.inference.predictor import Predictor
    from vipet.inference.yes_no import head_accuracy, memo_contexts, yes_no_questions
    from vipet.io.vipet_dataset import ground_truth

    out = tmp_path / "yes_no"
    cfg = _cfg(
        out,
        max_steps=5,
        vision_steps=1,
        loss=FINDINGS,
        calibrate_slots=True,
        fit_scorer=True,
        fit_yes_no=True,
        fit_evidence=True,
        precision="bf16",
    )
    states: list = []
    fit(cfg, tok, *data, on_step=lambda s, _: states.append(s))
    printed = capsys.readouterr().out
    assert "yes/no head fitted on train" in printed and "yes/no evidence weighed on val" in printed
    record = json.loads((out / "yes_no.json").read_text())
    assert set(record) == {"en"} and record["en"]["examples"] > 0  # DataConfig langs: en
    model, tok2 = load_vipet(out / "model")
    assert model.yes_no_head is not None and model.config.yes_no_head["langs"] == ["en"]
    # the evidence rows: one per kind of closed question val asks, kept only where they
    # beat the head alone on held-out studies
    weighed = json.loads((out / "yes_no_evidence.json").read_text())
    val_ids = split_ids(data[0], "val")
    kinds = {q["kind"] for sid in val_ids for q in ground_truth(data[0], sid)["questions_en"]}
    assert set(weighed) == {f"en/{k}" for k in kinds & {"type_in_region", "avid", "normal"}}
    assert set(model.yes_no_head.config.evidence) == {k for k, r in weighed.items() if r["kept"]}
    assert all(r["kept"] == (r["cv_accuracy"] > r["head_accuracy"]) for r in weighed.values())
    with pytest.raises(ValueError, match="needs fit_yes_no and val_split"):
        _cfg(out, fit_evidence=True)
    assert model.candidate_scorer is not None
    contexts = memo_contexts(model, states[-1].memo, states[-1].peak_book)
    ds, ids, _ = load_split(data[0], data[1], "train", model, tok2)
    p = Predictor(model, tok2)
    held = [sid for sid in ids if contexts(sid) is not None]
    assert held  # the language steps' studies
    for sid in held:
        fast, samples = contexts(sid), ds._samples(sid)
        slow = p.encode_samples(sid, [samples[r] for r in model.config.regions])
        assert fast.visual.detections.attributes == slow.visual.detections.attributes
        torch.testing.assert_close(fast.visual.tokens, slow.visual.tokens, rtol=0, atol=2e-2)
    # The head on studies encoded afresh: a head that always says "yes" scores the share
    # of "yes" answers, one that always says "no" the rest, on the fit's own questions.
    head = model.yes_no_head
    for bias, right in ((5.0, lambda r: r["yes"]), (-5.0, lambda r: r["questions"] - r["yes"])):
        head.set_rows({"en": (torch.zeros(head.config.hidden), bias)})
        scores = head_accuracy(model, tok2, data[0], data[1], "train", progress=False)
        en = scores["en"]
        assert en["questions"] == record["en"]["examples"] and en["yes"] == record["en"]["yes"]
        assert en["head"] == pytest.approx(right(en) / en["questions"])
        assert en["studies"] == len({q.study for q in yes_no_questions(data[0], ids, ["en"])})
    model.yes_no_head = None
    with pytest.raises(InputError, match="no yes/no head"):
        head_accuracy(model, tok2, data[0], data[1], "train")
    args = ["calibrate", "--checkpoint", str(out / "model"), "--data", str(data[0])]
    assert main([*args, "--cache", str(data[1]), "--fit-yes-no", "--dry-run"]) == 1
    assert "not with --dry-run" in capsys.readouterr().err
    assert main([*args, "--cache", str(data[1]), "--fit-evidence", "--split", "train"]) == 1
    assert "never trained on" in capsys.readouterr().err
    from vipet.inference import calibrate as cal

    real = cal.calibrate
    moved = {"lymph_node/avid": 0.2}  # a class that moves, whatever the tiny model finds
    monkeypatch.setattr(cal, "calibrate", lambda *a, **k: replace(real(*a, **k), thresholds=moved))
    fits = ["--fit-scorer", "--fit-yes-no", "--fit-evidence"]
    assert main([*args, "--cache", str(data[1]), *fits]) == 0
    printed = capsys.readouterr().out
    assert "bare yes/no answers" in printed and "val, closed questions read" in printed
    again, _ = load_vipet(out / "model")
    assert again.config.slot_thresholds == moved and again.yes_no_head is not None
    with pytest.raises(ValueError, match="fit_yes_no must be true or false"):
        _cfg(out, fit_yes_no="yes")


def test_question_slots_head_fits_the_detector_as_the_language_phase_starts(
    tok, data, tmp_path
) -> None:
    """question_slots "head": the scorer and the thresholds are fitted when the language
    phase starts, before the memo reads any detection, and the saved model keeps exactly
    them (no refit after training); a run resumed in the language phase fits them again
    from the same weights and ends where the uninterrupted run ends."""
    out = tmp_path / "head"
    cfg = _cfg(
        out,
        max_steps=5,
        vision_steps=2,
        loss=FINDINGS,
        calibrate_slots=True,
        fit_scorer=True,
        slot_teacher=1.0,
        question_slots="head",
        checkpoint_every=1,
    )
    seen: list[tuple[str, bool]] = []

    def watch(state, _log) -> None:
        scorer = state.raw_model.candidate_scorer
        seen.append((state.phase, scorer is not None))
        if state.step == 3:
            state_scorer.update({k: v.clone() for k, v in scorer.state_dict().items()})
            thresholds.append(state.raw_model.config.slot_thresholds)

    state_scorer: dict[str, torch.Tensor] = {}
    thresholds: list = []
    fit(cfg, tok, *data, on_step=watch)
    assert seen == [("vision", False)] * 2 + [("language", True)] * 3
    assert not (out / "detector").exists()
    calibration = json.loads((out / "calibration.json").read_text())
    assert json.loads((out / "scorer.json").read_text())["examples"] > 0
    model, _ = load_vipet(out / "model")
    assert model.config.slot_thresholds == thresholds[0]
    assert (thresholds[0] or {}) == calibration["thresholds"]  # None when no class moved
    saved = model.candidate_scorer.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in state_scorer.items())
    # killed after step 3 (a language step): the resumed run refits the same detector
    part = tmp_path / "part"
    fit(replace(cfg, out_dir=str(part)), tok, *data, until=3)
    fit(replace(cfg, out_dir=str(part), resume=True), tok, *data)
    whole, cut = _weights(out), _weights(part)
    assert whole.keys() == cut.keys()
    for k in whole:
        torch.testing.assert_close(cut[k], whole[k], rtol=0, atol=1e-5, msg=k)


def test_question_slots_is_checked() -> None:
    with pytest.raises(ValueError, match="question_slots must be one of"):
        _cfg(Path("x"), question_slots="perfect")
    with pytest.raises(ValueError, match="vision_steps, freeze_vision and calibrate_slots"):
        _cfg(Path("x"), question_slots="head", vision_steps=1)
