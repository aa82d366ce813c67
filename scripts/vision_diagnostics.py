"""What the findings head of a (possibly half-)trained ViPET-VLM sees, without any text.

For every study of a split, the model's vision side runs on the three region volumes and
`vipet.model.findings_slots.detect` lists its findings (heatmap peaks in each region's
own slices, each with a type, FDG avidity, fine location, side, SUVmax and size). Those
findings are scored exactly like a generated report's (`clinical_scores`: F1-T, TP, TF,
TPF per study, against the study's reference lesions) at several heatmap thresholds. A
report cannot be clinically better than what the slots give the language model, so this
is the ceiling of the report scores — and it tells a vision problem from a language
problem. Also printed: detection recall per lesion type (any detection of the right
type in the right region counts), and the SUVmax / size errors of TPF matches.

    .venv/bin/python scripts/vision_diagnostics.py RUN DATA CACHE [--split val]

``RUN`` is a saved model folder (``runs/cpu-small/model``) or a training checkpoint
(``runs/cpu-small/checkpoint``, mid-run: the model is rebuilt from its config with the
tokenizer ``--tokenizer``, else one trained on the data as ``vipet train`` does).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from vipet.evaluation.detector import candidates, detector_scores, load_split, select
from vipet.model.checkpoint import load_vipet

THRESHOLDS = (0.2, 0.3, 0.4, 0.5)


def load_model(run: Path, data: Path, tokenizer: Path | None) -> tuple[Any, Any]:
    """A saved model, or the weights of a training checkpoint in its config's model."""
    if (run / "config.json").is_file():
        return load_vipet(run)
    from vipet.data.tokenizer import corpus_from_dataset, load_tokenizer, train_tokenizer
    from vipet.train.build import build_for_training
    from vipet.train.trainer import read_checkpoint_config

    cfg = read_checkpoint_config(run)
    tok = (
        load_tokenizer(tokenizer)
        if tokenizer
        else train_tokenizer(corpus_from_dataset(data), vocab_size=4000)
    )
    model, tok = build_for_training(cfg, tok)
    blob = torch.load(run / "state.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(blob["model"])
    print(f"checkpoint of step {blob['step']} ({blob['phase']} phase)")
    return model, tok


def candidate_floor(thresholds: Sequence[float], calibrated: Mapping[str, float] | None) -> float:
    """The lowest heat any row keeps: the table's thresholds and the model's calibrated
    ones. A floor at the table's lowest alone would drop the peaks a calibrated class
    keeps below it (run 31: lymph nodes at 0.15 against a table starting at 0.2), and the
    "calibrated" row would not be what the model's slots hold."""
    return min([*thresholds, *(calibrated or {}).values()])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("cache", type=Path)
    ap.add_argument("--split", default="val")
    ap.add_argument("--tokenizer", type=Path)
    ap.add_argument("--max-studies", type=int)
    ap.add_argument("--json", type=Path, help="Also write the scores here.")
    ap.add_argument(
        "--thresholds", type=float, nargs="+", default=list(THRESHOLDS), help="Heat thresholds."
    )
    args = ap.parse_args()

    model, tok = load_model(args.run, args.data, args.tokenizer)
    ds, ids, ref = load_split(args.data, args.cache, args.split, model, tok, args.max_studies)
    k = model.config.findings_slots
    calibrated = model.config.slot_thresholds
    found = candidates(model, ds, ids, floor=candidate_floor(args.thresholds, calibrated))
    rows = [
        {"threshold": thr, **detector_scores(select(found, thr, k), ref)} for thr in args.thresholds
    ]
    # the model's own slots: its thresholds (calibrated ones when it has them)
    thr = model.config.slot_threshold
    kept = select(found, thr, k, calibrated)
    if calibrated:
        rows.append({"threshold": "calibrated", **detector_scores(kept, ref)})
    print(f"findings head as a detector on {len(ids)} {args.split} studies (K = {k} per region)")
    print(
        "| threshold | found | reference | F1-T | F1-TP | F1-TF | F1-TPF | SUVmax MAE | size MAE mm |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mae = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
        print(
            f"| {r['threshold']} | {r['n_pred']} | {r['n_ref']} | {r['f1_t']:.3f} | "
            f"{r['f1_tp']:.3f} | {r['f1_tf']:.3f} | {r['f1_tpf']:.3f} | "
            f"{mae(r['suvmax_mae'])} | {mae(r['size_mae_mm'])} |"
        )
    # Recall per reference type: a detection of that type in the lesion's region, in
    # the model's own slots.
    hit: dict[str, list[int]] = {}
    for sid in ids:
        preds = [(a["type"], a["region"]) for a in kept[sid]]
        for les in ref[sid]:
            key = f"{les['type']} ({'avid' if les.get('fdg_avid') else 'non-avid'})"
            h = hit.setdefault(key, [0, 0])
            h[1] += 1
            if (les["type"], les.get("region")) in preds:
                preds.remove((les["type"], les.get("region")))
                h[0] += 1
    at = "the calibrated thresholds" if calibrated else f"threshold {thr}"
    print(f"\nrecall by type at {at} (same type, same region):")
    for key, (a, n) in sorted(hit.items(), key=lambda x: -x[1][1]):
        print(f"  {key:32s} {a:4d}/{n:<4d} {a / n:.2f}")
    # Extra detections: beyond the study's reference lesions of that type (what F1-T
    # counts false), and how many repeat the type and side of another.
    extra: dict[str, list[int]] = {}
    for sid in ids:
        refs_by_type = Counter(les["type"] for les in ref[sid])
        kinds = Counter(a["type"] for a in kept[sid])
        for kind, n in kinds.items():
            if n > refs_by_type[kind]:
                sides = Counter(a["laterality"] for a in kept[sid] if a["type"] == kind)
                e = extra.setdefault(kind, [0, 0])
                e[0] += n - refs_by_type[kind]
                e[1] += min(n - refs_by_type[kind], sum(m - 1 for m in sides.values()))
    print(
        f"\nextra detections at {at}: {sum(e[0] for e in extra.values())} "
        "(type: extra, of which repeating another's type and side)"
    )
    for kind, (n, rep) in sorted(extra.items(), key=lambda x: -x[1][0]):
        print(f"  {kind:32s} {n:4d}  {rep:4d}")
    if args.json:
        # and each study's detections at the model's threshold, for comparing with what
        # the reports say (scripts/copy_fidelity.py)
        per_study = {sid: kept[sid] for sid in ids}
        out = {"rows": rows, "recall": hit, "detections": per_study}
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
