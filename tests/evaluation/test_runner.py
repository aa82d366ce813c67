"""The evaluation runner end to end on a small phantom dataset."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tests.phantom.test_dataset import SMALL
from vipet.cli import main
from vipet.errors import ConfigError, InputError
from vipet.evaluation.runner import (
    baseline_predictions,
    evaluate,
    read_predictions,
    reference_predictions,
    split_ids,
)
from vipet.io.vipet_dataset import ground_truth
from vipet.phantom.dataset import write_dataset
from vipet.phantom.lesions import LesionConfig


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "ph"
    cfg = replace(SMALL, lesions=LesionConfig(normal_fraction=0.25))
    write_dataset(out, 12, seed=2, config=cfg, workers=2, progress=False)
    return out


def _perfect(dataset, lang="vi"):
    return reference_predictions(dataset, "test", lang)


def test_ground_truth_reports_score_at_the_top(dataset) -> None:
    res = evaluate(_perfect(dataset), dataset, "test", "vi", meteor=False)
    assert res["nlg"]["bleu4"] == pytest.approx(1.0) and res["nlg"]["rouge_l"] == pytest.approx(1.0)
    # Clinical F1 is capped only by the protocol's "other" rule (bone lesions).
    assert res["clinical"]["f1_t"] > 0.8
    assert res["vqa"]["accuracy"] == pytest.approx(1.0)
    base = evaluate(
        baseline_predictions(dataset, "test", "vi", "random"), dataset, "test", "vi", meteor=False
    )
    assert base["nlg"]["bleu4"] < res["nlg"]["bleu4"]
    assert base["clinical"]["f1_tpf"] <= res["clinical"]["f1_tpf"]


def test_cli_evaluate_writes_table_and_plots(dataset, tmp_path, capsys) -> None:
    pred = tmp_path / "pred.jsonl"
    pred.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in _perfect(dataset)), encoding="utf-8"
    )
    code = main(
        [
            "evaluate",
            "--predictions",
            str(pred),
            "--data",
            str(dataset),
            "--out",
            str(tmp_path / "out"),
            "--no-meteor",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "| pred |" in out and "baseline: most_frequent" in out and "baseline: random" in out
    for name in ("metrics.json", "metrics.md", "metrics.png", "per_class_f1.png"):
        assert (tmp_path / "out" / name).is_file()
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics) == {"pred", "baseline: most_frequent", "baseline: random"}
    row = next(line for line in out.splitlines() if line.startswith("| pred |"))
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    assert cells[0] == "1.000"  # BLEU-4 of the reference reports themselves
    assert cells[3] == "–"  # METEOR off (--no-meteor); every other column has a number
    assert all(c != "–" for i, c in enumerate(cells) if i != 3)


def test_cli_extract(dataset, tmp_path, capsys) -> None:
    sid = next(s for s in split_ids(dataset, "train") if ground_truth(dataset, s)["lesions"])
    report = tmp_path / "r.json"
    report.write_text(
        json.dumps(ground_truth(dataset, sid)["report_vi"], ensure_ascii=False), encoding="utf-8"
    )
    assert main(["extract", str(report), "--format", "json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert len(found) >= 1 and {"type", "location", "suvmax", "fdg_avid", "sentence"} <= set(
        found[0]
    )


def test_bad_predictions_file_is_one_line(tmp_path, capsys) -> None:
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"id": "x"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="line 1"):
        read_predictions(bad)
    assert main(["evaluate", "--predictions", str(bad), "--data", str(tmp_path)]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_checkpoint_path_generates_and_scores(dataset, tmp_path, capsys) -> None:
    from vipet.data.tokenizer import synthetic_corpus, train_tokenizer
    from vipet.model.checkpoint import save_vipet
    from vipet.model.presets import build_model

    tok = train_tokenizer(synthetic_corpus(20, 0), vocab_size=600)
    save_vipet(build_model("tiny", tok), tok, tmp_path / "ckpt")
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(tmp_path / "ckpt"),
            "--data",
            str(dataset),
            "--out",
            str(tmp_path / "out"),
            "--no-meteor",
            "--no-baselines",
        ]
    )
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["ckpt"]["studies"] == len(split_ids(dataset, "test"))
    assert metrics["ckpt"]["vqa"]["n"] > 0


def test_max_studies_scores_the_first_studies_of_the_split(dataset) -> None:
    ids = split_ids(dataset, "test")
    assert len(ids) >= 2 and split_ids(dataset, "test", 1) == ids[:1]
    assert split_ids(dataset, "test", 99) == ids
    with pytest.raises(ConfigError, match="max_studies"):
        split_ids(dataset, "test", 0)
    # Predictions of the first study only: scored as complete on the subset.
    res = evaluate(_perfect(dataset)[:1], dataset, "test", "vi", meteor=False, max_studies=1)
    assert res["studies"] == 1 and res["missing_predictions"] == []
    assert res["nlg"]["bleu4"] == pytest.approx(1.0)


def test_cli_evaluate_max_studies(dataset, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = ["evaluate", "--data", str(dataset), "--out", str(out), "--no-meteor"]
    assert main([*args, "--max-studies", "1"]) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert {m["studies"] for m in metrics.values()} == {1}
    assert main([*args, "--max-studies", "0"]) != 0


def test_baselines_answer_from_the_training_answers_to_each_question(dataset) -> None:
    """Both baselines answer every test question without the image: "most_frequent" with
    the commonest training answer to that question text (else to its kind), "random"
    with one of those answers; closed accuracy is then scored for them."""
    from collections import Counter

    train = {sid: ground_truth(dataset, sid) for sid in split_ids(dataset, "train")}
    by_text: dict[str, Counter] = {}
    by_kind: dict[str, Counter] = {}
    for sid in sorted(train):
        for q in train[sid]["questions_vi"]:
            by_text.setdefault(q["question"], Counter())[q["answer"]] += 1
            by_kind.setdefault(q["kind"], Counter())[q["answer"]] += 1
    rows = {r["id"]: r for r in baseline_predictions(dataset, "test", "vi", "most_frequent")}
    drawn = {r["id"]: r for r in baseline_predictions(dataset, "test", "vi", "random")}
    asked = 0
    for sid in split_ids(dataset, "test"):
        answers = {a["question"]: a["prediction"] for a in rows[sid]["answers"]}
        random_answers = {a["question"]: a["prediction"] for a in drawn[sid]["answers"]}
        for q in ground_truth(dataset, sid)["questions_vi"]:
            pool = by_text.get(q["question"]) or by_kind[q["kind"]]
            assert answers[q["question"]] == pool.most_common(1)[0][0]
            assert random_answers[q["question"]] in pool
            asked += 1
    assert asked > 0
    res = evaluate(list(rows.values()), dataset, "test", "vi", meteor=False)
    assert 0.0 <= res["vqa"]["closed_accuracy"] <= 1.0
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_predictions(dataset, "test", "vi", "oracle")
