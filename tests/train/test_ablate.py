"""The ablation runner on a tiny phantom: table, resume without retraining, bad variants."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.helpers import phantom_with_cache
from vipet.cli import main
from vipet.errors import ConfigError
from vipet.train.ablate import VARIANTS, AblationConfig, run_ablation, variant_config

GRID = (8, 32, 32)
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
COMMON = (
    "optim.max_steps=2",
    "optim.warmup_steps=0",
    "eval_every=0",
    "checkpoint_every=0",
    "data.max_length=256",
)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    return phantom_with_cache(tmp_path_factory.mktemp("ablate"), 10, GRID)


def _ab(data: tuple[Path, Path], out: Path) -> AblationConfig:
    root, cache = data
    return AblationConfig(
        config=CONFIG,
        data=root,
        out=out,
        cache=cache,
        variants=("full", "ct_only"),
        overrides=COMMON,
        max_studies=2,
        vocab_size=600,
        report_tokens=24,
    )


def test_two_variants_table_and_resume(data, tmp_path) -> None:
    ab = _ab(data, tmp_path / "abl")
    res = run_ablation(ab, progress=False, log=lambda _: None)
    assert list(res["variants"]) == ["full", "ct_only"]
    assert res["budget"]["max_steps"] == 2
    saved = json.loads((ab.out / "ablation.json").read_text(encoding="utf-8"))
    assert list(saved["variants"]) == ["full", "ct_only"]
    for name, row in saved["variants"].items():
        assert row["trained_now"] and row["train_minutes"] > 0
        assert row["metrics"]["studies"] == 2
        att = row["attention"]
        assert att["n_regions"] > 0 and 0 <= att["mass_in_lesion"] <= 1
        assert (ab.out / name / "model" / "config.json").is_file()
    assert (
        json.loads((ab.out / "ct_only" / "model" / "config.json").read_text())["fusion"]["name"]
        == "ct_only"
    )
    table = (ab.out / "ablation.md").read_text(encoding="utf-8")
    assert "| variant | F1-T | F1-TP | F1-TF | F1-TPF | closed VQA |" in table
    assert "| full |" in table and "| ct_only |" in table
    assert (ab.out / "tokenizer" / "tokenizer.json").is_file()

    # A second run reuses the models and their scores: nothing trains again.
    weights = ab.out / "full" / "model" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    logs: list[str] = []
    again = run_ablation(ab, progress=False, log=logs.append)
    assert not any(r["trained_now"] for r in again["variants"].values())
    assert weights.stat().st_mtime_ns == stamp
    assert again["variants"]["full"]["train_minutes"] == res["variants"]["full"]["train_minutes"]
    assert again["variants"]["ct_only"]["metrics"] == saved["variants"]["ct_only"]["metrics"]
    assert sum("not trained again" in line for line in logs) == 2
    assert sum("reused" in line for line in logs) == 2

    # Another budget in the same folder is refused instead of silently reused.
    other = replace(ab, overrides=(*COMMON, "optim.max_steps=3"))
    with pytest.raises(ConfigError, match="another config"):
        run_ablation(other, progress=False, log=lambda _: None)


def test_variant_configs() -> None:
    assert list(VARIANTS) == ["full", "concat", "ct_only", "pet_only", "no_align", "no_diag"]
    ab = AblationConfig(config=CONFIG, data=Path("d"), out=Path("o"), overrides=COMMON)
    assert variant_config(ab, "concat").fusion == "concat"
    assert variant_config(ab, "no_align").loss.align == 0
    no_diag = variant_config(ab, "no_diag")
    # no findings head training at all: none of its losses, no vision phase, no teacher
    loss = no_diag.loss
    assert loss.diag == loss.heat == loss.lesion == loss.attributes == 0
    assert no_diag.vision_steps == no_diag.slot_teacher == 0
    assert loss.lm == variant_config(ab, "full").loss.lm > 0  # the rest trains as in "full"
    full = variant_config(ab, "full")
    assert full.fusion is None and full.out_dir == str(Path("o") / "full")
    assert {variant_config(ab, v).optim.max_steps for v in VARIANTS} == {2}


def test_cli_rejects_an_unknown_variant(tmp_path, capsys) -> None:
    code = main(
        [
            "ablate",
            "--config",
            str(CONFIG),
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "out"),
            "--variants",
            "full,no_such",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "no_such" in err and "ct_only" in err and "no_diag" in err
    assert not (tmp_path / "out").exists()


def test_a_variant_override_changes_that_variant_only() -> None:
    ab = AblationConfig(
        config=CONFIG,
        data=Path("d"),
        out=Path("o"),
        overrides=COMMON,
        variant_overrides=("no_diag:optim.max_steps=1", "no_diag:optim.lr=0.5"),
    )
    no_diag = variant_config(ab, "no_diag")
    assert no_diag.optim.max_steps == 1 and no_diag.optim.lr == 0.5
    assert no_diag.vision_steps == 0  # its own overrides still apply
    assert {variant_config(ab, v).optim.max_steps for v in VARIANTS if v != "no_diag"} == {2}
    for bad in ("no_diag", "nosuch:optim.max_steps=1", "no_diag:optim.max_steps"):
        with pytest.raises(ConfigError, match="variant override"):
            AblationConfig(config=CONFIG, data=Path("d"), variant_overrides=(bad,))
