"""The findings head's full-resolution decoder level of cpu-small on a vision batch,
forward + backward under bf16 autocast: convolving the concatenation of the upsampled
map and the skips, against `_conv_of_concat` (the two parts convolved with the matching
weight slices and summed — what the head does). Shapes: the decoder map 8 x 32 x 32 x
12 x 12 upsampled to 64 x 24 x 24, two skips of 8 x 16 x 64 x 24 x 24, 64 -> 16 channels,
3x3x3; the level's FLOPs are 3 x 2 x 27 x 64 x 16 x (8 x 64 x 24 x 24).

    python benchmarks/head_level.py [--repeats 5] [--json out.json]

Prints the median seconds and GFLOP/s of each; run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vipet.model.diag_head import _conv_of_concat
from vipet.model.encoder3d import conv_block

B, SIZE = 8, (64, 24, 24)
FLOPS = 3 * 2 * 27 * 64 * 16 * B * 64 * 24 * 24


def concatenated(block: nn.Sequential, x: torch.Tensor, skips: list[torch.Tensor]):
    x = F.interpolate(x, size=SIZE, mode="nearest")
    return block(torch.cat([x, *skips], dim=1))


def split(block: nn.Sequential, x: torch.Tensor, skips: list[torch.Tensor]):
    x = F.interpolate(x, size=SIZE, mode="nearest")
    return block[1:](_conv_of_concat(block[0], x, torch.cat(skips, dim=1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.manual_seed(0)
    block = conv_block(64, 16)
    x0 = torch.randn(B, 32, 32, 12, 12)
    s0 = [torch.randn(B, 16, *SIZE) for _ in range(2)]

    def run(fn) -> float:
        times = []
        for _ in range(args.repeats + 1):  # the first is a warm-up
            x = x0.clone().requires_grad_()
            skips = [s.clone().requires_grad_() for s in s0]
            block.zero_grad()
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = fn(block, x, skips)
            y.float().square().mean().backward()
            times.append(time.perf_counter() - t0)
        return statistics.median(times[1:])

    result = {"threads": torch.get_num_threads(), "gflop": round(FLOPS / 1e9, 1)}
    for name, fn in (("concatenated", concatenated), ("split", split)):
        s = run(fn)
        result[name] = {"seconds": round(s, 3), "gflop_s": round(FLOPS / s / 1e9, 1)}
        print(f"{name:<13} {s:.3f} s  {FLOPS / s / 1e9:.0f} GFLOP/s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
