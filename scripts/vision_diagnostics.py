"""How much the vision side of a trained ViPET-VLM sees, without generating any text.

For every region-report example of a split (one per study and region):

- **token lesion AUC** — the findings head's per-token scores against "this encoder
  token's patch holds a lesion voxel", over all tokens of all regions;
- **token class accuracy** — on the tokens that hold a lesion, how often the head's top
  type x avidity class is one the token holds, and the same for the type alone;
- **slot recall** — the share of the lesions in a region volume that a finding slot sits
  on (any of the lesion's tokens), when the model has slots;
- **head detection F1** — what the findings head alone would report: per region, the
  local maxima of the token score (3 x 3 x 3) above a probability threshold, each with
  its top type and avidity, matched like the clinical F1 (greedy, per region, against
  the lesions the report files under that region; "other" never matches) on type (T),
  type + avidity (TF), and "located" (the peak on one of the lesion's tokens, same
  type). The report cannot be clinically better than what the head sees;
- **within-region label AUC** — per body region, the mean ROC AUC of the findings head's
  labels (lesion type x FDG avidity) that have at least two positives and two negatives
  there, and the AUC of "normal". Labels are compared within a region because the
  region alone predicts many of them (no nodule in the abdomen).

A report can only differ with the image when these are well above chance.

    .venv/bin/python scripts/vision_diagnostics.py runs/cpu-small/model DATA CACHE \
        [--split test] [--state runs/cpu-small/checkpoint/state.pt]

``--state`` scores the weights of a training checkpoint (mid-run) in the architecture
of the model folder given first.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from vipet.data.dataset import DataConfig, ViPetDataset
from vipet.model.checkpoint import load_vipet
from vipet.model.diag_head import (
    AVIDITY,
    LESION_TYPES,
    token_class_targets,
    token_lesion_targets,
)

THRESHOLDS = (0.3, 0.5, 0.7, 0.9)


def auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula."""
    r = rankdata(s)
    n1 = y.sum()
    n0 = len(y) - n1
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def token_lesion_ids(ds: ViPetDataset, item: dict, grid: tuple[int, int, int]) -> list[set[int]]:
    """Per lesion in the item's region volume: the set of token indices it touches."""
    sample = ds._samples(item["study_id"])[item["region"]]
    if sample.lesion is None:
        return []
    labels = torch.from_numpy(sample.lesion.astype(np.int64))[None]
    out = []
    for lesion_id in torch.unique(labels).tolist():
        if lesion_id == 0:
            continue
        tokens = token_lesion_targets(labels == lesion_id, grid)[0]
        out.append(set(torch.nonzero(tokens).flatten().tolist()))
    return out


