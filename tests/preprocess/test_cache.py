"""The preprocessed-sample cache: keys, reuse, atomic shards, failures, parallel build."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.helpers import small_study, write_autopet
from vipet.config import load_config
from vipet.errors import InputError
from vipet.io import find_studies
from vipet.preprocess import PreprocessConfig, preprocess_study
from vipet.preprocess.cache import MANIFEST, build_cache, ensure_cache, load_shard

CFG = PreprocessConfig(grid=(8, 32, 32))


@pytest.fixture()
def dataset(tmp_path):
    root = tmp_path / "autopet"
    for i in range(3):
        write_autopet(root / f"PETCT_{i}" / "study_a", small_study(seed=i, study_id=f"s{i}"))
    return root


def test_build_reuse_and_invalidate(dataset, tmp_path) -> None:
    refs = find_studies(dataset)
    assert [r.name for r in refs] == [f"PETCT_{i}/study_a" for i in range(3)]
    out = tmp_path / "cache"
    first = build_cache(refs, out, CFG, workers=2, progress=False)
    assert (first.built, first.reused, first.failed) == (3, 0, [])
    shards = sorted((out / "shards").glob("*.npz"))
    assert len(shards) == 3
    assert not list((out / "shards").glob("*.tmp"))  # no temporary leftovers

    again = build_cache(refs, out, CFG, workers=2, progress=False)
    assert (again.built, again.reused) == (0, 3)

    other = load_config(PreprocessConfig, overrides=["grid=[8,32,32]", "ct.window=[-150,300]"])
    changed = build_cache(refs, out, other, progress=False)
    assert changed.built == 3  # a new config is a new key

    # Touching one study's file invalidates that study only.
    suv = dataset / "PETCT_1" / "study_a" / "SUV.nii.gz"
    suv.write_bytes(suv.read_bytes())
    st = suv.stat()
    os.utime(suv, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert build_cache(refs, out, CFG, progress=False).built == 1


def test_shard_round_trip(dataset, tmp_path) -> None:
    refs = find_studies(dataset)[:1]
    out = tmp_path / "cache"
    build_cache(refs, out, CFG, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["studies"][0]
    assert entry["regions"] == ["head_neck", "chest", "abdomen_pelvis"]
    samples = load_shard(out / entry["shard"])
    direct = preprocess_study(refs[0].load(), CFG)
    for a, b in zip(samples, direct, strict=True):
        assert a.region == b.region and a.grid.same_as(b.grid)
        np.testing.assert_allclose(a.ct, b.ct, atol=1e-3)  # stored as float16
        np.testing.assert_allclose(a.pet, b.pet, atol=1e-3)
        np.testing.assert_array_equal(a.roi, b.roi)
        np.testing.assert_array_equal(a.lesion, b.lesion)
        assert a.meta["own_slices"] == pytest.approx(b.meta["own_slices"])  # zones survive


def test_bad_study_is_recorded_not_fatal(dataset, tmp_path) -> None:
    (dataset / "PETCT_2" / "study_a" / "SUV.nii.gz").write_bytes(b"not a nifti at all")
    report = build_cache(find_studies(dataset), tmp_path / "cache", CFG, progress=False)
    assert report.built == 2
    assert len(report.failed) == 1 and report.failed[0]["study"] == "PETCT_2/study_a"
    assert "SUV.nii.gz" in report.failed[0]["error"]
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["failed"] == report.failed


def test_corrupt_shard_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"junk")
    with pytest.raises(InputError, match=r"x\.npz"):
        load_shard(bad)


def test_ensure_cache_reuses_a_cache_on_the_same_grid_only(tmp_path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / MANIFEST).write_text(json.dumps({"config": {"grid": [8, 32, 32]}, "studies": []}))
    assert ensure_cache(tmp_path / "no_data_needed", cache, (8, 32, 32)) is None
    with pytest.raises(InputError, match="grid"):
        ensure_cache(tmp_path / "no_data_needed", cache, (32, 128, 128))
