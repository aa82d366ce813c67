"""How faithfully the reports copy the finding slots: a language problem or a vision one.

The language model of cpu-small is taught to describe its finding slots (teacher-forced
on the report's own lesions). At test time the slots hold the findings head's
detections, so a report that copied them perfectly would score what the detector scores
(`scripts/vision_diagnostics.py`). This compares, study by study, the detections (read
from the ``--json`` file that script writes) with the lesions the evaluation runner
extracts from the generated reports, and counts:

- copied: a written lesion with the type, location class and FDG avidity of a detection;
- changed: written with a detection's type and location but the other avidity, or with
  its location and avidity but another type (the confusions are listed);
- extra: written lesions no detection explains; dropped: detections no lesion copies.

    .venv/bin/python scripts/copy_fidelity.py RUN/vision_test.json RUN/eval_vi/predictions.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from vipet.evaluation.clinical import match_lesions
from vipet.reports.extract import extract_findings


def _remove(items: list, pairs: list[tuple[int, int]], side: int) -> list:
    used = {p[side] for p in pairs}
    return [x for i, x in enumerate(items) if i not in used]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("detections", type=Path, help="vision_diagnostics.py --json output")
    ap.add_argument("predictions", type=Path, help="the evaluation's predictions.jsonl")
    ap.add_argument("--lang", default="vi")
    ap.add_argument(
        "--data",
        type=Path,
        help="the dataset: also count the detections at a place no training lesion of their "
        "type takes (by type, and by region and type; `vipet.inference.places`)",
    )
    args = ap.parse_args()

    det = json.loads(args.detections.read_text())["detections"]
    rows = [json.loads(line) for line in args.predictions.read_text().splitlines() if line]
    counts: Counter[str] = Counter()
    confusion: Counter[str] = Counter()
    for row in rows:
        found = [dict(d) for d in det.get(row["id"], [])]
        written = [w.to_dict() for w in extract_findings(row["report"], args.lang)]
        counts["detections"] += len(found)
        counts["written"] += len(written)
        steps = (
            ("copied", ("type", "location", "fdg_avid")),
            ("avidity changed", ("type", "location")),
            ("type changed", ("location", "fdg_avid")),
            ("location changed", ("type", "fdg_avid")),
        )
        for name, fields in steps:
            pairs = match_lesions(written, found, fields, match_other=True)
            counts[name] += len(pairs)
            if name == "type changed":
                confusion.update(f"{found[j]['type']} -> {written[i]['type']}" for i, j in pairs)
            written, found = _remove(written, pairs, 0), _remove(found, pairs, 1)
        counts["extra"] += len(written)
        counts["dropped"] += len(found)
        confusion.update(f"extra {w['type']} ({w['location']})" for w in written)
        confusion.update(f"dropped {d['type']} ({d['location']})" for d in found)
    print(f"{len(rows)} studies: {counts['detections']} detections, {counts['written']} written")
    for key in (
        "copied",
        "avidity changed",
        "type changed",
        "location changed",
        "extra",
        "dropped",
    ):
        print(f"  {key:18s} {counts[key]}")
    if args.data is not None:
        _unseen_places(det, args.data)
    print("most frequent changes:")
    for key, n in confusion.most_common(15):
        print(f"  {n:4d}  {key}")


def _unseen_places(det: dict, data: Path) -> None:
    """How many detections pair type and place as no training lesion does."""
    from vipet.evaluation.runner import references, split_ids
    from vipet.inference.places import fit_places

    ids = split_ids(data, "train")
    refs = references(data, ids, "en")
    places = fit_places({sid: refs[sid]["lesions"] for sid in ids}).places
    by_type: dict[str, set[str]] = {}
    for kinds in places.values():
        for kind, where in kinds.items():
            by_type.setdefault(kind, set()).update(where)
    found = [d for ds in det.values() for d in ds]
    off_type = sum(d["location_detail"] not in by_type.get(d["type"], ()) for d in found)
    off_region = sum(
        d["location_detail"] not in places.get(d["region"], {}).get(d["type"], ()) for d in found
    )
    print(f"  at a place no training lesion of the type takes: {off_type}")
    print(f"  ... of the type in that region's volume:        {off_region}")


if __name__ == "__main__":
    main()
