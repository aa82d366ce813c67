"""Phantom anatomy speed: `build_anatomy` + `tissue_values` on a CT-like grid, one core.

The grid is the phantom CT's: 275 × 176 × 176 voxels (D, H, W), 4 × 2.84 × 2.84 mm,
vertex to mid-thigh. Target: both together ≤ ~0.8 s per study.

Run:  .venv/bin/python benchmarks/phantom_anatomy.py [--studies 8]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from vipet.io.volume import Grid, default_direction  # noqa: E402
from vipet.phantom.anatomy import build_anatomy, sample_patient, tissue_values  # noqa: E402


def ct_grid() -> Grid:
    shape, pix = (275, 176, 176), 500.0 / 176
    origin = (-250.0 + pix / 2, -250.0 + pix / 2, 15.0 - (shape[0] - 1) * 4.0)
    return Grid(shape, (4.0, pix, pix), origin, default_direction())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=8)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    grid = ct_grid()
    warm = np.random.default_rng(999)
    tissue_values(build_anatomy(sample_patient(warm), grid, warm), warm)  # imports, caches
    build, values = [], []
    for seed in range(args.studies):
        rng = np.random.default_rng(seed)
        patient = sample_patient(rng)
        t0 = time.perf_counter()
        anatomy = build_anatomy(patient, grid, rng)
        t1 = time.perf_counter()
        tissue_values(anatomy, rng)
        build.append(t1 - t0)
        values.append(time.perf_counter() - t1)
    total = [a + b for a, b in zip(build, values, strict=True)]
    print(f"grid {grid.shape} (D, H, W), spacing {tuple(round(s, 2) for s in grid.spacing)} mm")
    for name, t in (("build_anatomy", build), ("tissue_values", values), ("both", total)):
        print(f"{name:14s} median {statistics.median(t):.3f} s   max {max(t):.3f} s")
    print("target: both <= ~0.8 s per study on one core")


if __name__ == "__main__":
    main()
