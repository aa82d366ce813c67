"""Is bf16 worth it on this CPU? cpu-small's vision pass in fp32 and under bf16 autocast.

The vision side (encoders, fusion, findings head) of a randomly initialised cpu-small
encodes one 64x96x96 region volume, as `vipet evaluate` and the calibration do once per
region of every study. On CPUs with AVX512-BF16 or AMX oneDNN runs bf16 convolutions
natively and bf16 is the faster; on the others (AVX2 alone) it emulates them, and bf16
is many times slower than fp32. This prints the CPU's answer to oneDNN's bf16 test, the
seconds of one pass in each precision (best of ``--repeats`` after a warm-up), and the
precision `vipet.model.vipet.vision_autocast` and a ``precision: bf16`` training run
(`vipet.train.trainer.run_precision`) pick here.

    python benchmarks/precision.py [--repeats 2] [--json docs/benchmarks/precision.json]

Run it on an idle machine. Emulated bf16 takes minutes a pass: ``--repeats 1``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from pathlib import Path

import torch

from vipet.data.tokenizer import synthetic_corpus, train_tokenizer
from vipet.model.presets import build_model
from vipet.model.vipet import bf16_runs_fast, cpu_has_native_bf16
from vipet.train.trainer import run_precision


def vision_seconds(model, ct, pet, ctx, repeats: int) -> float:
    """Best of ``repeats`` vision passes under ``ctx``, after one warm-up pass."""
    best = float("inf")
    with torch.no_grad():
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            with ctx():
                model.vision(ct, pet, regions=["chest"])
            if i:
                best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.manual_seed(0)
    tok = train_tokenizer(synthetic_corpus(20, 0), vocab_size=600)
    model = build_model("cpu-small", tok).eval()
    shape = (1, 1, *model.config.ct_encoder["image_size"])
    ct, pet = torch.rand(shape), torch.rand(shape)
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    seconds = {
        "fp32": vision_seconds(model, ct, pet, contextlib.nullcontext, args.repeats),
        "bf16": vision_seconds(model, ct, pet, bf16, args.repeats),
    }
    result = {
        "machine": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "native_bf16": cpu_has_native_bf16(),
        "volume": list(shape[2:]),
        "vision_seconds": {k: round(v, 3) for k, v in seconds.items()},
        "bf16_over_fp32": round(seconds["bf16"] / seconds["fp32"], 2),
        "vision_autocast": "bf16" if bf16_runs_fast("cpu") else "fp32",
        "training_with_precision_bf16": run_precision("bf16", torch.device("cpu")),
    }
    print(
        f"{result['cpu_capability']}, {result['threads']} threads, native bf16: "
        f"{result['native_bf16']}"
    )
    print("| vision pass, one region volume | fp32 | bf16 autocast | bf16 / fp32 |")
    print("|---|---|---|---|")
    print(
        f"| {'x'.join(map(str, result['volume']))} | {seconds['fp32']:.2f} s | "
        f"{seconds['bf16']:.2f} s | {result['bf16_over_fp32']:.2f} |"
    )
    print(
        f"picked here: vision_autocast {result['vision_autocast']}, a precision: bf16 run "
        f"{result['training_with_precision_bf16']}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
