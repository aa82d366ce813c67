"""Study → region samples: the preprocessing pipeline, driven by `PreprocessConfig`.

For each body region (head–neck, chest, abdomen–pelvis) the pipeline builds one target
grid in world space and samples CT, PET and the lesion mask onto it directly from their
native grids (see `resample`): PET and CT end on the same voxels however their spacing,
origin and extent differed, and no full-resolution common grid is materialised — which
is what makes a whole-body study take well under a second.

Then: CT HU window → [0, 1]; PET SUV clip and scale → [0, 1]; the PET-derived ROI mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vipet.io.study import Study
from vipet.io.volume import Grid, Units, Volume
from vipet.preprocess.intensity import PET_SCALINGS, scale_pet, window_hu
from vipet.preprocess.regions import RegionBox, RegionConfig, find_body, split_regions
from vipet.preprocess.resample import resample_labels, resample_to_grid
from vipet.preprocess.roi import RoiConfig, pet_roi_mask

PIPELINE_VERSION = "2"  # bump when outputs change for the same config (invalidates caches)

AIR_HU = -1024.0


@dataclass(frozen=True)
class CtConfig:
    window: tuple[float, float] = (-1000.0, 1000.0)
    """HU window mapped to [0, 1] (DOMAIN §6: [−1000, 1000]; [−150, 300] for soft tissue)."""

    def __post_init__(self) -> None:
        if not self.window[1] > self.window[0]:
            raise ValueError(f"ct.window must be (lo, hi) with hi > lo, got {self.window}")


@dataclass(frozen=True)
class PetConfig:
    units: str = "SUVbw"
    """Units the pipeline accepts for PET: "SUVbw" (refuses raw counts) or "raw"
    (ViMed-PET npz; then vmax is a raw value, the reference used 32767)."""
    scaling: str = "log"
    """"log" (log1p, keeps hot lesions apart without saturating) or "linear"."""
    vmax: float = 30.0
    """Value mapped to 1.0: SUV 30 by default (DOMAIN §6 clip [0, 30])."""
    downsample: str = "max"
    """Block filter when the model grid is coarser than the PET: "max" keeps each block's
    SUVmax, so a 10 mm lesion inside a 12 mm model slice stays as hot as it is (the
    report quotes SUVmax); "mean" averages it with its surroundings — on the phantom only
    one lesion in ten then outshines the region's 99th percentile."""

    def __post_init__(self) -> None:
        if self.downsample not in ("max", "mean"):
            raise ValueError(f"pet.downsample must be 'max' or 'mean', got {self.downsample!r}")
        if self.units not in (Units.SUVBW.value, Units.RAW.value):
            raise ValueError(f"pet.units must be 'SUVbw' or 'raw', got {self.units!r}")
        if self.scaling not in PET_SCALINGS:
            raise ValueError(
                f"unknown pet.scaling {self.scaling!r}; choose from {sorted(PET_SCALINGS)}"
            )
        if not self.vmax > 0:
            raise ValueError(f"pet.vmax must be positive, got {self.vmax}")


@dataclass(frozen=True)
class PreprocessConfig:
    grid: tuple[int, int, int] = (64, 96, 96)
    """Model grid per region, (D, H, W) voxels (cpu-small's: ~5.5 mm slices, ~3.5 mm
    pixels on the phantom; small non-avid nodes keep their CT contrast at this depth)."""
    ct: CtConfig = field(default_factory=CtConfig)
    pet: PetConfig = field(default_factory=PetConfig)
    regions: RegionConfig = field(default_factory=RegionConfig)
    roi: RoiConfig = field(default_factory=RoiConfig)
    antialias: bool = True
    """Block-average before sampling when the model grid is coarser than the source."""

    def __post_init__(self) -> None:
        if len(self.grid) != 3 or min(self.grid) < 4:
            raise ValueError(f"grid must be three sizes >= 4, got {self.grid}")


@dataclass(frozen=True, eq=False)
class RegionSample:
    """One body region ready for a model: CT, PET, ROI (and lesion labels) on one grid."""

    study_id: str
    region: str
    ct: np.ndarray  # (D, H, W) float32 in [0, 1]
    pet: np.ndarray  # (D, H, W) float32 in [0, 1]
    roi: np.ndarray  # (D, H, W) bool
    grid: Grid
    lesion: np.ndarray | None = None  # (D, H, W) integer labels, 0 = background
    pet_max: float = 0.0  # highest PET value in the region before scaling (SUV or raw)
    meta: dict[str, Any] = field(default_factory=dict)


def check_inputs(study: Study, config: PreprocessConfig) -> None:
    """Refuse units and values the pipeline cannot use, before any work is done."""
    study.ct.require_units(Units.HU, purpose="preprocessing")
    study.pet.require_units(
        Units(config.pet.units), purpose=f"preprocessing (pet.units={config.pet.units})"
    )
    study.ct.check_finite(str(study.source) if study.source else study.id)
    study.pet.check_finite(str(study.source) if study.source else study.id)


def region_boxes(study: Study, config: PreprocessConfig) -> tuple[list[RegionBox], str]:
    """The study's region boxes in world space, and how they were placed."""
    body = find_body(study.ct, config.regions.body_hu)
    return split_regions(body, config.regions, study.height_cm)


def preprocess_study(study: Study, config: PreprocessConfig | None = None) -> list[RegionSample]:
    """All region samples of ``study`` (head to foot)."""
    cfg = config or PreprocessConfig()
    check_inputs(study, cfg)
    boxes, basis = region_boxes(study, cfg)
    return [_region_sample(study, box, cfg, basis) for box in boxes]


def _region_sample(study: Study, box: RegionBox, cfg: PreprocessConfig, basis: str) -> RegionSample:
    grid = box.grid(cfg.grid)
    ct = resample_to_grid(study.ct, grid, order=1, fill=AIR_HU, antialias=cfg.antialias)
    pet = resample_to_grid(
        study.pet, grid, order=1, fill=0.0, antialias=cfg.antialias, reduce=cfg.pet.downsample
    )
    pet_scaled = scale_pet(pet.array, cfg.pet.scaling, cfg.pet.vmax)
    lesion = None
    if study.lesion_mask is not None:
        lesion = resample_labels(study.lesion_mask, grid).array
    return RegionSample(
        study_id=study.id,
        region=box.name,
        ct=window_hu(ct.array, *cfg.ct.window),
        pet=pet_scaled,
        roi=pet_roi_mask(pet_scaled, cfg.roi),
        grid=grid,
        lesion=lesion,
        pet_max=float(pet.array.max()),
        meta={
            "z_range_mm": [box.z_top, box.z_bottom],
            "own_slices": list(box.own_slices(cfg.grid[0])),
            "x_range_mm": list(box.x_range),
            "y_range_mm": list(box.y_range),
            "placed_by": basis,
            "pet_units": study.pet.units.value,
        },
    )


def resample_pair(study: Study, grid: Grid) -> tuple[Volume, Volume]:
    """CT and PET of ``study`` on one grid (for display and analysis), values unscaled."""
    ct = resample_to_grid(study.ct, grid, order=1, fill=AIR_HU)
    pet = resample_to_grid(study.pet, grid, order=1, fill=0.0)
    return ct, pet
