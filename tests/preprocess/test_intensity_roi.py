"""Intensity transforms and the PET-derived ROI mask (DOMAIN.md §1)."""

from __future__ import annotations

import numpy as np
import pytest

from vipet.preprocess.intensity import scale_pet, window_hu
from vipet.preprocess.roi import RoiConfig, pet_roi_mask, remove_small_components


def test_window_hu_maps_window_to_unit_range() -> None:
    x = np.array([-2000.0, -1000.0, 0.0, 500.0, 1000.0, 3000.0])
    np.testing.assert_allclose(window_hu(x, -1000, 1000), [0, 0, 0.5, 0.75, 1, 1])
    with pytest.raises(ValueError, match="hi > lo"):
        window_hu(x, 100, 100)


def test_pet_scalings() -> None:
    suv = np.array([-1.0, 0.0, 15.0, 30.0, 60.0])
    np.testing.assert_allclose(scale_pet(suv, "linear", 30.0), [0, 0, 0.5, 1, 1])
    log = scale_pet(suv, "log", 30.0)
    np.testing.assert_allclose(log[[0, 1, 3, 4]], [0, 0, 1, 1])
    # 0.5 on the log scale is SUV sqrt(31) - 1 ≈ 4.57.
    assert scale_pet(np.array([np.sqrt(31.0) - 1.0]), "log", 30.0)[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="choose from"):
        scale_pet(suv, "gamma", 30.0)


def test_small_components_are_dropped() -> None:
    mask = np.zeros((20, 20, 20), bool)
    mask[2:7, 2:7, 2:7] = True  # 125 voxels: kept
    mask[15:17, 15:17, 15:17] = True  # 8 voxels: dropped
    out = remove_small_components(mask, 50)
    assert out[4, 4, 4] and not out[15, 15, 15]
    assert out.sum() == 125


def test_roi_follows_recipe() -> None:
    pet = np.zeros((30, 40, 40), np.float32)
    pet[10:15, 10:15, 10:15] = 0.9  # 125 hot voxels
    pet[25, 35, 35] = 0.95  # a one-voxel speck
    cfg = RoiConfig()
    roi = pet_roi_mask(pet, cfg)
    assert roi[12, 12, 12] and not roi[25, 35, 35]
    # 5 dilations of a 5-voxel cube with a 3x3x3 element: a 15-voxel cube, below 12 %.
    assert roi.sum() == 15**3
    # With a low coverage floor dilation stops as soon as it is met.
    few = pet_roi_mask(pet, RoiConfig(min_coverage=0.0))
    assert few.sum() == 125


def test_roi_closing_fills_gaps() -> None:
    pet = np.zeros((20, 20, 20), np.float32)
    pet[5:15, 5:15, 5:15] = 1.0
    pet[10, 10, 10] = 0.0  # a hole inside the hot region
    roi = pet_roi_mask(pet, RoiConfig(max_dilations=0))
    assert roi[10, 10, 10]


def test_roi_empty_pet_gives_empty_mask() -> None:
    assert not pet_roi_mask(np.zeros((8, 8, 8), np.float32)).any()


def test_roi_config_validates() -> None:
    with pytest.raises(ValueError, match="threshold"):
        RoiConfig(threshold=2.0)
