"""The study → region-sample pipeline, on the geometric example study."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from vipet.config import load_config
from vipet.errors import ConfigError, GeometryError, UnitsError
from vipet.io.example import make_example_study
from vipet.io.volume import Units
from vipet.preprocess import PreprocessConfig, preprocess_study
from vipet.preprocess.regions import RegionBox, RegionConfig, find_body, split_regions


@pytest.fixture(scope="module")
def study():
    return make_example_study(ct_shape=(100, 128, 128), pet_shape=(75, 64, 64), slice_mm=9.0)


def test_three_regions_on_model_grid(study) -> None:
    samples = preprocess_study(study, PreprocessConfig(grid=(16, 48, 48)))
    assert [s.region for s in samples] == ["head_neck", "chest", "abdomen_pelvis"]
    for s in samples:
        assert s.ct.shape == s.pet.shape == s.roi.shape == s.lesion.shape == (16, 48, 48)
        assert s.ct.dtype == np.float32 and s.ct.min() >= 0.0 and s.ct.max() <= 1.0
        assert s.pet.min() >= 0.0 and s.pet.max() <= 1.0
        assert s.roi.dtype == bool
    # Neighbouring regions overlap in z by the configured 60 mm.
    for a, b in itertools.pairwise(samples):
        assert a.meta["z_range_mm"][1] == pytest.approx(b.meta["z_range_mm"][0] - 60.0)


def test_lesions_land_in_their_regions(study) -> None:
    samples = {s.region: s for s in preprocess_study(study, PreprocessConfig(grid=(16, 48, 48)))}
    # Example lesions: 1 lung mass and 2 mediastinal node in the chest, 3 liver (upper
    # abdomen, inside the chest/abdomen overlap), 4 cervical node in the head–neck.
    assert 4 in samples["head_neck"].lesion
    assert {1, 2} <= set(np.unique(samples["chest"].lesion))
    assert 3 in samples["abdomen_pelvis"].lesion
    # PET and lesion labels agree: the lesion is hot on the resampled PET (its max; the
    # label mask is deliberately not thinner than a model voxel, so its mean is diluted).
    chest = samples["chest"]
    soft = chest.pet[(chest.lesion == 0) & (chest.ct > 0.4)]
    assert chest.pet[chest.lesion == 1].max() > 2 * soft.mean()


def test_regions_from_extent_without_height(study) -> None:
    body = find_body(study.ct)
    _, basis_h = split_regions(body, RegionConfig(), 170.0)
    by_extent, basis_e = split_regions(body, RegionConfig(), None)
    assert basis_h.startswith("height") and basis_e.startswith("body extent")
    assert len(by_extent) == 3
    assert by_extent[0].z_top == pytest.approx(body.z_top)
    assert by_extent[-1].z_bottom == pytest.approx(body.z_bottom)


def test_own_slices_of_a_box() -> None:
    box = RegionBox("chest", 100.0, 0.0, (0.0, 1.0), (0.0, 1.0), own_top=90.0, own_bottom=30.0)
    assert box.own_slices(10) == pytest.approx((1.0, 7.0))  # 10 mm slices from the top
    assert box.own_slices(20) == pytest.approx((2.0, 14.0))
    assert replace(box, own_top=None, own_bottom=None).own_slices(8) == (0.0, 8.0)
    assert replace(box, own_top=120.0, own_bottom=-10.0).own_slices(10) == (0.0, 10.0)


@pytest.mark.parametrize("height_cm", [170.0, None])
def test_own_parts_tile_the_body_without_overlap(study, height_cm) -> None:
    boxes, _ = split_regions(find_body(study.ct), RegionConfig(), height_cm)
    assert len(boxes) == 3
    assert boxes[0].own_top == boxes[0].z_top and boxes[-1].own_bottom == boxes[-1].z_bottom
    for box in boxes:
        assert box.z_bottom <= box.own_bottom < box.own_top <= box.z_top
    for a, b in itertools.pairwise(boxes):
        # one boundary between neighbours, the 60 mm overlap split evenly around it
        assert a.own_bottom == pytest.approx(b.own_top)
        assert a.own_bottom - a.z_bottom == pytest.approx(30.0)
        assert b.z_top - b.own_top == pytest.approx(30.0)


def test_samples_record_their_own_slices(study) -> None:
    depth = 16
    samples = preprocess_study(study, PreprocessConfig(grid=(depth, 48, 48)))
    zones = []
    for s in samples:
        lo, hi = s.meta["own_slices"]
        top, bottom = s.meta["z_range_mm"]
        mm = (top - bottom) / depth
        zones.append((top - lo * mm, top - hi * mm))  # back in world mm
        assert 0.0 <= lo < hi <= depth
    hn, chest, abdomen = (s.meta["own_slices"] for s in samples)
    assert hn[0] == 0.0 and abdomen[1] == depth
    assert hn[1] < depth and chest[0] > 0.0 and chest[1] < depth and abdomen[0] > 0.0
    for a, b in itertools.pairwise(zones):  # where one region's own part ends, the next begins
        assert a[1] == pytest.approx(b[0])


def test_raw_pet_refused_by_suv_config(study) -> None:
    raw = study.replace(pet=study.pet.with_array(study.pet.array * 1000, units=Units.RAW))
    with pytest.raises(UnitsError, match="SUVbw"):
        preprocess_study(raw)
    cfg = load_config(
        PreprocessConfig, overrides=["pet.units=raw", "pet.vmax=30000", "grid=[8,32,32]"]
    )
    assert len(preprocess_study(raw, cfg)) == 3


def test_nan_pet_refused(study) -> None:
    bad = study.pet.array.copy()
    bad[3, 3, 3] = np.nan
    with pytest.raises(GeometryError, match="NaN"):
        preprocess_study(study.replace(pet=study.pet.with_array(bad)))


def test_config_overrides_and_errors(tmp_path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("grid: [8, 32, 32]\nct:\n  window: [-150, 300]\n")
    cfg = load_config(PreprocessConfig, path, ["regions.overlap_mm=40"])
    assert cfg.grid == (8, 32, 32) and cfg.ct.window == (-150.0, 300.0)
    assert cfg.regions.overlap_mm == 40.0
    with pytest.raises(ConfigError, match=r"unknown config key 'ct\.windw'"):
        load_config(PreprocessConfig, overrides=["ct.windw=[0,1]"])
    with pytest.raises(ConfigError, match=r"pet\.scaling"):
        load_config(PreprocessConfig, overrides=["pet.scaling=gamma"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(PreprocessConfig, tmp_path / "missing.yaml")


def test_shipped_configs_load() -> None:
    from pathlib import Path

    configs = Path(__file__).resolve().parents[2] / "configs"
    # The documented default file must say what the code's defaults are.
    assert load_config(PreprocessConfig, configs / "preprocess.yaml") == PreprocessConfig()
    vimed = load_config(PreprocessConfig, configs / "preprocess-vimed.yaml")
    assert vimed.pet.units == "raw" and vimed.pet.vmax == 32767.0
