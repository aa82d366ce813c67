"""What clinical F1 a report could reach from partial knowledge of the ground truth.

Reports are built directly as lesion lists (no text, so no extraction error) from the
split's ground-truth lesions, each oracle knowing one thing exactly, and scored with the
evaluation protocol (`vipet.evaluation.clinical.clinical_scores`). It tells what the
vision side has to get right for a clinical-F1 target: F1-T matches lesion *types* per
study, so it is a question of counting the lesions of each type.

    .venv/bin/python scripts/f1_oracles.py DATA [--split test] [--seed 0]

Oracles (per region = the region a report files the lesion under):

- ``presence``: which types each region holds (one lesion per type present);
- ``count + most frequent type``: how many lesions each region holds, each written as
  the region's most frequent type in the training split;
- ``count + type right p``: how many, each with its true type with probability p, else a
  type drawn from the region's training distribution (avidity and location kept);
- ``random training study``: another (training) study's lesions — the random baseline.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from vipet.evaluation.clinical import clinical_scores
from vipet.evaluation.runner import references, split_ids

COLUMNS = ("f1_t", "f1_tf", "f1_tpf")


def _by_region(lesions: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for les in lesions:
        out.setdefault(les["region"], []).append(les)
    return out


def oracles(data: Path, split: str, seed: int) -> dict[str, dict[str, list[dict]]]:
    """Oracle name → predicted lesions per study."""
    train = references(data, split_ids(data, "train"), "en")
    refs = references(data, split_ids(data, split), "en")
    type_freq: dict[str, Counter] = {}
    for ref in train.values():
        for les in ref["lesions"] or []:
            type_freq.setdefault(les["region"], Counter())[les["type"]] += 1
    rng = np.random.default_rng(seed)

    def draw(region: str) -> str:
        names, counts = zip(*type_freq[region].items(), strict=True)
        p = np.asarray(counts, dtype=float)
        return str(names[rng.choice(len(names), p=p / p.sum())])

    out: dict[str, dict[str, list[dict]]] = {}
    presence, frequent = {}, {}
    for sid, ref in refs.items():
        regions = _by_region(ref["lesions"] or [])
        presence[sid] = [
            next(les for les in found if les["type"] == kind)
            for found in regions.values()
            for kind in dict.fromkeys(les["type"] for les in found)
        ]
        frequent[sid] = [
            {**les, "type": type_freq[region].most_common(1)[0][0]}
            for region, found in regions.items()
            for les in found
        ]
    out["presence (types per region)"] = presence
    out["count + most frequent type"] = frequent
    for p in (0.5, 0.7, 0.9):
        out[f"count + type right {p:.0%}"] = {
            sid: [
                les if rng.random() < p else {**les, "type": draw(les["region"])}
                for les in ref["lesions"] or []
            ]
            for sid, ref in refs.items()
        }
    pool = sorted(train)
    out["random training study"] = {
        sid: train[pool[rng.integers(len(pool))]]["lesions"] or [] for sid in refs
    }
    out["_reference"] = {sid: ref["lesions"] or [] for sid, ref in refs.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    preds = oracles(args.data, args.split, args.seed)
    ref = preds.pop("_reference")
    n_ref = sum(len(v) for v in ref.values())
    print(f"{args.split} split: {len(ref)} studies, {n_ref} reference lesions")
    print("| oracle | lesions written | F1-T | F1-TF | F1-TPF |")
    print("|---|---|---|---|---|")
    for name, pred in preds.items():
        s = clinical_scores(pred, ref)
        n = sum(len(v) for v in pred.values())
        print(f"| {name} | {n} | " + " | ".join(f"{s[c]:.3f}" for c in COLUMNS) + " |")


if __name__ == "__main__":
    main()
