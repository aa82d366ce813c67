"""Phantom generation speed: seconds per whole-body study at the default resolution.

Times `simulate_case` (anatomy, lesions, CT and PET simulation, ground-truth measurement)
and the whole per-study job of `vipet phantom` (plus reports, questions and writing the
ViMed-PET layout and ground-truth masks) on one core, over several studies.

Run:  .venv/bin/python benchmarks/phantom.py [--studies 5] [--json out.json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from vipet.phantom.dataset import _Job, _run  # noqa: E402
from vipet.phantom.simulate import PhantomConfig, simulate_case  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cfg = PhantomConfig()
    simulate_case(999, 0, cfg)  # warm-up: imports
    sim, full, shapes = [], [], None
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.studies):
            t0 = time.perf_counter()
            case = simulate_case(i, 0, cfg)
            sim.append(time.perf_counter() - t0)
            shapes = (case.study.ct.shape, case.study.pet.shape)
            t0 = time.perf_counter()
            _run(_Job(i, 0, "train", "vimed", Path(tmp), cfg))
            full.append(time.perf_counter() - t0)
    print(f"default resolution: CT {shapes[0]}, PET {shapes[1]} (D, H, W); 1 core")
    print(f"{'step':34s} {'median s':>9s} {'mean s':>8s}   runs")
    for name, t in (("simulate_case", sim), ("study job (simulate+texts+write)", full)):
        print(
            f"{name:34s} {statistics.median(t):9.2f} {statistics.mean(t):8.2f}   "
            + " ".join(f"{x:.2f}" for x in t)
        )
    print("target: one study at default resolution <= 2 s on one core")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"ct_shape": shapes[0], "pet_shape": shapes[1], "simulate_s": sim, "job_s": full},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
