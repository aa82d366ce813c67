"""Can the cpu-small vision side fit four training volumes? A capacity and wiring check.

Takes the first four chest regions with lesions of a dataset's train split and trains a
fresh cpu-small model on them alone (findings losses only: token lesion, token type x
avidity, region labels) for ``--steps`` steps, printing the three losses and, per
volume, the rank of its best-scoring lesion token (0 = the top token). A model whose
image signal reaches the findings head drives all three losses towards 0 and ranks the
lesion tokens first; one that sees only positions cannot (this is how the std-0.02
conv-stem initialisation was found, docs/training.md).

    .venv/bin/python scripts/overfit_check.py TOKENIZER_DIR DATA CACHE [--steps 120]

TOKENIZER_DIR: any saved model folder of a run on DATA (e.g. runs/cpu-small/model).
"""

from __future__ import annotations

import argparse

import torch

from vipet.data.dataset import DataConfig, ViPetDataset
from vipet.data.tokenizer import load_tokenizer
from vipet.model.diag_head import (
    diag_loss,
    token_class_loss,
    token_lesion_loss,
    token_lesion_targets,
)
from vipet.model.presets import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tokenizer")
    ap.add_argument("data")
    ap.add_argument("cache")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--lr", type=float, default=5e-4)
    args = ap.parse_args()
    torch.manual_seed(0)
    tok = load_tokenizer(args.tokenizer)
    model = build_model("cpu-small", tok).train()
    cfg = DataConfig(report_scope="region", langs=("en",), tasks_ratio={"report": 1.0})
    ds = ViPetDataset(args.data, args.cache, "train", tok, model.visual_tokens_per_region, cfg)
    items = []
    for i in range(len(ds)):
        if ds.examples[i].region == "chest":
            item = ds[i]
            if item["lesion"].any():
                items.append(item)
        if len(items) == 4:
            break
    keys = ("ct", "pet", "lesion", "lesion_class", "diag_targets")
    batch = {k: torch.stack([x[k] for x in items]) for k in keys}
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    for step in range(args.steps):
        out = model(input_ids=None, ct=batch["ct"], pet=batch["pet"], with_language=False)
        v = out.visual
        lesion = batch["lesion"].flatten(0, 1)
        losses = (
            token_lesion_loss(v.lesion_scores.flatten(0, 1), lesion, v.grid),
            token_class_loss(
                v.lesion_classes.flatten(0, 1), batch["lesion_class"].flatten(0, 1), v.grid
            ),
            diag_loss(out.diag_logits.flatten(0, 1), batch["diag_targets"].flatten(0, 1)),
        )
        opt.zero_grad()
        sum(losses).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 10 == 0 or step == args.steps - 1:
            target = token_lesion_targets(lesion, v.grid) > 0
            scores = v.lesion_scores.flatten(0, 1).detach()
            ranks = [int((s > s[t].max()).sum()) for s, t in zip(scores, target, strict=True)]
            parts = " ".join(
                f"{n} {float(x):.3f}"
                for n, x in zip(("lesion", "class", "region"), losses, strict=True)
            )
            print(f"step {step:4d}  {parts}  best lesion-token rank {ranks}", flush=True)


if __name__ == "__main__":
    main()
