"""World-space resampling: different grids must agree on where things are."""

from __future__ import annotations

import numpy as np
import pytest

from vipet.errors import GeometryError
from vipet.io.volume import Grid, Units, Volume, default_direction
from vipet.preprocess.resample import block_reduce, crop_box, resample_labels, resample_to_grid

CENTRE = np.array([12.0, -30.0, 45.0])  # LPS mm, deliberately off every grid's centre


def _sphere(grid: Grid, radius: float, value: float = 1.0) -> np.ndarray:
    """A ball of ``radius`` mm around CENTRE, peaked at the centre (1 − r²/R²) so the
    hottest voxel is well defined."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1)
    r = np.linalg.norm(grid.index_to_world(idx) - CENTRE, axis=-1)
    return (value * np.clip(1.0 - (r / radius) ** 2, 0.0, None)).astype(np.float32)


def _peak_world(vol: Volume) -> np.ndarray:
    """Intensity-weighted centroid of the sphere, in world mm."""
    a = vol.array.astype(np.float64)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in vol.shape], indexing="ij"), -1)
    c = (idx * a[..., None]).sum(axis=(0, 1, 2)) / a.sum()
    return vol.grid.index_to_world(c)


def _oblique_direction(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1.0]])
    return rot @ default_direction()


CT_GRID = Grid((60, 96, 96), (2.0, 1.2, 1.2), (-50.0, -80.0, -10.0))
PET_GRID = Grid((40, 40, 40), (3.3, 4.1, 4.1), (-70.5, -100.25, -25.0))
FLIPPED_PET = Grid(
    (40, 40, 40), (3.3, 4.1, 4.1), (90.0, 60.0, 110.0), -np.eye(3) @ default_direction()
)
OBLIQUE_PET = Grid((40, 44, 44), (3.0, 4.0, 4.0), (-60.0, -110.0, -20.0), _oblique_direction(20))


@pytest.mark.parametrize(
    "pet_grid", [PET_GRID, FLIPPED_PET, OBLIQUE_PET], ids=["shifted", "flipped", "oblique"]
)
def test_sphere_lands_on_same_voxel(pet_grid: Grid) -> None:
    ct = Volume.on_grid(_sphere(CT_GRID, 10.0, 300.0), CT_GRID, "CT", Units.HU)
    pet = Volume.on_grid(_sphere(pet_grid, 10.0, 8.0), pet_grid, "PT", Units.SUVBW)
    assert np.allclose(_peak_world(ct), CENTRE, atol=0.6)
    assert np.allclose(_peak_world(pet), CENTRE, atol=1.5)
    target = Grid((32, 48, 48), (2.5, 2.5, 2.5), (-40.0, -70.0, 0.0))
    ct_r = resample_to_grid(ct, target)
    pet_r = resample_to_grid(pet, target)
    expected = np.round(target.world_to_index(CENTRE)).astype(int)
    # The hottest voxel of both is the target voxel holding the sphere centre, and both
    # centroids sit on the true centre in world space.
    for vol in (ct_r, pet_r):
        peak = np.unravel_index(np.argmax(vol.array), target.shape)
        assert tuple(int(i) for i in peak) == tuple(expected)
    assert np.allclose(_peak_world(ct_r), CENTRE, atol=1.0)
    assert np.allclose(_peak_world(pet_r), CENTRE, atol=1.5)
    assert np.allclose(_peak_world(ct_r), _peak_world(pet_r), atol=1.5)


def test_resample_identity_grid_is_exact() -> None:
    arr = np.random.default_rng(0).normal(size=CT_GRID.shape).astype(np.float32)
    vol = Volume.on_grid(arr, CT_GRID, "CT", Units.HU)
    out = resample_to_grid(vol, CT_GRID, antialias=False)
    np.testing.assert_allclose(out.array, arr, atol=1e-5)


def test_outside_source_takes_fill() -> None:
    vol = Volume.on_grid(np.zeros(CT_GRID.shape, np.float32), CT_GRID, "CT", Units.HU)
    far = Grid((4, 4, 4), (1.0, 1.0, 1.0), (5000.0, 5000.0, 5000.0))
    assert crop_box(CT_GRID, far) is None
    out = resample_to_grid(vol, far, fill=-1024.0)
    assert np.all(out.array == -1024.0)


def test_block_mean_keeps_geometry_and_means() -> None:
    arr = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
    vol = Volume(arr, (1.0, 2.0, 3.0), (10.0, 20.0, 30.0))
    out = block_reduce(vol, (2, 3, 4))
    assert out.shape == (2, 2, 2)
    assert out.array[0, 0, 0] == pytest.approx(arr[:2, :3, :4].mean())
    # New voxel 0's centre is the centre of the first block in world space.
    expected = vol.grid.index_to_world(np.array([0.5, 1.0, 1.5]))
    np.testing.assert_allclose(out.grid.index_to_world(np.zeros(3)), expected)


def test_small_lesion_survives_label_downsampling() -> None:
    labels = np.zeros(CT_GRID.shape, np.int16)
    labels[30, 48, 48] = 3  # a one-voxel lesion
    mask = Volume.on_grid(labels, CT_GRID, "SEG", Units.LABEL)
    coarse = Grid((15, 24, 24), (8.0, 4.8, 4.8), CT_GRID.index_to_world(np.array([1.5, 1.5, 1.5])))
    out = resample_labels(mask, coarse)
    assert set(np.unique(out.array)) == {0, 3}


def test_labels_refuse_images() -> None:
    vol = Volume.on_grid(np.zeros(CT_GRID.shape, np.float32), CT_GRID, "CT", Units.HU)
    with pytest.raises(GeometryError, match="label"):
        resample_labels(vol, CT_GRID)


def test_max_downsampling_keeps_a_small_hot_spot_hot() -> None:
    arr = np.ones(CT_GRID.shape, np.float32)
    arr[30, 48, 48] = 9.0  # a one-voxel hot spot (SUV 9 in SUV 1 background)
    pet = Volume.on_grid(arr, CT_GRID, "PT", Units.SUVBW)
    coarse = Grid((15, 24, 24), (8.0, 4.8, 4.8), CT_GRID.index_to_world(np.array([1.5, 1.5, 1.5])))
    mean = resample_to_grid(pet, coarse).array.max()
    peak = resample_to_grid(pet, coarse, reduce="max").array.max()
    assert peak > 2 * mean and peak <= 9.0 + 1e-5
