"""What the candidate scorer's training examples cost per study: the vision pass over a
study's three region volumes, and reading the peaks from the head's maps.

Training used to encode the whole training split a second time after the language
phase to collect the scorer's examples; the language phase's memo now hands every
volume's maps to a `PeakBook` as it encodes it, so only the peak reading is added to
training (`vipet.inference.rescore.PeakBook`). This prints both parts for a few studies.

    .venv/bin/python benchmarks/scorer_examples.py MODEL --data DATA --cache CACHE [--studies 20]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vipet.evaluation.detector import encoded_studies, load_split
from vipet.model.checkpoint import load_vipet
from vipet.model.findings_slots import scorer_inputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--split", default="train")
    ap.add_argument("--studies", type=int, default=20)
    args = ap.parse_args()

    model, tok = load_vipet(args.model)
    ds, ids, _ = load_split(args.data, args.cache, args.split, model, tok, args.studies)
    encode = peaks = 0.0
    start = time.perf_counter()
    for e in encoded_studies(model, ds, ids, "encode", progress=False):
        encoded = time.perf_counter()
        encode += encoded - start
        scorer_inputs(
            e.dense,
            e.pet[:, 0],
            e.ct[:, 0],
            model.region_indices(),
            e.zones,
            model.config.pet_scaling,
            model.config.pet_vmax,
        )
        start = time.perf_counter()
        peaks += start - encoded
    n = len(ids)
    print(
        json.dumps(
            {
                "studies": n,
                "encode_s_per_study": round(encode / n, 3),
                "peaks_s_per_study": round(peaks / n, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
