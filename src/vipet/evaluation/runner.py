"""The evaluation runner: any system's reports and answers, scored in one protocol.

Inputs are predictions in JSONL — one line per study::

    {"id": "phantom_00012", "lang": "vi", "report": "<text>" or {ViMed-PET JSON},
     "answers": [{"question": "...", "prediction": "..."}, ...]}   # answers optional

and a ViPET dataset (`vipet.io.vipet_dataset`: dataset.json + ground_truth/) whose split
gives the references. Scores:

- **NLG** on the report text (`vipet.evaluation.nlg`, Vietnamese-aware tokens);
- **clinical** F1-T/TP/TF/TPF (`vipet.evaluation.clinical`): lesions extracted from the
  predicted report (`vipet.reports.extract`) against the reference lesions — the
  dataset's ground-truth lesion list when it has one (the phantom does), else lesions
  extracted from the reference report, as the ViMed-PET protocol does with GPT-4o;
- **VQA** (`vipet.evaluation.vqa`): predicted answers matched to the dataset's questions
  by question text.

Baselines scored by the same code: "most frequent training report" (the report of the
most common set of findings in the train split — in practice a normal study) and
"random training report" (a seeded random train report per study).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vipet.errors import ConfigError, InputError
from vipet.io.atomic import atomic_write_bytes
from vipet.io.vipet_dataset import ground_truth, read_dataset
from vipet.reports.render import report_text


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """Predictions JSONL (see module doc); a clear error names the line that is wrong."""
    p = Path(path)
    if not p.is_file():
        raise InputError("predictions file not found", p)
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"line {n} is not JSON ({exc.msg})", p) from exc
        if not isinstance(row, dict) or "id" not in row or "report" not in row:
            raise InputError(f"line {n} needs at least 'id' and 'report'", p)
        rows.append(row)
    if not rows:
        raise InputError("no predictions in the file", p)
    return rows


def as_text(report: str | Mapping[str, Any]) -> str:
    return report if isinstance(report, str) else report_text(report)


def split_ids(data: Path, split: str, max_studies: int | None = None) -> list[str]:
    """The study ids of ``split`` in the dataset's order; only the first ``max_studies``
    when given (a fixed subset, so predictions and scores of a subset line up)."""
    desc = read_dataset(data)
    splits = desc.get("splits", {})
    if split not in splits:
        raise InputError(
            f"no split {split!r}; the dataset has {sorted(splits)}", data / "dataset.json"
        )
    if max_studies is not None and (
        isinstance(max_studies, bool) or not isinstance(max_studies, int) or max_studies < 1
    ):
        raise ConfigError(f"max_studies must be a positive integer, got {max_studies!r}")
    ids = list(splits[split])
    return ids if max_studies is None else ids[:max_studies]


def references(data: Path, ids: Iterable[str], lang: str) -> dict[str, dict[str, Any]]:
    """Reference report text, lesions and questions per study id."""
    out = {}
    for sid in ids:
        gt = ground_truth(data, sid)
        out[sid] = {
            "report": gt.get(f"report_{lang}"),
            "lesions": gt.get("lesions"),
            "questions": gt.get(f"questions_{lang}", []),
        }
    return out


def evaluate(
    predictions: list[dict[str, Any]],
    data: str | Path,
    split: str = "test",
    lang: str = "vi",
    meteor: bool | None = None,
    max_studies: int | None = None,
) -> dict[str, Any]:
    """All scores of ``predictions`` against ``split`` of the dataset at ``data``, or
    against its first ``max_studies`` studies (``split_ids`` order; predictions of other
    studies are ignored)."""
    from vipet.evaluation.clinical import clinical_scores
    from vipet.evaluation.nlg import nlg_scores
    from vipet.reports.extract import extract_findings

    data = Path(data)
    ids = split_ids(data, split, max_studies)
    by_id = {row["id"]: row for row in predictions if row.get("lang", lang) == lang}
    missing = [sid for sid in ids if sid not in by_id]
    if len(missing) == len(ids):
        raise InputError(f"no prediction for any {split} study in {lang}; e.g. {ids[:3]}", data)
    refs = references(data, ids, lang)
    pred_text = {sid: as_text(by_id[sid]["report"]) if sid in by_id else "" for sid in ids}
    ref_text = {sid: as_text(refs[sid]["report"]) for sid in ids}
    pred_lesions = {
        sid: extract_findings(by_id[sid]["report"], lang) if sid in by_id else [] for sid in ids
    }
    ref_lesions = {
        sid: refs[sid]["lesions"]
        if refs[sid]["lesions"] is not None
        else extract_findings(refs[sid]["report"], lang)
        for sid in ids
    }
    result: dict[str, Any] = {
        "split": split,
        "lang": lang,
        "studies": len(ids),
        "missing_predictions": missing,
        "nlg": nlg_scores(pred_text, ref_text, meteor=meteor),
        "clinical": clinical_scores(pred_lesions, ref_lesions),
        "distinct_reports": len(set(pred_text.values())) / max(1, len(pred_text)),
    }
    result["per_study_f1"] = per_study_summary(result["clinical"]["per_study"])
    items = vqa_items(by_id, refs, lang)
    if items:
        from vipet.evaluation.vqa import score_vqa

        result["vqa"] = score_vqa(items)
    return result


def per_study_summary(per_study: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """Spread of the per-study F1s: a model that writes one memorised report scores well
    on a few studies and badly on the rest, whatever its pooled F1."""
    out: dict[str, Any] = {}
    for key in ("f1_t", "f1_tpf"):
        values = np.array([s[key] for s in per_study.values()], dtype=float)
        if values.size == 0:
            continue
        out[key] = {
            "mean": float(values.mean()),
            "median": float(np.median(values)),
            "p10": float(np.percentile(values, 10)),
            "share_zero": float((values == 0).mean()),
        }
    return out


def vqa_items(
    by_id: Mapping[str, dict], refs: Mapping[str, dict], lang: str
) -> list[dict[str, Any]]:
    """Each reference question a prediction answers, with its ``prediction`` and ``lang``
    (``by_id``: predictions by study id; ``refs``: `references`)."""
    items = []
    for sid, ref in refs.items():
        answers = {a["question"]: a["prediction"] for a in by_id.get(sid, {}).get("answers", [])}
        for q in ref["questions"]:
            if q["question"] in answers:
                items.append({**q, "prediction": answers[q["question"]], "lang": lang})
    return items


def _blind_answers(
    train: Mapping[str, dict], refs: Mapping[str, dict], kind: str, rng: np.random.Generator
) -> dict[str, list[dict[str, str]]]:
    """Answers to every question of ``refs`` without the image (VQA's question-only
    baselines): the training split's answers to the same question text — its most frequent
    one ("most_frequent") or one drawn from them ("random"); a question never asked in
    training takes the answers of its kind. Why: the questions carry priors ("is there a
    lymph node in the chest?" is more often yes than "is there wall thickening?"), and a
    model's closed accuracy means something only above what those priors give."""
    by_text: dict[str, list[str]] = {}
    by_kind: dict[str, list[str]] = {}
    for sid in sorted(train):
        for q in train[sid]["questions"]:
            by_text.setdefault(q["question"], []).append(q["answer"])
            by_kind.setdefault(q["kind"], []).append(q["answer"])
    out = {}
    for sid in sorted(refs):
        answers = []
        for q in refs[sid]["questions"]:
            pool = by_text.get(q["question"]) or by_kind.get(q["kind"])
            if not pool:
                continue
            if kind == "most_frequent":
                # ties go to the answer seen first (sorted studies): deterministic
                answer = Counter(pool).most_common(1)[0][0]
            else:
                answer = pool[int(rng.integers(len(pool)))]
            answers.append({"question": q["question"], "prediction": answer})
        out[sid] = answers
    return out


def baseline_predictions(
    data: str | Path, split: str, lang: str, kind: str, seed: int = 0
) -> list[dict[str, Any]]:
    """Predictions of a built-in baseline: "most_frequent" or "random" training report,
    and the questions answered the same way from the training answers to each question
    (`_blind_answers`)."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; choose from {list(BASELINES)}")
    data = Path(data)
    train = references(data, split_ids(data, "train"), lang)
    if not train:
        raise InputError("the dataset has no train split to draw baseline reports from", data)
    ids = split_ids(data, split)
    answers = _blind_answers(train, references(data, ids, lang), kind, np.random.default_rng(seed))
    return [
        {**row, "answers": answers[row["id"]]}
        for row in _baseline_reports(train, ids, lang, kind, seed)
    ]


def _baseline_reports(
    train: Mapping[str, dict], ids: Sequence[str], lang: str, kind: str, seed: int
) -> list[dict[str, Any]]:
    """The baseline's report rows: one training report for every study."""
    if kind == "most_frequent":
        signature = {
            sid: tuple(
                sorted(
                    (les["type"], les["location"], bool(les["fdg_avid"]))
                    for les in ref["lesions"] or []
                )
            )
            for sid, ref in train.items()
        }
        common, _ = Counter(signature.values()).most_common(1)[0]
        chosen = next(sid for sid in sorted(train) if signature[sid] == common)
        return [{"id": sid, "lang": lang, "report": train[chosen]["report"]} for sid in ids]
    rng = np.random.default_rng(seed)  # "random"
    pool = sorted(train)
    return [
        {"id": sid, "lang": lang, "report": train[pool[rng.integers(len(pool))]]["report"]}
        for sid in ids
    ]


BASELINES = ("most_frequent", "random")


def reference_predictions(data: str | Path, split: str, lang: str) -> list[dict[str, Any]]:
    """The dataset's own reports and answers as predictions: the protocol's ceiling
    (clinical F1 below 1 only where the protocol cannot match, e.g. "other")."""
    data = Path(data)
    rows = []
    for sid in split_ids(data, split):
        gt = ground_truth(data, sid)
        answers = [
            {"question": q["question"], "prediction": q["answer"]}
            for q in gt.get(f"questions_{lang}", [])
        ]
        rows.append(
            {"id": sid, "lang": lang, "report": gt.get(f"report_{lang}"), "answers": answers}
        )
    return rows


def write_results(results: Mapping[str, dict[str, Any]], out: str | Path) -> list[Path]:
    """metrics.json, metrics.md (one row per system) and PNG plots into ``out``."""
    from vipet.evaluation.plots import plot_metric_bars, plot_per_class

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(
        folder / "metrics.json",
        json.dumps(results, indent=2, ensure_ascii=False, default=float).encode(),
    )
    atomic_write_bytes(folder / "metrics.md", markdown_table(results).encode())
    return [
        folder / "metrics.json",
        folder / "metrics.md",
        plot_metric_bars(results, folder / "metrics.png"),
        plot_per_class(results, folder / "per_class_f1.png"),
    ]


TABLE_COLUMNS = (
    ("BLEU-4", ("nlg", "bleu4")),
    ("ROUGE-1", ("nlg", "rouge1")),
    ("ROUGE-L", ("nlg", "rouge_l")),
    ("METEOR", ("nlg", "meteor")),
    ("CIDEr", ("nlg", "cider")),
    ("F1-T", ("clinical", "f1_t")),
    ("F1-TP", ("clinical", "f1_tp")),
    ("F1-TF", ("clinical", "f1_tf")),
    ("F1-TPF", ("clinical", "f1_tpf")),
    ("closed acc.", ("vqa", "closed_accuracy")),
    ("VQA acc.", ("vqa", "accuracy")),
    ("distinct", ("distinct_reports",)),
    ("study F1-T", ("per_study_f1", "f1_t", "mean")),
)


def _get(d: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(d, Mapping) or key not in d:
            return None
        d = d[key]
    return d


def markdown_table(
    results: Mapping[str, dict[str, Any]],
    columns: Sequence[tuple[str, tuple[str, ...]]] = TABLE_COLUMNS,
) -> str:
    """One row per system; ``columns`` are (header, path into the results) pairs."""
    head = "| system | " + " | ".join(c for c, _ in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 1)]
    for name, res in results.items():
        cells = []
        for _, path in columns:
            v = _get(res, path)
            cells.append("–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