def detections(v, threshold: float) -> list[tuple[int, str, bool]]:
    """``(token, type, avid)`` of every score peak above ``threshold`` in the item's one
    region, strongest first."""
    scores = v.lesion_scores[0, 0]
    grid = scores.reshape(1, 1, *v.grid)
    is_peak = (grid == F.max_pool3d(grid, 3, 1, 1)).flatten()
    out = []
    for n in torch.argsort(scores, descending=True).tolist():
        if torch.sigmoid(scores[n]) < threshold:
            break
        if is_peak[n]:
            k = int(v.lesion_classes[0, 0, n].argmax())
            out.append((n, LESION_TYPES[k // len(AVIDITY)], AVIDITY[k % len(AVIDITY)] == "avid"))
    return out


def match_f1(pairs: list[tuple[list, list]], same) -> float:
    """Micro F1 of greedy matching over ``(predicted, reference)`` lists."""
    tp = n_pred = n_ref = 0
    for pred, ref in pairs:
        used = [False] * len(ref)
        n_pred += len(pred)
        n_ref += len(ref)
        for p in pred:
            for j, r in enumerate(ref):
                if not used[j] and r[1] != "other" and same(p, r):
                    used[j] = True
                    tp += 1
                    break
    return 2 * tp / max(n_pred + n_ref, 1)


def gt_lesions(ds: ViPetDataset, item: dict, grid) -> list[tuple[set[int], str, bool]]:
    """``(tokens, type, avid)`` of the lesions the report files under the item's region
    (tokens empty when the lesion lies outside this region's volume)."""
    sample = ds._samples(item["study_id"])[item["region"]]
    labels = None if sample.lesion is None else torch.from_numpy(sample.lesion.astype(np.int64))
    out = []
    for les in ds._gt[item["study_id"]].get("lesions") or []:
        if les.get("region") != item["region"]:
            continue
        toks: set[int] = set()
        if labels is not None and (labels == int(les["id"])).any():
            hit = token_lesion_targets((labels == int(les["id"]))[None], grid)[0]
            toks = set(torch.nonzero(hit).flatten().tolist())
        out.append((toks, les["type"], bool(les["fdg_avid"])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("cache")
    ap.add_argument("--split", default="test")
    ap.add_argument("--state", default=None, help="a training checkpoint's state.pt")
    ap.add_argument("--max-items", type=int, default=None, help="score the first N regions")
    args = ap.parse_args()
    model, tok = load_vipet(args.model)
    if args.state:
        model.load_state_dict(
            torch.load(args.state, map_location="cpu", weights_only=False)["model"]
        )
    model.eval()
    cfg = DataConfig(report_scope="region", langs=("en",), tasks_ratio={"report": 1.0})
    ds = ViPetDataset(args.data, args.cache, args.split, tok, model.visual_tokens_per_region, cfg)
    logits, targets, regions, scores, lesion = [], [], [], [], []
    hits = {"class": [], "type": []}
    slot_hits = []
    det: dict[float, list] = {t: [] for t in THRESHOLDS}
    with torch.no_grad():
        for i in range(min(len(ds), args.max_items or len(ds))):
            item = ds[i]
            v = model.encode_images(item["ct"][None], item["pet"][None])
            logits.append(model.diagnose(v)[0, 0].numpy())
            targets.append(item["diag_targets"][0].numpy())
            regions.append(item["region"])
            scores.append(v.lesion_scores[0, 0].numpy())
            lesion.append(token_lesion_targets(item["lesion"], v.grid)[0].numpy())
            want = token_class_targets(item["lesion_class"], v.grid)[0]  # (N, K)
            on = want.amax(-1) > 0
            top = v.lesion_classes[0, 0][on].argmax(-1)
            want = want[on]
            hits["class"] += want[torch.arange(len(top)), top].tolist()
            types = want.reshape(len(top), want.shape[-1] // len(AVIDITY), len(AVIDITY)).amax(-1)
            hits["type"] += types[torch.arange(len(top)), top // len(AVIDITY)].tolist()
            if v.slot_tokens is not None:
                slots = set(v.slot_tokens[0, 0].tolist())
                ids = token_lesion_ids(ds, item, v.grid)
                slot_hits += [bool(slots & toks) for toks in ids]
            ref = gt_lesions(ds, item, v.grid)
            for t in THRESHOLDS:
                det[t].append((detections(v, t), ref))
    logit, target, region = np.stack(logits), np.stack(targets), np.array(regions)
    s, y = np.concatenate(scores), np.concatenate(lesion)
    print(f"token lesion AUC {auc(y, s):.3f} ({int(y.sum())} lesion tokens of {len(y)})")
    print(
        f"token class accuracy {np.mean(hits['class']):.3f}, type alone "
        f"{np.mean(hits['type']):.3f} (on {len(hits['class'])} lesion tokens)"
    )
    if slot_hits:
        print(f"slot recall {np.mean(slot_hits):.3f} of {len(slot_hits)} lesions in the volumes")
    n_ref = sum(len(r) for _, r in det[THRESHOLDS[0]])
    for t in THRESHOLDS:
        pairs = det[t]
        n_pred = sum(len(p) for p, _ in pairs)
        f1t = match_f1(pairs, lambda p, r: p[1] == r[1])
        f1tf = match_f1(pairs, lambda p, r: p[1] == r[1] and p[2] == r[2])
        f1loc = match_f1(pairs, lambda p, r: p[1] == r[1] and p[0] in r[0])
        print(
            f"head detection at p>{t}: {n_pred} found / {n_ref} filed; "
            f"F1-T {f1t:.3f}, F1-TF {f1tf:.3f}, located F1-T {f1loc:.3f}"
        )
    for name in np.unique(region):
        m = region == name
        aucs = [
            auc(target[m, j], logit[m, j])
            for j in range(target.shape[1] - 1)
            if 2 <= target[m, j].sum() <= m.sum() - 2
        ]
        normal = target[m, -1]
        na = auc(normal, logit[m, -1]) if 0 < normal.sum() < m.sum() else float("nan")
        print(
            f"{name}: within-region label AUC {np.mean(aucs):.3f} over {len(aucs)} labels, "
            f"normal AUC {na:.3f}"
        )


if __name__ == "__main__":
    main()
