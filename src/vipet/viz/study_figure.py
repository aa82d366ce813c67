"""The picture `vipet inspect --png` writes: what a clinician looks at first.

Three panels on one whole-body display grid (canonical radiological orientation, PET
resampled onto it in world space): a fused coronal slice, a fused axial slice through
the hottest focus, and an inverted-grey PET maximum-intensity projection with the body
regions marked. Fused = CT in a soft-tissue-ish grey window under PET in a hot colour
map, PET transparent below a floor so the anatomy stays visible.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage

from vipet.io.atomic import atomic_output
from vipet.io.study import Study
from vipet.io.volume import Grid, Units
from vipet.preprocess.pipeline import resample_pair
from vipet.preprocess.regions import RegionBox, find_body
from vipet.preprocess.resample import resample_labels


def display_grid(study: Study, spacing_mm: float = 3.0, max_voxels: int = 12_000_000) -> Grid:
    """A canonical grid over the body's bounding box at about ``spacing_mm``."""
    body = find_body(study.ct)
    lo, hi = body.points[:, :2].min(axis=0) - 15, body.points[:, :2].max(axis=0) + 15
    box = RegionBox("body", body.z_top + 5, body.z_bottom - 5, (lo[0], hi[0]), (lo[1], hi[1]))
    size = np.array([box.height_mm, hi[1] - lo[1], hi[0] - lo[0]])
    step = max(spacing_mm, float(np.cbrt(size.prod() / max_voxels)))
    shape = tuple(int(max(8, round(s / step))) for s in size)
    return box.grid(shape)  # type: ignore[arg-type]


def _focus(
    pet: np.ndarray, lesion: np.ndarray | None, spacing: tuple[float, ...]
) -> tuple[int, int, int]:
    """Voxel to centre the slices on: the hottest lesion voxel when lesions are known,
    else the hottest *focal* uptake. Large hot structures — brain, heart, bladder, kidneys
    (connected uptake above 3 SUV of more than 100 mL) — are set aside with a margin,
    and a white top-hat (PET minus its grey opening with a ~40 mm element) then keeps
    foci smaller than the element."""
    if lesion is not None and lesion.any():
        score = np.where(lesion > 0, pet, -np.inf)
    else:
        voxel_ml = float(np.prod(spacing)) / 1000.0
        hot, n = ndimage.label(pet > 3.0)
        sizes = np.bincount(hot.ravel(), minlength=n + 1) * voxel_ml
        big = (sizes > 100.0)[hot]
        big[hot == 0] = False
        big = ndimage.binary_dilation(big, iterations=3)
        size = tuple(max(3, round(40.0 / s) | 1) for s in spacing)
        score = ndimage.white_tophat(pet, size=size)
        score[big] = -np.inf
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(score)), pet.shape))  # type: ignore[return-value]


def write_study_figure(study: Study, path: Path, regions: list[RegionBox] | None = None) -> Path:
    """Render the inspection figure of ``study`` to ``path`` (PNG); returns the path."""
    grid = display_grid(study)
    ct, pet = resample_pair(study, grid)
    lesion = (
        resample_labels(study.lesion_mask, grid).array if study.lesion_mask is not None else None
    )
    suv = pet.array
    is_suv = study.pet.units is Units.SUVBW
    vmax = 10.0 if is_suv else float(np.percentile(suv[suv > 0], 99.5)) if (suv > 0).any() else 1.0
    label = "SUVbw" if is_suv else f"PET ({study.pet.units.value})"
    fd, fh, _ = _focus(suv, lesion, grid.spacing)
    sz, sy, sx = grid.spacing

    fig, axes = plt.subplots(1, 3, figsize=(15, 8.5), gridspec_kw={"width_ratios": [1, 1.15, 1]})
    _fused(axes[0], ct.array[:, fh, :], suv[:, fh, :], vmax, aspect=sz / sx)
    axes[0].set_title(f"coronal, fused (row {fh})")
    im = _fused(axes[1], ct.array[fd], suv[fd], vmax, aspect=sy / sx)
    axes[1].set_title(f"axial, fused (z = {grid.index_to_world([fd, 0, 0])[2]:.0f} mm)")
    mip = suv.max(axis=1)
    axes[2].imshow(mip, cmap="gray_r", vmin=0, vmax=vmax, aspect=sz / sx, interpolation="bilinear")
    axes[2].set_title("PET MIP (coronal)")
    for box in regions or []:
        _mark_region(axes[2], grid, box)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(
            0.01,
            0.01,
            "R",
            color="w",
            transform=ax.transAxes,
            fontsize=11,
            weight="bold",
            bbox={"facecolor": "k", "alpha": 0.4, "pad": 1},
        )
    cbar = fig.colorbar(im, ax=axes[:2], fraction=0.025, pad=0.01)
    cbar.set_label(label)
    who = f"{study.id} — {study.layout}"
    if study.suv is not None:
        who += f" — SUV factor {study.suv.factor:.3g} ({study.suv.weight_kg:g} kg, "
        who += f"{study.suv.injected_dose_bq / 1e6:.0f} MBq, {study.suv.decay_correction})"
    fig.suptitle(who, fontsize=12)
    return _save(fig, path, dpi=90)


