"""Where a run's reports and answers go wrong, tallied against the ground truth.

Two tables from a predictions file (`vipet evaluate --out`'s predictions.jsonl, or
`scripts/teacher_slot_reports.py --out`):

- **Lesions**, per study: the reference lesions and the written ones (extracted as the
  evaluation runner extracts them) as (type, location class) multisets. What both hold
  is right; a reference lesion left over is paired with a left-over written lesion of
  the same type, when there is one ("nodule abdomen -> lung": written at another
  place), else counted missing; written lesions left over are extra.
- **Yes/no questions**, by the kind the phantom gives them (a lesion type in a region,
  a named lesion's avidity, a normal study): accuracy, and the answer against the truth.

    .venv/bin/python scripts/report_errors.py RUN/eval_vi/predictions.jsonl --data data/phantom
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from vipet.io.vipet_dataset import ground_truth
from vipet.reports.extract import extract_findings


def place_errors(rows: list[dict], data: Path, lang: str) -> tuple[int, Counter]:
    """(lesions written right, Counter of (type, reference place, written place))."""
    right, errors = 0, Counter()
    for row in rows:
        gt = ground_truth(data, row["id"])
        ref = Counter((les["type"], les["location"]) for les in gt.get("lesions", []))
        text = row["report"] if isinstance(row["report"], str) else json.dumps(row["report"])
        out = Counter((les.type, les.location) for les in extract_findings(text, lang))
        both = ref & out
        right += sum(both.values())
        ref_left, out_left = ref - both, out - both
        for (kind, place), n in sorted(ref_left.items()):
            for (kind2, place2), m in sorted(out_left.items()):
                if kind2 == kind and m > 0 and n > 0:
                    k = min(n, m)
                    errors[(kind, place, place2)] += k
                    out_left[(kind2, place2)] -= k
                    n -= k
            if n:
                errors[(kind, place, "MISSING")] += n
        for (kind, place), m in out_left.items():
            if m > 0:
                errors[(kind, "EXTRA", place)] += m
    return right, errors


def yes_no_by_kind(rows: list[dict], data: Path, lang: str) -> dict[str, Counter]:
    """Per question kind: Counter of (truth, answer) over the yes/no questions."""
    out: dict[str, Counter] = {}
    for row in rows:
        gt = ground_truth(data, row["id"])
        questions = {q["question"]: q for q in gt.get(f"questions_{lang}", [])}
        for answer in row.get("answers", []):
            q = questions.get(answer["question"])
            if q is None or q.get("answer_type") != "yes_no":
                continue
            truth, said = q["answer"].strip().lower(), answer["prediction"].strip().lower()
            out.setdefault(q["kind"], Counter())[(truth, said)] += 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="the phantom dataset")
    parser.add_argument("--lang", default="vi", choices=["vi", "en"])
    parser.add_argument("--top", type=int, default=20, help="lesion errors listed")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.predictions.read_text().splitlines() if line]
    rows = [r for r in rows if r.get("lang", args.lang) == args.lang]
    right, errors = place_errors(rows, args.data, args.lang)
    print(f"{len(rows)} studies; lesions written with their type and place: {right}")
    print("| n | type | reference place | written place |\n|---|---|---|---|")
    for (kind, ref, out), n in errors.most_common(args.top):
        print(f"| {n} | {kind} | {ref} | {out} |")
    kinds = yes_no_by_kind(rows, args.data, args.lang)
    total = sum(sum(c.values()) for c in kinds.values())
    correct = sum(n for c in kinds.values() for (t, s), n in c.items() if t == s)
    print(f"\nyes/no questions: {correct}/{total} = {correct / max(total, 1):.3f}")
    print("| kind | right | accuracy | truth -> answer |\n|---|---|---|---|")
    for kind, c in sorted(kinds.items()):
        ok, n = sum(v for (t, s), v in c.items() if t == s), sum(c.values())
        pairs = ", ".join(f"{t}->{s}: {v}" for (t, s), v in sorted(c.items()))
        print(f"| {kind} | {ok}/{n} | {ok / n:.3f} | {pairs} |")


if __name__ == "__main__":
    main()
