"""Seconds per vision-phase training step of a config, in steady state.

The vision phase of cpu-small trains the encoders, fusion and findings head on
lesion-centred crops (docs/training.md); it is about half of the training time. This
builds the trainer state of ``--config`` on one split (the validation split by default:
it loads in seconds), runs a few warm-up vision steps and times ``--steps`` more, with
the config's precision and batch size. ``--profile FILE`` (pyinstrument) profiles the
timed steps.

    python benchmarks/vision_step.py --config configs/cpu-small.yaml \\
        --data /tmp/ph600 --cache /tmp/cache64 [key=value ...] [--profile p.txt]

Prints the seconds a step (and writes JSON with ``--json``). Run it on an idle machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from _steps import bench_config, step_parser, time_steps

from vipet.train import trainer as T


def main() -> None:
    ap = step_parser(__doc__, steps=20, weights=False)
    ap.add_argument("--profile", type=Path)
    ap.add_argument(
        "--channels-last", action="store_true", help="hold conv weights channels-last (NDHWC)"
    )
    ap.add_argument(
        "--ops", type=int, default=0, help="then profile 3 steps by operator and print the top N"
    )
    args = ap.parse_args()

    from vipet.data.tokenizer import synthetic_corpus, train_tokenizer

    tok = train_tokenizer(synthetic_corpus(50, 0), vocab_size=2000)  # no LM pass here
    cfg = bench_config(args.config, args.split, *args.overrides)
    state = T.setup(cfg, tok, args.data, args.cache)
    if args.channels_last:
        state.raw_model.to(memory_format=torch.channels_last_3d)
    batches = T._micro_batches(state, "vision")
    per_step = time_steps(state, batches, args.steps, args.warmup, args.profile)
    if args.ops:
        from torch.profiler import profile

        with profile() as prof:
            for _ in range(3):
                T.train_step(state, [next(batches)])
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        print(f"share of the self CPU time over 3 steps ({total / 3e6:.2f} s a step):")
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.ops]:
            print(f"  {e.self_cpu_time_total / total:6.1%}  {e.key}")
    result = {
        "config": str(args.config),
        "overrides": args.overrides,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "batch": cfg.vision_batch_size,
        "precision": cfg.precision,
        "channels_last": args.channels_last,
        "seconds_per_step": round(per_step, 3),
    }
    print(
        f"{per_step:.3f} s per vision step ({args.steps} steps, batch {cfg.vision_batch_size}, "
        f"{cfg.precision}, {torch.get_num_threads()} threads)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
