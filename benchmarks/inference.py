"""What a clinician waits for with a trained model: a whole-study report and a follow-up
question, on real phantom studies, on the path `vipet report` / `vipet ask` take.

For each of ``--studies`` studies of a split (the study read from disk first, outside
the clock) this times

- **preprocess**: the study onto the model's three region grids (`preprocess_study`);
- **encode**: the three regions through the encoders, fusion, findings head and
  projector (once per study: `Predictor.encode` without the preprocessing);
- **report**: the region-by-region report from the encoded study (three generations,
  each from one region's visual tokens, as `vipet evaluate --by-region` and the viewer
  write it), with the number of tokens written;
- **follow-up**: one question on the already encoded study (its first region question),
  the study not encoded again;

and prints the median over the studies, the whole-study report latency (encode + report,
and with the preprocessing), and the process's peak resident memory (model loaded,
studies processed one after another: what `vipet serve` holds per model).

    python benchmarks/inference.py --checkpoint runs/cpu-small/model --data /tmp/ph600 \\
        [--split test] [--studies 10] [--json docs/benchmarks/inference.json]

Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from vipet.evaluation.runner import split_ids
from vipet.inference.predictor import Predictor
from vipet.io import LoadOptions, load_study
from vipet.io.vipet_dataset import ground_truth
from vipet.preprocess import preprocess_study


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_study(predictor: Predictor, data: Path, sid: str, lang: str) -> dict[str, Any]:
    study = load_study(data, LoadOptions(study_id=sid))
    out: dict[str, Any] = {"study": sid}
    t0 = time.perf_counter()
    samples = preprocess_study(study, predictor.preprocess)
    out["preprocess_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ctx = predictor.encode_samples(study.id, samples)
    out["encode_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = predictor.report(ctx, lang, by_region=True)
    out["report_s"] = time.perf_counter() - t0
    out["report_tokens"] = len(predictor.tokenizer(report)["input_ids"])
    questions = [q for q in ground_truth(data, sid).get(f"questions_{lang}", []) if q.get("region")]
    if questions:
        q = questions[0]
        t0 = time.perf_counter()
        predictor.ask(ctx, q["question"], lang, region=q["region"])
        out["followup_s"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--studies", type=int, default=10)
    ap.add_argument("--lang", default="vi")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    t0 = time.perf_counter()
    predictor = Predictor.from_checkpoint(args.checkpoint)
    load_s = time.perf_counter() - t0
    ids = split_ids(args.data, args.split, args.studies + 1)
    one_study(predictor, args.data, ids[0], args.lang)  # warm-up (thread pools, first allocations)
    rows = [one_study(predictor, args.data, sid, args.lang) for sid in ids[1:]]
    med = lambda key: statistics.median(r[key] for r in rows if key in r)  # noqa: E731
    result = {
        "checkpoint": str(args.checkpoint),
        "studies": len(rows),
        "threads": torch.get_num_threads(),
        "model_load_s": round(load_s, 2),
        **{f"{k}_median": round(med(k), 3) for k in ("preprocess_s", "encode_s", "report_s")},
        "report_tokens_median": med("report_tokens"),
        "followup_s_median": round(med("followup_s"), 3),
        "followup_s_max": round(max(r["followup_s"] for r in rows if "followup_s" in r), 3),
        "whole_study_report_s_median": round(
            statistics.median(r["encode_s"] + r["report_s"] for r in rows), 3
        ),
        "whole_study_report_s_max": round(max(r["encode_s"] + r["report_s"] for r in rows), 3),
        "with_preprocess_s_median": round(
            statistics.median(r["preprocess_s"] + r["encode_s"] + r["report_s"] for r in rows), 3
        ),
        "peak_rss_mb": round(peak_rss_mb()),
        "per_study": [
            {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rows
        ],
    }
    width = max(len(k) for k in result if k != "per_study")
    for k, v in result.items():
        if k != "per_study":
            print(f"{k:<{width}}  {v}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