def _save(fig, path: Path, dpi: int) -> Path:
    try:
        with atomic_output(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def _fused(ax, ct: np.ndarray, pet: np.ndarray, vmax: float, aspect: float):
    ax.imshow(ct, cmap="gray", vmin=-160, vmax=240, aspect=aspect, interpolation="bilinear")
    shown = np.ma.masked_less(pet, 0.25 * vmax)  # liver/spleen (~2) stay grey
    return ax.imshow(
        shown, cmap="hot", vmin=0, vmax=vmax, alpha=0.6, aspect=aspect, interpolation="bilinear"
    )


def _mark_region(ax, grid: Grid, box: RegionBox) -> None:
    z0 = grid.origin[2]
    top = (z0 - box.z_top) / grid.spacing[0]
    bottom = (z0 - box.z_bottom) / grid.spacing[0]
    colour = {"head_neck": "tab:blue", "chest": "tab:green", "abdomen_pelvis": "tab:purple"}
    c = colour.get(box.name, "tab:orange")
    ax.axhspan(top, bottom, xmin=0.0, xmax=0.03, color=c, alpha=0.9)
    ax.axhline(top, color=c, lw=0.8, ls="--")
    ax.axhline(bottom, color=c, lw=0.8, ls="--")
    ax.text(0.04 * ax.get_xlim()[1], top + 4, box.name.replace("_", "–"), color=c, fontsize=9)


def write_region_figure(samples: list, path: Path) -> Path:  # list[RegionSample]
    """What the model sees: per region, the mid-coronal CT, PET and ROI/lesion outline."""
    n = len(samples)
    fig, axes = plt.subplots(3, n, figsize=(4.2 * n, 10), squeeze=False)
    for j, s in enumerate(samples):
        h = s.ct.shape[1] // 2
        if s.lesion is not None and s.lesion.any():
            h = int(np.argwhere(s.lesion > 0)[:, 1].mean())
        aspect = s.grid.spacing[0] / s.grid.spacing[2]
        axes[0, j].imshow(s.ct[:, h, :], cmap="gray", vmin=0.42, vmax=0.62, aspect=aspect)
        axes[0, j].set_title(f"{s.region}: CT (row {h})")
        axes[1, j].imshow(s.pet[:, h, :], cmap="gray_r", vmin=0, vmax=1, aspect=aspect)
        axes[1, j].set_title(f"PET (max {s.pet_max:.1f} {s.meta.get('pet_units', '')})")
        axes[2, j].imshow(s.pet.max(axis=1), cmap="gray_r", vmin=0, vmax=1, aspect=aspect)
        axes[2, j].contour(s.roi.any(axis=1), levels=[0.5], colors="tab:cyan", linewidths=0.8)
        if s.lesion is not None and s.lesion.any():
            axes[2, j].contour(
                (s.lesion > 0).any(axis=1), levels=[0.5], colors="tab:red", linewidths=1
            )
        axes[2, j].set_title("PET MIP, ROI (cyan), lesions (red)")
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{samples[0].study_id}: model-grid region samples {samples[0].ct.shape}")
    return _save(fig, path, dpi=80)
