"""`vipet demo`: every step runs and writes what the README says, at a tiny size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vipet.cli import main
from vipet.demo import PLANS, DemoPlan, _pick_questions, run_demo

ROOT = Path(__file__).resolve().parents[1]
TINY = DemoPlan(studies=4, vision_steps=2, language_steps=3, warmup_steps=1, meteor=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    lines: list[str] = []
    summary = run_demo(out, TINY, ROOT / "configs" / "tiny.yaml", "vi", log=lines.append)
    return out, summary, "\n".join(lines)


def test_demo_runs_every_step_and_writes_its_files(demo) -> None:
    out, summary, text = demo
    for n in range(1, 7):
        assert f"[{n}/6]" in text
    assert "| cpu-small (demo) |" in text and "| baseline: random |" in text
    assert "guard:" in text and "Q: " in text and "truth: " in text
    for key in ("summary_png", "curves"):
        assert Path(summary["files"][key]).read_bytes()[:4] == b"\x89PNG"
    report = json.loads(Path(summary["files"]["report_json"]).read_text(encoding="utf-8"))
    assert report["study_id"] == summary["report_study"]
    assert (out / "eval" / "metrics.md").is_file()
    assert len((out / "eval" / "predictions.jsonl").read_text().splitlines()) == 1
    saved = json.loads((out / "demo.json").read_text(encoding="utf-8"))
    steps = {k: v for k, v in saved["seconds"].items() if k != "total"}
    assert list(steps) == ["phantom", "preprocess", "train", "evaluate", "report"]
    assert saved["seconds"]["total"] >= sum(steps.values()) - 0.5  # each rounded to 0.1 s
    assert set(saved["scores"]) == {
        "cpu-small (demo)",
        "baseline: most_frequent",
        "baseline: random",
    }
    assert 1 <= len(saved["answers"]) <= TINY.questions


def test_demo_again_reuses_the_phantom_and_cache(demo) -> None:
    out, _, _ = demo
    stamp = (out / "phantom" / "dataset.json").stat().st_mtime_ns
    lines: list[str] = []
    run_demo(out, TINY, ROOT / "configs" / "tiny.yaml", "vi", log=lines.append)
    text = "\n".join(lines)
    assert f"reusing {out / 'phantom'}" in text and f"reusing {out / 'cache'}" in text
    assert (out / "phantom" / "dataset.json").stat().st_mtime_ns == stamp


def test_pick_questions_one_per_kind_first() -> None:
    qs = [{"kind": k, "question": f"{k}{i}"} for i, k in enumerate("aabca")]
    assert [q["question"] for q in _pick_questions(qs, 4)] == ["a0", "b2", "c3", "a1"]


def test_plans_fit_their_budgets() -> None:
    # Steps the README's timings were measured with (docs/usage.md); the quick plan stays
    # a run-through, the full one trains cpu-small properly.
    assert PLANS["quick"].max_steps < PLANS["full"].max_steps
    assert PLANS["quick"].studies >= 4  # val and test get one study each, train the rest
    for plan in PLANS.values():
        assert plan.warmup_steps < min(plan.vision_steps, plan.language_steps)


def test_missing_config_is_one_line_and_writes_nothing(tmp_path, capsys) -> None:
    code = main(
        ["demo", "--quick", "--out", str(tmp_path / "d"), "--config", str(tmp_path / "no.yaml")]
    )
    err = capsys.readouterr().err
    assert code == 1 and "no.yaml: training config not found" in err and err.count("\n") == 1
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_demo_quick_from_the_command_line(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # --config defaults to configs/cpu-small.yaml in the checkout
    code = main(["demo", "--quick", "--out", str(tmp_path / "demo")])
    out = capsys.readouterr().out
    assert code == 0 and "demo done in" in out
    assert (tmp_path / "demo" / "demo.json").is_file()
