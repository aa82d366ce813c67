"""What the findings head shows at each reference lesion: its strongest centre heat over
the lesion's voxels (on the head's grid) and the type it reads at that voxel.

A lesion the detector misses is either one the heatmap does not rise on (no peak, or
one below every threshold) or one it finds and types wrong; this tells the two apart,
per reference type and avidity, where `vision_diagnostics.py` only counts the misses.

    .venv/bin/python scripts/lesion_heat.py runs/cpu-small/model /tmp/ph600 /tmp/cache64 --split test
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vipet.model.vipet import vision_autocast
from vipet.reports.schema import LESION_TYPES


def lesion_heat(
    heat: torch.Tensor,
    types: torch.Tensor,
    ids: np.ndarray,
    lesions: Sequence[Mapping[str, Any]],
    region: str,
) -> list[dict[str, Any]]:
    """Per lesion of ``region`` present in ``ids`` (the region volume's lesion-id map,
    input grid): ``heat`` (D0, H0, W0) probabilities and ``types`` (14, D0, H0, W0)
    logits on the head's grid. A lesion's voxels on that grid are those any of its
    input voxels fall in (max-pooled), so a lesion of one input voxel still has one."""
    grid = tuple(heat.shape)
    full = torch.from_numpy(ids.astype(np.int64))
    out = []
    for lesion in lesions:
        lid = int(lesion["id"])
        if lesion.get("region") != region or not bool((full == lid).any()):
            continue
        on = F.adaptive_max_pool3d((full == lid)[None, None].float(), grid)[0, 0] > 0
        values = heat[on]
        best = on.nonzero()[int(values.argmax())]
        read = int(types[(slice(None), *best.tolist())].argmax())
        out.append(
            {
                "type": lesion["type"],
                "fdg_avid": bool(lesion["fdg_avid"]),
                "size_mm": lesion.get("size_mm"),
                "heat": float(values.max()),
                "read": LESION_TYPES[read],
            }
        )
    return out


def table(rows: Sequence[Mapping[str, Any]], thresholds: Sequence[float] = (0.2, 0.3)) -> str:
    """Markdown: per reference type and avidity, how many lesions reach each heat
    threshold, their median heat, and the types read at their strongest voxel."""
    by: dict[tuple[str, bool], list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by[(r["type"], r["fdg_avid"])].append(r)
    head = " | ".join(f"heat > {t}" for t in thresholds)
    lines = [
        f"| type | n | {head} | median heat | read as (at the strongest voxel) |",
        "|---|---|" + "---|" * len(thresholds) + "---|---|",
    ]
    for (kind, avid), xs in sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        h = np.array([x["heat"] for x in xs])
        reach = " | ".join(str(int((h > t).sum())) for t in thresholds)
        read = ", ".join(f"{t} {n}" for t, n in Counter(x["read"] for x in xs).most_common(3))
        name = f"{kind} ({'avid' if avid else 'non-avid'})"
        lines.append(f"| {name} | {len(xs)} | {reach} | {np.median(h):.2f} | {read} |")
    return "\n".join(lines)


def main() -> None:
    from vipet.evaluation.detector import load_split, region_volumes
    from vipet.model.checkpoint import load_vipet

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="A saved ViPET model folder.")
    ap.add_argument("data", type=Path)
    ap.add_argument("cache", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-studies", type=int)
    ap.add_argument("--json", type=Path, help="Also write every lesion's record here.")
    args = ap.parse_args()

    model, tok = load_vipet(args.model)
    model.eval()
    ds, ids, _ = load_split(args.data, args.cache, args.split, model, tok, args.max_studies)
    regions = list(model.config.regions)
    rows: list[dict[str, Any]] = []
    with torch.no_grad(), vision_autocast():  # bf16 where native, as evaluation encodes
        for sid in ids:
            chosen, ct, pet = region_volumes(ds, sid, regions)
            _, _, dense = model._encode(ct, pet)
            heat = torch.sigmoid(dense.heat.float())
            lesions = ds._gt[sid].get("lesions") or []
            for k, (region, sample) in enumerate(zip(regions, chosen, strict=True)):
                if sample.lesion is not None:
                    found = lesion_heat(
                        heat[k], dense.types[k].float(), sample.lesion, lesions, region
                    )
                    rows.extend({"study": sid, "region": region, **r} for r in found)
    print(f"centre heat at the {len(rows)} reference lesions of {len(ids)} {args.split} studies")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
