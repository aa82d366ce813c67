"""Where a run's reports and answers go wrong, tallied against the ground truth.

Two tables from a predictions file (`vipet evaluate --out`'s predictions.jsonl, or
`scripts/teacher_slot_reports.py --out`):

- **Lesions**, per study: the reference lesions and the written ones (extracted as the
  evaluation runner extracts them) as (type, location class) multisets. What both hold
  is right; a reference lesion left over is paired with a left-over written lesion of
  the same type, when there is one ("nodule abdomen -> lung": written at another
  place), else counted missing; written lesions left over are extra.
- **Yes/no questions**, by the kind the phantom gives them (a lesion type in a region,
  a named lesion's avidity, a normal study): accuracy as `vipet evaluate` scores it
  (its ``by_kind``), and the answer against the truth, which it does not show.

    .venv/bin/python scripts/report_errors.py RUN/eval_vi/predictions.jsonl --data data/phantom
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from vipet.evaluation.runner import references, vqa_items
from vipet.evaluation.vqa import parse_answer, score_item
from vipet.reports.extract import extract_findings

WORD = {True: "yes", False: "no", None: "unparsed"}


def place_errors(
    by_id: Mapping[str, dict], refs: Mapping[str, dict], lang: str
) -> tuple[int, Counter]:
    """(lesions written right, Counter of (type, reference place, written place)) over
    the studies of ``refs`` (`references`) that ``by_id`` (rows by study id) answers."""
    right, errors = 0, Counter()
    for sid, row in by_id.items():
        ref = Counter((les["type"], les["location"]) for les in refs[sid]["lesions"] or [])
        out = Counter((les.type, les.location) for les in extract_findings(row["report"], lang))
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


def yes_no_by_kind(
    by_id: Mapping[str, dict], refs: Mapping[str, dict], lang: str
) -> dict[str, Counter]:
    """Per question kind: Counter of (truth, answer, right) over the yes/no questions,
    parsed and scored as the evaluation runner scores them (`score_item`)."""
    out: dict[str, Counter] = {}
    for item in vqa_items(by_id, refs, lang):
        if item["answer_type"] != "yes_no":
            continue
        truth = WORD[parse_answer(item["answer"], "yes_no", lang)]
        said = WORD[parse_answer(item["prediction"], "yes_no", lang)]
        right = bool(score_item(item)["correct"])
        out.setdefault(item["kind"], Counter())[(truth, said, right)] += 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="the phantom dataset")
    parser.add_argument("--lang", default="vi", choices=["vi", "en"])
    parser.add_argument("--top", type=int, default=20, help="lesion errors listed")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.predictions.read_text().splitlines() if line]
    by_id = {r["id"]: r for r in rows if r.get("lang", args.lang) == args.lang}
    refs = references(args.data, by_id, args.lang)  # each ground truth read once
    right, errors = place_errors(by_id, refs, args.lang)
    ref_lesions = [les for sid in by_id for les in refs[sid]["lesions"] or []]
    never = sum("other" in (les["type"], les["location"]) for les in ref_lesions)
    print(
        f"{len(by_id)} studies, {len(ref_lesions)} reference lesions ({never} of type or place "
        f'"other": the protocol never matches them); written with their type and place: {right}'
    )
    print("| n | type | reference place | written place |\n|---|---|---|---|")
    for (kind, ref, out), n in errors.most_common(args.top):
        print(f"| {n} | {kind} | {ref} | {out} |")
    kinds = yes_no_by_kind(by_id, refs, args.lang)
    total = sum(sum(c.values()) for c in kinds.values())
    correct = sum(n for c in kinds.values() for (_, _, ok), n in c.items() if ok)
    print(f"\nyes/no questions: {correct}/{total} = {correct / max(total, 1):.3f}")
    print("| kind | right | accuracy | truth -> answer |\n|---|---|---|---|")
    for kind, c in sorted(kinds.items()):
        ok, n = sum(v for (_, _, r), v in c.items() if r), sum(c.values())
        pairs = ", ".join(f"{t}->{a}: {v}" for (t, a, _), v in sorted(c.items()))
        print(f"| {kind} | {ok}/{n} | {ok / n:.3f} | {pairs} |")


if __name__ == "__main__":
    main()
