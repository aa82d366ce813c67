"""Training throughput of a config: samples/s and model FLOP utilisation (MFU) against
this machine's matmul peak, measured in the same process.

A training run of cpu-small has two phases (docs/training.md): vision steps on crops
(encoders, fusion, findings head; conv-heavy) and language steps over a frozen,
memoised vision side (projector, slots, LM; matmul-heavy). For each phase this prints

- seconds per optimizer step and samples (crops or examples) per second, in steady state;
- FLOPs per step, counted by `torch.utils.flop_counter.FlopCounterMode` over one whole
  step (forward, backward and the optimizer's own arithmetic is not counted: it is not
  model FLOPs);
- MFU: FLOPs per second over the matmul peak of the step's precision — a large square
  matmul timed here, with the threads training uses (bf16 for ``precision: bf16``).

and the whole run's figures weighted by the config's step counts. The split trained on is
the validation split by default (it loads in seconds); ``--weights`` loads a trained
model so the language phase's detections and slots are realistic.

    python benchmarks/train_throughput.py --config configs/cpu-small.yaml \\
        --data /tmp/ph600 --cache /tmp/cache64 [--weights runs/cpu-small/model] \\
        [--json docs/benchmarks/train_throughput.json]

Run it on an idle machine: two processes on two cores slow each other several-fold.
"""

from __future__ import annotations

import json
import platform
import resource
import time
from typing import Any

import torch
from _steps import bench_config, fill_memo, step_parser, time_steps, weights_and_tokenizer
from torch.utils.flop_counter import FlopCounterMode

from vipet.config import load_config
from vipet.train import trainer as T
from vipet.train.config import TrainConfig

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of the best of ``repeats`` ``n x n`` matmuls in ``dtype``: what this CPU's
    BLAS (oneDNN for bf16) reaches at the current thread count."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dtype)
    b = torch.randn(n, n, generator=g).to(dtype)
    torch.mm(a, b)  # warm-up (packing, thread pool)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def copy_bandwidth(mb: int = 256, repeats: int = 5) -> float:
    """Bytes/s of the best of ``repeats`` copies of a ``mb`` MiB float32 tensor (read +
    write): the memory bandwidth that bounds the steps' elementwise work (norms,
    activations, dtype casts) and the convolutions of few channels."""
    src = torch.ones(mb * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.numel() * 4 / best


def step_flops(state: Any, batch: Any) -> tuple[int, dict[str, int]]:
    """FLOPs of one optimizer step on ``batch`` (forward and backward) and the largest
    contributions by operator."""
    counter = FlopCounterMode(display=False)
    with counter:
        T.train_step(state, [batch])
    by_op: dict[str, int] = {}
    for ops in counter.get_flop_counts().values():
        for op, n in ops.items():
            by_op[str(op)] = max(by_op.get(str(op), 0), int(n))
    top = dict(sorted(by_op.items(), key=lambda kv: -kv[1])[:6])
    return int(counter.get_total_flops()), top


def phase(
    state: Any, name: str, steps: int, warmup: int, batch_size: int, peak: float
) -> dict[str, Any]:
    batches = T._micro_batches(state, name)
    flops, top = step_flops(state, next(batches))
    per_step = time_steps(state, batches, steps, warmup, None)
    return {
        "seconds_per_step": round(per_step, 4),
        "samples_per_s": round(batch_size / per_step, 2),
        "gflop_per_step": round(flops / 1e9, 2),
        "gflop_per_s": round(flops / per_step / 1e9, 2),
        "mfu": round(flops / per_step / peak, 4),
        "top_ops_gflop": {k: round(v / 1e9, 2) for k, v in top.items()},
    }


def main() -> None:
    args = step_parser(__doc__, steps=20).parse_args()
    weights, tok = weights_and_tokenizer(args.weights, args.data)
    run = load_config(TrainConfig, args.config, list(args.overrides))
    cfg = bench_config(args.config, args.split, *args.overrides)
    precision = T.run_precision(cfg.precision, torch.device("cpu"))  # fp32 without native bf16
    peaks = {name: matmul_peak(dtype) for name, dtype in DTYPES.items()}
    peak = peaks[precision]
    state = T.setup(cfg, tok, args.data, args.cache)
    if weights is not None:
        state.raw_model.load_state_dict(weights)
    result: dict[str, Any] = {
        "config": str(args.config),
        "overrides": args.overrides,
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "precision": precision,
        "matmul_peak_gflop_s": {k: round(v / 1e9, 1) for k, v in peaks.items()},
        "copy_bandwidth_gb_s": round(copy_bandwidth() / 1e9, 1),
    }
    phases: dict[str, dict[str, Any]] = {}
    if cfg.vision_steps:
        phases["vision"] = phase(
            state, "vision", args.steps, args.warmup, cfg.vision_batch_size, peak
        )
        state.step, state.phase = cfg.vision_steps, "language"
        T.enter_language_phase(state)
        if state.memo is not None:  # every volume of the split memoised first, as in a run
            fill_memo(state, T._micro_batches(state, "language"))
    phases["language"] = phase(
        state, "language", args.steps, args.warmup, cfg.optim.batch_size, peak
    )
    result["phases"] = phases
    # The whole run: each phase weighted by the steps the config gives it.
    counts = {"vision": run.vision_steps, "language": run.optim.max_steps - run.vision_steps}
    seconds = sum(counts[k] * p["seconds_per_step"] for k, p in phases.items())
    flops = sum(counts[k] * p["gflop_per_step"] * 1e9 for k, p in phases.items())
    result["run"] = {
        "steps": counts,
        "step_seconds": round(seconds, 1),
        "mfu": round(flops / seconds / peak, 4),
    }
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    print(
        f"matmul peak ({result['threads']} threads): "
        + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in result["matmul_peak_gflop_s"].items())
        + f"; copy bandwidth {result['copy_bandwidth_gb_s']} GB/s"
    )
    print("| phase | s/step | samples/s | GFLOP/step | GFLOP/s | MFU |")
    print("|---|---|---|---|---|---|")
    for name, p in phases.items():
        print(
            f"| {name} | {p['seconds_per_step']:.3f} | {p['samples_per_s']:.1f} | "
            f"{p['gflop_per_step']:.1f} | {p['gflop_per_s']:.1f} | {p['mfu']:.1%} |"
        )
    r = result["run"]
    print(
        f"whole run ({r['steps']['vision']} + {r['steps']['language']} steps): "
        f"{r['step_seconds'] / 60:.1f} min of steps, MFU {r['mfu']:.1%} of the {precision} peak; "
        f"peak RSS {result['peak_rss_mb']} MB"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
