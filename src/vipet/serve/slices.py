"""Slices of a study as PNG, the way a PET/CT reader shows them.

The study is resampled once onto the whole-body display grid of
`vipet.viz.study_figure.display_grid` (isotropic voxels, canonical orientation), so every
axis is drawn with square pixels. A slice is the CT in a window (width/level presets, or
any pair) with the PET over it in the "hot" colour map from 0 to ``suv_max``, transparent
below a quarter of it (liver and blood pool stay grey) and at ``pet_opacity`` above; an
attention map, when given, is drawn in cyan over both. The MIP is the PET's maximum
along the anterior–posterior axis, inverted grey.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from PIL import Image

from vipet.io.study import Study
from vipet.io.volume import Grid, Units
from vipet.preprocess.pipeline import resample_pair
from vipet.viz.study_figure import display_grid

WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "mediastinum": (50.0, 350.0),
    "liver": (60.0, 160.0),
}
"""CT window presets: (level, width) in HU."""
AXES = ("axial", "coronal", "sagittal")
_HOT = (colormaps["hot"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


@dataclass
class Display:
    grid: Grid
    ct: np.ndarray  # HU, (D, H, W)
    pet: np.ndarray  # SUV (or the PET's units)
    pet_units: str

    @classmethod
    def of(cls, study: Study, spacing_mm: float = 3.0) -> Display:
        grid = display_grid(study, spacing_mm=spacing_mm)
        ct, pet = resample_pair(study, grid)
        return cls(
            grid, ct.array.astype(np.float32), pet.array.astype(np.float32), study.pet.units.value
        )

    @property
    def default_suv_max(self) -> float:
        if self.pet_units == Units.SUVBW.value:
            return 10.0
        positive = self.pet[self.pet > 0]
        return float(np.percentile(positive, 99.5)) if positive.size else 1.0

    def size(self, axis: str) -> int:
        return self.grid.shape[AXES.index(_check_axis(axis))]


def _check_axis(axis: str) -> str:
    if axis not in AXES:
        raise ValueError(f"axis must be one of {list(AXES)}, got {axis!r}")
    return axis


def take(volume: np.ndarray, axis: str, index: int) -> np.ndarray:
    """One 2D slice, oriented for display (head up on coronal and sagittal)."""
    i = AXES.index(_check_axis(axis))
    n = volume.shape[i]
    if not 0 <= index < n:
        raise IndexError(f"{axis} slice {index} is outside 0..{n - 1}")
    return np.take(volume, index, axis=i)


def window(level_width: tuple[float, float], ct: np.ndarray) -> np.ndarray:
    level, width = level_width
    lo = level - width / 2.0
    return np.clip((ct - lo) / max(width, 1e-6), 0.0, 1.0)


def render_slice(
    display: Display,
    axis: str,
    index: int,
    level_width: tuple[float, float] = WINDOWS["soft_tissue"],
    pet_opacity: float = 0.6,
    suv_max: float | None = None,
    attention: np.ndarray | None = None,
) -> bytes:
    """PNG bytes of one fused slice (``attention``: a map on the display grid, [0, 1])."""
    if not 0.0 <= pet_opacity <= 1.0:
        raise ValueError(f"pet_opacity must be in [0, 1], got {pet_opacity}")
    vmax = display.default_suv_max if suv_max is None else float(suv_max)
    if vmax <= 0:
        raise ValueError(f"suv_max must be positive, got {vmax}")
    grey = window(level_width, take(display.ct, axis, index))
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    pet = take(display.pet, axis, index) / vmax
    lut = _HOT[np.clip((pet * 255).astype(int), 0, 255)] / 255.0
    alpha = np.where(pet >= 0.25, pet_opacity, 0.0)[..., None]
    rgb = rgb * (1 - alpha) + lut * alpha
    if attention is not None:
        a = np.clip(take(attention, axis, index), 0.0, 1.0)[..., None] * 0.55
        rgb = rgb * (1 - a) + np.array([0.0, 1.0, 1.0]) * a
    return _png(rgb)


def render_mip(display: Display, suv_max: float | None = None) -> bytes:
    vmax = display.default_suv_max if suv_max is None else float(suv_max)
    mip = np.clip(display.pet.max(axis=1) / max(vmax, 1e-6), 0.0, 1.0)
    grey = 1.0 - mip
    return _png(np.repeat(grey[..., None], 3, axis=-1))


def _png(rgb: np.ndarray) -> bytes:
    img = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()
