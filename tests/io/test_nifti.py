"""NIfTI volumes and the AutoPET / nnU-Net / NIfTI-pair layouts."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vipet.errors import GeometryError, InputError, LayoutError
from vipet.io.nifti import (
    AUTOPET,
    NIFTI_PAIR,
    NNUNET,
    read_nifti_volume,
    write_nifti_volume,
)
from vipet.io.study import LoadOptions
from vipet.io.volume import Units, Volume, default_direction


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _rotation_z(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """A NIfTI file written directly with nibabel, as other tools would."""
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _assert_same_geometry(a: Volume, b: Volume) -> None:
    np.testing.assert_allclose(a.spacing, b.spacing, atol=1e-5)
    np.testing.assert_allclose(a.origin, b.origin, atol=1e-5)
    np.testing.assert_allclose(a.direction, b.direction, atol=1e-5)


# --------------------------------------------------------------------------- volumes

OBLIQUE_FLIPPED = _rotation_z(30.0) @ np.array([[0, 0, 1], [0, -1, 0], [-1, 0, 0]], float)


@pytest.mark.parametrize(
    "direction",
    [default_direction(), OBLIQUE_FLIPPED, np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]], float)],
    ids=["axial", "oblique-flipped", "permuted"],
)
def test_round_trip_keeps_array_and_geometry(
    tmp_path: Path, rng: np.random.Generator, direction: np.ndarray
) -> None:
    vol = Volume(
        rng.normal(size=(5, 6, 7)).astype(np.float32),
        spacing=(3.0, 2.5, 1.25),
        origin=(-120.5, 33.25, 410.0),
        direction=direction,
        modality="PT",
        units=Units.SUVBW,
    )
    path = tmp_path / "pet.nii.gz"
    write_nifti_volume(vol, path)
    back = read_nifti_volume(path, "PT", Units.SUVBW)
    np.testing.assert_array_equal(back.array, vol.array)
    _assert_same_geometry(back, vol)
    assert back.units is Units.SUVBW and back.modality == "PT"
    assert [p.name for p in tmp_path.iterdir()] == ["pet.nii.gz"]  # no temp file left


def test_round_trip_label_mask(tmp_path: Path, rng: np.random.Generator) -> None:
    mask = Volume((rng.random((4, 5, 6)) > 0.7).astype(np.uint8), (3.0, 2.0, 2.0), units="label")
    write_nifti_volume(mask, tmp_path / "seg.nii")
    back = read_nifti_volume(tmp_path / "seg.nii", "SEG", Units.LABEL)
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, mask.array)


def test_non_ras_file_converted_by_hand(tmp_path: Path, rng: np.random.Generator) -> None:
    # An LAS-style file whose first voxel axis runs along -x, with a rotation mixing j/k.
    affine = np.array(
        [
            [-2.0, 0.0, 0.0, 90.0],
            [0.0, 0.0, -3.0, 120.0],
            [0.0, 1.5, 0.0, -60.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    data = rng.normal(size=(4, 5, 6)).astype(np.float32)  # (i, j, k)
    vol = read_nifti_volume(_save(tmp_path / "x.nii.gz", data, affine), "CT", Units.HU)
    assert vol.shape == (6, 5, 4)  # (k, j, i)
    i, j, k = 3, 1, 4
    assert vol.array[k, j, i] == data[i, j, k]
    ras = affine @ np.array([i, j, k, 1.0])
    lps_by_hand = np.array([-ras[0], -ras[1], ras[2]])
    np.testing.assert_allclose(vol.grid.index_to_world(np.array([k, j, i])), lps_by_hand)
    np.testing.assert_allclose(vol.spacing, (3.0, 1.5, 2.0))
    np.testing.assert_allclose(vol.origin, (-90.0, -120.0, -60.0))


def test_scaling_is_applied(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.full((2, 3, 4), 10, np.int16), np.eye(4))
    img.header.set_slope_inter(0.5, -1.0)
    nib.save(img, str(tmp_path / "s.nii.gz"))
    vol = read_nifti_volume(tmp_path / "s.nii.gz", "PT", Units.SUVBW)
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, 4.0)


def test_singleton_fourth_dimension_is_accepted(tmp_path: Path) -> None:
    path = _save(tmp_path / "v.nii.gz", np.zeros((3, 4, 5, 1), np.float32), np.eye(4))
    assert read_nifti_volume(path, "CT", Units.HU).shape == (5, 4, 3)


@pytest.mark.parametrize("shape", [(3, 4, 5, 2), (3, 4)], ids=["4d", "2d"])
def test_non_3d_is_refused(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = _save(tmp_path / "v.nii.gz", np.zeros(shape, np.float32), np.eye(4))
    with pytest.raises(InputError, match=r"v\.nii\.gz.*3D"):
        read_nifti_volume(path, "CT", Units.HU)


def test_nan_voxels_are_refused(tmp_path: Path) -> None:
    data = np.ones((3, 4, 5), np.float32)
    data[1, 2, 3] = np.nan
    path = _save(tmp_path / "pet.nii.gz", data, np.eye(4))
    with pytest.raises(GeometryError, match=r"pet\.nii\.gz.*NaN"):
        read_nifti_volume(path, "PT", Units.SUVBW)


def test_degenerate_affine_is_refused(tmp_path: Path) -> None:
    # Set the sform by hand: nibabel refuses to build a qform from a singular affine.
    header = nib.Nifti1Header()
    header.set_sform(np.diag([2.0, 2.0, 0.0, 1.0]), code=1)
    path = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), None, header), str(path))
    with pytest.raises(GeometryError, match=r"flat\.nii\.gz.*degenerate"):
        read_nifti_volume(path, "CT", Units.HU)


def test_truncated_and_foreign_files_are_refused(tmp_path: Path) -> None:
    good = _save(tmp_path / "good.nii.gz", np.ones((20, 20, 20), np.float32), np.eye(4))
    blob = good.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(blob[: len(blob) // 2])
    (tmp_path / "text.nii.gz").write_bytes(b"not a nifti at all")
    with pytest.raises(InputError, match=r"cut\.nii\.gz"):
        read_nifti_volume(tmp_path / "cut.nii.gz", "CT", Units.HU)
    with pytest.raises(InputError, match=r"text\.nii\.gz"):
        read_nifti_volume(tmp_path / "text.nii.gz", "CT", Units.HU)
    with pytest.raises(InputError, match=r"absent\.nii\.gz"):
        read_nifti_volume(tmp_path / "absent.nii.gz", "CT", Units.HU)


def test_writer_refuses_other_suffixes(tmp_path: Path) -> None:
    vol = Volume(np.zeros((2, 2, 2), np.float32), (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="nii"):
        write_nifti_volume(vol, tmp_path / "v.npz")


# --------------------------------------------------------------------------- AutoPET

PET_AFFINE = np.array(
    [[-2.0, 0, 0, 350.0], [0, -2.0, 0, 300.0], [0, 0, 3.0, -900.0], [0, 0, 0, 1.0]]
)


def _autopet_study(root: Path, rng: np.random.Generator, seg: bool = True) -> Path:
    folder = root / "PETCT_0af7" / "08-12-2005-NA-PET-CT"
    folder.mkdir(parents=True)
    shape = (6, 5, 4)
    _save(folder / "CTres.nii.gz", rng.normal(0, 100, shape).astype(np.float32), PET_AFFINE)
    _save(folder / "SUV.nii.gz", rng.gamma(2.0, 1.0, shape).astype(np.float32), PET_AFFINE)
    if seg:
        mask = np.zeros(shape, np.uint8)
        mask[2:4, 1:3, 1:3] = 1
        _save(folder / "SEG.nii.gz", mask, PET_AFFINE)
    return folder


def test_autopet_study_with_lesion_mask(tmp_path: Path, rng: np.random.Generator) -> None:
    folder = _autopet_study(tmp_path, rng)
    assert AUTOPET.detect(folder)
    study = AUTOPET.load(folder, LoadOptions())
    assert study.id == "PETCT_0af7/08-12-2005-NA-PET-CT"
    assert study.layout == "autopet"
    assert study.ct.units is Units.HU and study.ct.modality == "CT"
    assert study.pet.units is Units.SUVBW and study.pet.modality == "PT"
    assert study.ct.grid.same_as(study.pet.grid)
    mask = study.lesion_mask
    assert mask is not None and mask.units is Units.LABEL and mask.modality == "SEG"
    assert int(mask.array.sum()) == 8
    assert study.sex is None and study.weight_kg is None and study.height_cm is None
    raw_pet = np.asarray(nib.load(str(folder / "SUV.nii.gz")).dataobj)
    np.testing.assert_array_equal(study.pet.array, raw_pet.transpose(2, 1, 0))


def test_autopet_pet_units_override(tmp_path: Path, rng: np.random.Generator) -> None:
    folder = _autopet_study(tmp_path, rng, seg=False)
    study = AUTOPET.load(folder, LoadOptions(pet_units=Units.BQML))
    assert study.pet.units is Units.BQML and study.lesion_mask is None


def test_autopet_mismatched_grids(tmp_path: Path, rng: np.random.Generator) -> None:
    folder = _autopet_study(tmp_path, rng)
    _save(folder / "SUV.nii.gz", np.ones((6, 5, 3), np.float32), PET_AFFINE)
    with pytest.raises(GeometryError) as err:
        AUTOPET.load(folder, LoadOptions())
    text = str(err.value)
    assert "CTres.nii.gz" in text and "SUV.nii.gz" in text
    assert "(4, 5, 6)" in text and "(3, 5, 6)" in text


def test_autopet_without_suv(tmp_path: Path, rng: np.random.Generator) -> None:
    folder = _autopet_study(tmp_path, rng)
    (folder / "SUV.nii.gz").unlink()
    assert not AUTOPET.detect(folder)
    with pytest.raises(InputError, match=r"SUV\.nii\.gz"):
        AUTOPET.load(folder, LoadOptions())


# --------------------------------------------------------------------------- nnU-Net


def _nnunet_dataset(root: Path, rng: np.random.Generator) -> Path:
    images, labels = root / "imagesTr", root / "labelsTr"
    images.mkdir(parents=True)
    labels.mkdir()
    for case in ("caseB", "caseA"):
        _save(
            images / f"{case}_0000.nii.gz", rng.normal(size=(4, 4, 3)).astype(np.float32), np.eye(4)
        )
        _save(images / f"{case}_0001.nii.gz", rng.random((2, 2, 3)).astype(np.float32), np.eye(4))
    _save(images / "caseC_0000.nii.gz", np.zeros((4, 4, 3), np.float32), np.eye(4))
    _save(labels / "caseA.nii.gz", np.ones((2, 2, 3), np.uint8), np.eye(4))
    return images


def test_nnunet_folder(tmp_path: Path, rng: np.random.Generator) -> None:
    images = _nnunet_dataset(tmp_path, rng)
    assert NNUNET.detect(images)
    assert NNUNET.list_studies is not None
    assert NNUNET.list_studies(images) == ["caseA", "caseB"]
    study = NNUNET.load(images, LoadOptions(study_id="caseA"))
    assert study.id == "caseA" and study.layout == "nnunet"
    assert study.ct.units is Units.HU and study.pet.units is Units.SUVBW
    assert study.ct.shape == (3, 4, 4) and study.pet.shape == (3, 2, 2)
    assert study.lesion_mask is not None and study.lesion_mask.shape == (3, 2, 2)
    other = NNUNET.load(images, LoadOptions(study_id="caseB", pet_units=Units.BQML))
    assert other.lesion_mask is None and other.pet.units is Units.BQML


def test_nnunet_selection_errors(tmp_path: Path, rng: np.random.Generator) -> None:
    images = _nnunet_dataset(tmp_path, rng)
    with pytest.raises(LayoutError, match="caseA, caseB"):
        NNUNET.load(images, LoadOptions())
    with pytest.raises(LayoutError, match=r"'nope'.*caseA, caseB"):
        NNUNET.load(images, LoadOptions(study_id="nope"))
    with pytest.raises(InputError, match=r"caseC_0001\.nii\.gz"):
        NNUNET.load(images, LoadOptions(study_id="caseC"))


def test_nnunet_single_file_and_single_case(tmp_path: Path, rng: np.random.Generator) -> None:
    images = _nnunet_dataset(tmp_path, rng)
    single = images / "caseB_0001.nii.gz"
    assert NNUNET.detect(single)
    study = NNUNET.load(single, LoadOptions())
    assert study.id == "caseB" and study.ct.shape == (3, 4, 4)
    assert NNUNET.list_studies is not None
    assert NNUNET.list_studies(single) == ["caseB"]
    with pytest.raises(LayoutError, match="caseA"):
        NNUNET.load(single, LoadOptions(study_id="caseA"))
    lonely = tmp_path / "one"
    lonely.mkdir()
    for name in ("caseB_0000.nii.gz", "caseB_0001.nii.gz"):
        (lonely / name).write_bytes((images / name).read_bytes())
    assert NNUNET.load(lonely, LoadOptions()).id == "caseB"


def test_layouts_do_not_claim_each_other(tmp_path: Path, rng: np.random.Generator) -> None:
    autopet = _autopet_study(tmp_path / "a", rng)
    images = _nnunet_dataset(tmp_path / "n", rng)
    pair = (images / "caseA_0000.nii.gz", images / "caseA_0001.nii.gz")
    assert not NNUNET.detect(autopet) and not NIFTI_PAIR.detect(autopet)
    assert not AUTOPET.detect(images) and not NIFTI_PAIR.detect(images)
    assert not AUTOPET.detect(pair) and not NNUNET.detect(pair)
    assert NIFTI_PAIR.detect(pair)
    assert not NNUNET.detect(tmp_path / "n" / "labelsTr")
    assert not NNUNET.detect(tmp_path / "n" / "labelsTr" / "caseA.nii.gz")


# --------------------------------------------------------------------------- NIfTI pair


def test_nifti_pair_with_different_grids(tmp_path: Path, rng: np.random.Generator) -> None:
    ct = _save(tmp_path / "p7_ct.nii.gz", rng.normal(size=(8, 8, 6)).astype(np.float32), np.eye(4))
    pet = _save(tmp_path / "p7_pet.nii.gz", rng.random((4, 4, 3)).astype(np.float32), PET_AFFINE)
    assert NIFTI_PAIR.detect((ct, pet))
    assert not NIFTI_PAIR.detect(ct)
    study = NIFTI_PAIR.load((ct, pet), LoadOptions())
    assert study.id == "p7_ct" and study.layout == "nifti-pair"
    assert study.ct.shape == (6, 8, 8) and study.pet.shape == (3, 4, 4)
    assert study.pet.units is Units.SUVBW
    assert not study.ct.grid.same_as(study.pet.grid)


def test_nifti_pair_with_nan_pet(tmp_path: Path) -> None:
    ct = _save(tmp_path / "ct.nii.gz", np.zeros((3, 3, 3), np.float32), np.eye(4))
    bad = np.ones((3, 3, 3), np.float32)
    bad[0, 0, 0] = np.inf
    pet = _save(tmp_path / "pet.nii.gz", bad, np.eye(4))
    with pytest.raises(GeometryError, match=r"pet\.nii\.gz"):
        NIFTI_PAIR.load((ct, pet), LoadOptions())


# --------------------------------------------------------------------------- load_study


def test_load_study_picks_nifti_layouts(tmp_path: Path, rng: np.random.Generator) -> None:
    pytest.importorskip("vipet.io.dicom")
    from vipet.io import detect_layout, find_studies, load_study

    autopet = _autopet_study(tmp_path / "a", rng)
    images = _nnunet_dataset(tmp_path / "n", rng)
    pair = (images / "caseA_0000.nii.gz", images / "caseB_0001.nii.gz")
    assert detect_layout(autopet).name == "autopet"
    assert detect_layout(images).name == "nnunet"
    assert detect_layout(images / "caseA_0000.nii.gz").name == "nnunet"
    assert detect_layout(pair).name == "nifti-pair"
    assert load_study(autopet).layout == "autopet"
    assert load_study(images, LoadOptions(study_id="caseB")).id == "caseB"
    refs = find_studies(tmp_path / "n")
    assert [(r.layout, r.name) for r in refs] == [("nnunet", "caseA"), ("nnunet", "caseB")]
    assert refs[0].load().lesion_mask is not None
