"""How much the vision side of a trained ViPET-VLM sees, without generating any text.

For every region-report example of a split (one per study and region):

- **token lesion AUC** — the findings head's per-token scores against "this encoder
  token's patch holds a lesion voxel", over all tokens of all regions;
- **within-region label AUC** — per body region, the mean ROC AUC of the findings head's
  labels (lesion type x FDG avidity) that have at least two positives and two negatives
  there, and the AUC of "normal". Labels are compared within a region because the
  region alone predicts many of them (no nodule in the abdomen).

A report can only differ with the image when these are well above 0.5.

    .venv/bin/python scripts/vision_diagnostics.py runs/cpu-small/model DATA CACHE [--split test]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.stats import rankdata

from vipet.data.dataset import DataConfig, ViPetDataset
from vipet.model.checkpoint import load_vipet
from vipet.model.diag_head import token_lesion_targets


def auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula."""
    r = rankdata(s)
    n1 = y.sum()
    n0 = len(y) - n1
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("cache")
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    model, tok = load_vipet(args.model)
    model.eval()
    cfg = DataConfig(report_scope="region", langs=("en",), tasks_ratio={"report": 1.0})
    ds = ViPetDataset(args.data, args.cache, args.split, tok, model.visual_tokens_per_region, cfg)
    logits, targets, regions, scores, lesion = [], [], [], [], []
    with torch.no_grad():
        for i in range(len(ds)):
            item = ds[i]
            v = model.encode_images(item["ct"][None], item["pet"][None])
            logits.append(model.diagnose(v)[0, 0].numpy())
            targets.append(item["diag_targets"][0].numpy())
            regions.append(item["region"])
            scores.append(v.lesion_scores[0, 0].numpy())
            lesion.append(token_lesion_targets(item["lesion"], v.grid)[0].numpy())
    logit, target, region = np.stack(logits), np.stack(targets), np.array(regions)
    s, y = np.concatenate(scores), np.concatenate(lesion)
    print(f"token lesion AUC {auc(y, s):.3f} ({int(y.sum())} lesion tokens of {len(y)})")
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
