"""The PET-derived ROI mask (DOMAIN.md §1): where attention should go when a study has
no lesion mask.

Recipe: normalised PET > threshold; drop connected components under ``min_voxels``;
binary closing (``closing_iterations``); then dilate with a 3×3×3 structuring element
until the mask covers at least ``min_coverage`` of the volume, at most
``max_dilations`` times. The coverage floor keeps the alignment loss from chasing a
handful of voxels in a study with little uptake.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

_CUBE = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class RoiConfig:
    threshold: float = 0.5
    """On the normalised PET (model input scale, 0..1)."""
    min_voxels: int = 50
    """Connected components smaller than this are dropped (noise specks)."""
    closing_iterations: int = 2
    min_coverage: float = 0.12
    """Dilate until the mask covers at least this fraction of the volume..."""
    max_dilations: int = 5
    """...but at most this many times."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"roi.threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 <= self.min_coverage <= 1.0:
            raise ValueError(f"roi.min_coverage must be in [0, 1], got {self.min_coverage}")
        if self.min_voxels < 0 or self.closing_iterations < 0 or self.max_dilations < 0:
            raise ValueError("roi counts must be non-negative")


def remove_small_components(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """``mask`` without 26-connected components of fewer than ``min_voxels`` voxels."""
    if min_voxels <= 1 or not mask.any():
        return mask.astype(bool, copy=True)
    labels, n = ndimage.label(mask, structure=_CUBE)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels]


def pet_roi_mask(pet_normalised: np.ndarray, config: RoiConfig | None = None) -> np.ndarray:
    """(D, H, W) bool ROI from a (D, H, W) PET already scaled to 0..1."""
    cfg = config or RoiConfig()
    mask = remove_small_components(np.asarray(pet_normalised) > cfg.threshold, cfg.min_voxels)
    if cfg.closing_iterations and mask.any():
        # Pad so closing does not erode structures touching the border.
        pad = cfg.closing_iterations
        padded = np.pad(mask, pad)
        padded = ndimage.binary_closing(padded, structure=_CUBE, iterations=pad)
        mask = padded[pad:-pad, pad:-pad, pad:-pad]
    target = cfg.min_coverage * mask.size
    for _ in range(cfg.max_dilations):
        if mask.sum() >= target or not mask.any():
            break
        mask = ndimage.binary_dilation(mask, structure=_CUBE)
    return mask
