"""Reports written from perfect finding slots: how well the language model copies.

The language model of cpu-small describes its finding slots. At test time they hold the
findings head's detections, so a report's errors mix the detector's with the LM's. Here
the slots hold the lesions the reference describes instead (the teacher slots training
uses, `vipet.model.findings_slots.teacher_detections`), so whatever a report still gets
wrong is the language model's: the F1-T of these reports is the LM's ceiling on a
perfect detector. ``--questions`` answers the study's questions from the same slots too
(closed-question accuracy on a perfect detector). Writes predictions JSONL for
``vipet evaluate --predictions``:

    .venv/bin/python scripts/teacher_slot_reports.py runs/cpu-small/model DATA CACHE \\
        --out runs/cpu-small/teacher_slots.jsonl [--split test] [--max-studies N] [--questions]
    vipet evaluate --data DATA --predictions runs/cpu-small/teacher_slots.jsonl --no-baselines
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vipet.data.dataset import ViPetDataset
from vipet.evaluation.runner import split_ids
from vipet.inference.predictor import Predictor, StudyContext
from vipet.io.vipet_dataset import ground_truth
from vipet.model.findings_slots import teacher_detections
from vipet.train.memo import cat_detections


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="a saved ViPET model folder")
    ap.add_argument("data", type=Path)
    ap.add_argument("cache", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="predictions JSONL to write")
    ap.add_argument("--split", default="test")
    ap.add_argument("--lang", default="vi")
    ap.add_argument("--max-studies", type=int, default=None)
    ap.add_argument("--questions", action="store_true", help="answer the questions too")
    args = ap.parse_args()

    predictor = Predictor.from_checkpoint(args.model)
    model = predictor.model
    if model.findings_slots is None:
        raise SystemExit(f"error: {args.model}: this model has no finding slots")
    ds = ViPetDataset(
        args.data,
        args.cache,
        args.split,
        predictor.tokenizer,
        model.visual_tokens_per_region,
        slots=model.config.findings_slots,
    )
    rows = []
    with torch.no_grad():
        for sid in tqdm(split_ids(args.data, args.split, args.max_studies), desc="reports"):
            samples = ds._samples(sid)
            regions = [r for r in model.config.regions if r in samples]
            ct, pet = (
                torch.from_numpy(
                    np.stack([getattr(samples[r], key) for r in regions]).astype(np.float32)
                )[None]
                for key in ("ct", "pet")
            )
            zones = torch.tensor([[ds._zones(samples[r]) for r in regions]])
            vision = model.vision(ct, pet, zones)
            parts = []
            for r in regions:
                filed, attrs = ds._teacher_of(sid, r, samples[r])
                parts.append(
                    teacher_detections(
                        torch.from_numpy(filed.astype(np.int64))[None],
                        torch.from_numpy(attrs)[None],
                        vision.grid,
                        model.head_shape,
                    )
                )
            visual = model.visual_tokens(vision, 1, teacher=cat_detections(parts))
            ctx = StudyContext(sid, regions, [samples[r] for r in regions], visual)
            report = predictor.report(ctx, args.lang, by_region=True)
            answers = []
            if args.questions:
                answers = [
                    {
                        "question": q["question"],
                        "prediction": predictor.ask(
                            ctx, q["question"], args.lang, region=q.get("region")
                        ),
                    }
                    for q in ground_truth(args.data, sid).get(f"questions_{args.lang}", [])
                ]
            rows.append({"id": sid, "lang": args.lang, "report": report, "answers": answers})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    tmp.replace(args.out)
    print(f"{len(rows)} reports from teacher slots -> {args.out}")


if __name__ == "__main__":
    main()
