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
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from vipet.data.dataset import ViPetDataset
from vipet.evaluation.clinical import clinical_scores
from vipet.evaluation.runner import references, split_ids
from vipet.model.checkpoint import load_vipet
from vipet.model.findings_slots import detect
from vipet.reports.schema import REGIONS

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
    model.eval()
    ds = ViPetDataset(args.data, args.cache, args.split, tok, model.visual_tokens_per_region)
    ids = split_ids(args.data, args.split, args.max_studies)
    refs = references(args.data, ids, "en")
    k = model.config.findings_slots
    found: dict[str, list[tuple[float, dict[str, Any], str]]] = {}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for sid in tqdm(ids, desc="detect", leave=False):
            samples = ds._samples(sid)
            chosen = [samples[r] for r in REGIONS]
            ct = torch.stack([torch.from_numpy(s.ct.astype("float32")) for s in chosen])[:, None]
            pet = torch.stack([torch.from_numpy(s.pet.astype("float32")) for s in chosen])[:, None]
            zones = torch.tensor([ds._zones(s) for s in chosen])
            _, grid, dense = model._encode(ct, pet)
            det = detect(
                dense,
                pet[:, 0],
                grid,
                k,
                min(args.thresholds),
                zones,
                model.config.pet_scaling,
                model.config.pet_vmax,
            )
            found[sid] = [
                (float(a["score"]), a, region)
                for region, attrs in zip(REGIONS, det.attributes, strict=True)
                for a in attrs
            ]
    ref = {sid: refs[sid]["lesions"] or [] for sid in ids}
    rows = []
    for thr in args.thresholds:
        pred = {sid: [a for s, a, _ in found[sid] if s >= thr] for sid in ids}
        sc = clinical_scores(pred, ref)
        n_pred = sum(len(v) for v in pred.values())
        rows.append(
            {
                "threshold": thr,
                "n_pred": n_pred,
                "n_ref": sc["T"]["n_ref"],
                **{m: round(sc[m], 3) for m in ("f1_t", "f1_tp", "f1_tf", "f1_tpf")},
                "suvmax_mae": sc["suvmax_mae"],
                "size_mae_mm": sc["size_mae_mm"],
            }
        )
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
    # Recall per reference type: a detection of that type in the lesion's region.
    thr = model.config.slot_threshold
    hit: dict[str, list[int]] = {}
    for sid in ids:
        preds = [(a["type"], region) for s, a, region in found[sid] if s >= thr]
        for les in ref[sid]:
            key = f"{les['type']} ({'avid' if les.get('fdg_avid') else 'non-avid'})"
            h = hit.setdefault(key, [0, 0])
            h[1] += 1
            if (les["type"], les.get("region")) in preds:
                preds.remove((les["type"], les.get("region")))
                h[0] += 1
    print(f"\nrecall by type at threshold {thr} (same type, same region):")
    for key, (a, n) in sorted(hit.items(), key=lambda x: -x[1][1]):
        print(f"  {key:32s} {a:4d}/{n:<4d} {a / n:.2f}")
    if args.json:
        # and each study's detections at the model's threshold, for comparing with what
        # the reports say (scripts/copy_fidelity.py)
        per_study = {
            sid: [{**a, "region": region} for s, a, region in found[sid] if s >= thr] for sid in ids
        }
        out = {"rows": rows, "recall": hit, "detections": per_study}
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
