"""Preprocessing benchmark: ViPET's pipeline vs a plain MONAI dictionary-transform pipeline.

One whole-body-sized study (CT 512×512×300 int16, PET 192×192×300 float32, different
grids) → 3 region samples (head–neck, chest, abdomen–pelvis) of 64×96×96: CT window,
PET scaling, lesion labels and the ROI mask, on one core. Both pipelines run in this one
process, one after the other, on the same study; the script prints seconds and peak
memory per study for each and their ratio, and checks that they produced the same
samples (so the comparison is of the same work).

The MONAI pipeline is what one writes with MONAI's transforms: PET resampled onto the CT
grid (`ResampleToMatchd`), intensity scaling (`ScaleIntensityRanged`, `Lambdad`), then
per region a crop (`SpatialCropd`) and a resize (`Resized`, mode "area", the same box
anti-alias ViPET uses). Region boxes and the ROI mask come from the same ViPET functions
in both, since MONAI has no equivalent.

Run:  .venv/bin/python benchmarks/preprocess.py [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import os

# One core, set before numpy/torch load their thread pools.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vipet.io.example import make_example_study  # noqa: E402
from vipet.io.study import Study  # noqa: E402
from vipet.preprocess import PreprocessConfig, RegionSample, preprocess_study  # noqa: E402
from vipet.preprocess.pipeline import region_boxes  # noqa: E402
from vipet.preprocess.roi import pet_roi_mask  # noqa: E402


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS since the last reset) in MB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def reset_peak() -> None:
    """Reset the kernel's peak-RSS counter so each pipeline's peak is its own."""
    Path("/proc/self/clear_refs").write_text("5")


def monai_pipeline(study: Study, cfg: PreprocessConfig) -> list[dict[str, np.ndarray]]:
    from monai.data import MetaTensor
    from monai.transforms import (
        Compose,
        Lambdad,
        ResampleToMatchd,
        Resized,
        ScaleIntensityRanged,
        SpatialCropd,
    )

    lo, hi = cfg.ct.window
    vmax = cfg.pet.vmax
    data = {
        "ct": MetaTensor(
            torch.from_numpy(study.ct.array[None].astype(np.float32)),
            affine=torch.from_numpy(study.ct.affine),
        ),
        "pet": MetaTensor(
            torch.from_numpy(study.pet.array[None]), affine=torch.from_numpy(study.pet.affine)
        ),
        "lesion": MetaTensor(
            torch.from_numpy(study.lesion_mask.array[None].astype(np.float32)),
            affine=torch.from_numpy(study.lesion_mask.affine),
        ),
    }
    whole = Compose(
        [
            ResampleToMatchd(keys=["pet"], key_dst="ct", mode="bilinear", padding_mode="zeros"),
            ScaleIntensityRanged(keys=["ct"], a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True),
            Lambdad(keys=["pet"], func=lambda x: torch.log1p(x.clamp(0, vmax)) / np.log1p(vmax)),
        ]
    )
    data = whole(data)
    boxes, _ = region_boxes(study, cfg)
    out = []
    for box in boxes:
        start, end = _ct_index_box(study, box)
        region = Compose(
            [
                SpatialCropd(keys=["ct", "pet", "lesion"], roi_start=start, roi_end=end),
                Resized(keys=["ct", "pet"], spatial_size=cfg.grid, mode="area"),
                Resized(keys=["lesion"], spatial_size=cfg.grid, mode="nearest"),
            ]
        )(dict(data))
        # ViPET's region grid runs head→foot; the CT here runs foot→head.
        ct, pet, lesion = (region[k][0].flip(0).numpy() for k in ("ct", "pet", "lesion"))
        out.append({"ct": ct, "pet": pet, "lesion": lesion, "roi": pet_roi_mask(pet, cfg.roi)})
    return out


def _ct_index_box(study: Study, box) -> tuple[list[int], list[int]]:
    grid = study.ct.grid
    corners = np.array(
        [[x, y, z] for x in box.x_range for y in box.y_range for z in (box.z_top, box.z_bottom)]
    )
    idx = grid.world_to_index(corners)
    start = np.clip(np.round(idx.min(axis=0) + 0.5).astype(int), 0, np.asarray(grid.shape))
    end = np.clip(np.round(idx.max(axis=0) + 0.5).astype(int), 0, np.asarray(grid.shape))
    return start.tolist(), end.tolist()


def timed(fn, repeats: int) -> tuple[list[float], float, object]:
    """Seconds per run, peak RSS above the starting RSS (MB), and the last result."""
    base, _ = rss_mb()
    reset_peak()
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    _, peak = rss_mb()
    return times, peak - base, result


def agreement(vipet: list[RegionSample], monai: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Mean absolute difference of the scaled CT and PET between the two pipelines."""
    ct = [float(np.abs(v.ct - m["ct"]).mean()) for v, m in zip(vipet, monai, strict=True)]
    pet = [float(np.abs(v.pet - m["pet"]).mean()) for v, m in zip(vipet, monai, strict=True)]
    return {"ct_mean_abs_diff": max(ct), "pet_mean_abs_diff": max(pet)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)

    print("building a whole-body study (CT 512x512x300 int16, PET 192x192x300) ...", flush=True)
    study = make_example_study(ct_shape=(300, 512, 512), pet_shape=(300, 192, 192), slice_mm=3.0)
    cfg = PreprocessConfig()  # 3 regions x 64x96x96
    preprocess_study(study, cfg)  # warm-up: imports, page faults
    monai_pipeline(study, cfg)

    v_times, v_mem, v_out = timed(lambda: preprocess_study(study, cfg), args.repeats)
    m_times, m_mem, m_out = timed(lambda: monai_pipeline(study, cfg), args.repeats)
    v_s, m_s = statistics.median(v_times), statistics.median(m_times)
    agree = agreement(v_out, m_out)

    print(
        f"\nmachine: {platform.processor() or platform.machine()}, 1 core, torch {torch.__version__}"
    )
    print(f"{'pipeline':10s} {'s/study (median)':>17s} {'runs':>24s} {'peak MB':>9s}")
    for name, times, mem, med in (("vipet", v_times, v_mem, v_s), ("monai", m_times, m_mem, m_s)):
        runs = " ".join(f"{t:.2f}" for t in times)
        print(f"{name:10s} {med:17.3f} {runs:>24s} {mem:9.0f}")
    print(
        f"ratio monai/vipet: {m_s / v_s:.2f}x (vipet target: <= 2 s/study and >= 1.5x faster than MONAI)"
    )
    print(
        f"agreement (max over regions): CT mean |diff| {agree['ct_mean_abs_diff']:.4f}, "
        f"PET mean |diff| {agree['pet_mean_abs_diff']:.4f} (scaled 0..1 units)"
    )
    result = {
        "study": {
            "ct": list(study.ct.shape),
            "pet": list(study.pet.shape),
            "regions": len(v_out),
            "grid": list(cfg.grid),
        },
        "vipet": {"seconds": v_times, "median_s": v_s, "peak_mb_above_baseline": v_mem},
        "monai": {"seconds": m_times, "median_s": m_s, "peak_mb_above_baseline": m_mem},
        "ratio_monai_over_vipet": m_s / v_s,
        "agreement": agree,
        "threads": 1,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
