"""Is a model's closed-question accuracy above the built-in baselines', question by
question? McNemar's exact test on the yes/no questions both answer.

Accuracies of two systems on the same 463 questions differ by chance less than two
independent samples would: what decides is how many questions one gets right and the
other wrong (the discordant pairs). Under "neither is better" each discordant question
is a fair coin, so the two-sided p is a binomial tail. The baselines are
`vipet.evaluation.runner.baseline_predictions` (the training answers to the same
question text, without the image).

    .venv/bin/python scripts/paired_closed.py runs/cpu-small/eval_vi/predictions.jsonl \
        --data /tmp/ph600 [--split test] [--lang vi]
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vipet.evaluation.runner import BASELINES, baseline_predictions, references, split_ids
from vipet.evaluation.vqa import parse_yes_no
from vipet.reports.questions import YES_NO


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p: the chance of a split of the discordant pairs at least
    this uneven when each falls either way with probability 1/2."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def closed_right(
    rows: Sequence[Mapping[str, Any]], refs: Mapping[str, Mapping[str, Any]], lang: str
) -> dict[tuple[str, str], bool]:
    """``(study, question) → right`` for every reference question answered by a bare
    yes/no word of ``lang`` ("Không có", none, is not one) that a row answers."""
    out = {}
    for row in rows:
        answers = {a["question"]: a["prediction"] for a in row.get("answers", [])}
        for q in refs.get(row["id"], {}).get("questions", []):
            if q["answer"].strip() in YES_NO[lang] and q["question"] in answers:
                right = parse_yes_no(answers[q["question"]]) == parse_yes_no(q["answer"])
                out[(row["id"], q["question"])] = right
    return out


def compare(a: Mapping[tuple, bool], b: Mapping[tuple, bool]) -> dict[str, Any]:
    """The 2x2 table of two systems on the questions both answer, and McNemar's p."""
    keys = sorted(set(a) & set(b))
    only_a = sum(a[k] and not b[k] for k in keys)
    only_b = sum(b[k] and not a[k] for k in keys)
    return {
        "questions": len(keys),
        "a": sum(a[k] for k in keys),
        "b": sum(b[k] for k in keys),
        "only_a": only_a,
        "only_b": only_b,
        "p": mcnemar_p(only_a, only_b),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("predictions", type=Path, help="vipet evaluate's predictions.jsonl")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--lang", default="vi", choices=("vi", "en"))
    args = ap.parse_args()
    rows = [json.loads(line) for line in args.predictions.read_text().splitlines() if line]
    refs = references(args.data, split_ids(args.data, args.split), args.lang)
    model = closed_right(rows, refs, args.lang)
    print(f"{args.split} split, {args.lang}, yes/no questions\n")
    print(
        "| baseline | questions | model right | baseline right | only the model | only the baseline | McNemar p |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind in BASELINES:
        base = baseline_predictions(args.data, args.split, args.lang, kind)
        c = compare(model, closed_right(base, refs, args.lang))
        print(
            f"| {kind} | {c['questions']} | {c['a']} ({c['a'] / c['questions']:.3f}) | "
            f"{c['b']} ({c['b'] / c['questions']:.3f}) | {c['only_a']} | {c['only_b']} | "
            f"{c['p']:.2g} |"
        )


if __name__ == "__main__":
    main()
