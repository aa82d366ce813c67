"""Seconds per language-phase training step of a config, in steady state.

The language phase of cpu-small trains the projector, finding slots and LM over a
frozen, memoised vision side (docs/training.md). This builds the trainer state of
``--config`` on one split (the validation split by default: it loads in seconds),
optionally loads a trained model's weights (so detections and teacher slots are
realistic), enters the language phase, fills the vision memo for every volume of the
split (and their teacher slots), runs a few warm-up steps and then times ``--steps`` optimizer steps. With
``--profile FILE`` (pyinstrument installed) the timed steps are profiled to FILE.

    python benchmarks/language_step.py --config configs/cpu-small.yaml \\
        --data /tmp/ph600 --cache /tmp/cache64 --weights runs/cpu-small/model [--profile p.txt]

Prints the seconds a step and writes them as JSON with ``--json``. Run it on an idle
machine: two processes on two cores slow each other several-fold.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from _steps import bench_config, fill_memo, step_parser, time_steps, weights_and_tokenizer

from vipet.train import trainer as T


def main() -> None:
    ap = step_parser(__doc__, steps=30)
    ap.add_argument("--profile", type=Path)
    args = ap.parse_args()

    weights, tok = weights_and_tokenizer(args.weights, args.data)
    cfg = bench_config(args.config, args.split, "vision_steps=1", *args.overrides)
    state = T.setup(cfg, tok, args.data, args.cache)
    if weights is not None:
        state.raw_model.load_state_dict(weights)
    state.step, state.phase = cfg.vision_steps, "language"
    T.enter_language_phase(state)
    batches = T._micro_batches(state, "language")
    t0 = time.perf_counter()
    fill_memo(state, batches)
    fill = time.perf_counter() - t0
    per_step = time_steps(state, batches, args.steps, args.warmup, args.profile)
    result = {
        "config": str(args.config),
        "split": args.split,
        "volumes_memoised": len(state.memo),
        "memo_fill_s": round(fill, 1),
        "steps": args.steps,
        "seconds_per_step": round(per_step, 3),
    }
    print(
        f"{args.split}: {len(state.memo)} volumes memoised in {fill:.1f} s; "
        f"{per_step:.3f} s per language step ({args.steps} steps, batch {cfg.optim.batch_size})"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
