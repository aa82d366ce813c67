"""DICOM reader and writer (vipet.io.dicom, dicom_series, dicom_pet, dicom_writer).

Test series are written here with pydicom directly, tag by tag, so the reader is checked
against headers we control rather than against our own writer.
"""

from __future__ import annotations

import shutil
from datetime import datetime, time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    PositronEmissionTomographyImageStorage,
    generate_uid,
)

from vipet.errors import GeometryError, InputError, LayoutError, MissingTagError, UnitsError
from vipet.io.dicom import (
    DICOM_LAYOUT,
    detect_dicom,
    holds_dicom_study,
    load_dicom_study,
    scan_dicom_folder,
)
from vipet.io.dicom_series import read_series_volume
from vipet.io.dicom_writer import PetAcquisition, write_dicom_series, write_dicom_study
from vipet.io.layouts import LAYOUTS, find_studies, load_study
from vipet.io.study import LoadOptions, Study
from vipet.io.volume import Units, Volume

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
_C, _S = np.cos(np.radians(20)), np.sin(np.radians(20))
OBLIQUE = (1.0, 0.0, 0.0, 0.0, float(_C), float(_S))  # axial tilted 20° about x

# Hand-worked SUVbw for the default PET below: 70 kg, 370 MBq, F-18 (T½ 6586.2 s),
# stored activity 10 000 Bq/mL.
#   60 min uptake: dose × 2^(−3600/6586.2) = 370e6 × 0.68463 = 253.31 MBq
#                  SUV = 10 000 × 70 000 / 253.31e6 = 2.7634
#   65 min uptake: 370e6 × 2^(−3900/6586.2) = 370e6 × 0.66335 = 245.44 MBq → SUV 2.8520
#   ADMIN (no decay): 10 000 × 70 000 / 370e6 = 1.8919
SUV_60MIN = 10_000 * 70_000 / (370e6 * 2 ** (-3600 / 6586.2))
SUV_65MIN = 10_000 * 70_000 / (370e6 * 2 ** (-3900 / 6586.2))
SUV_ADMIN = 10_000 * 70_000 / 370e6


def write_slice(path: Path, tags: dict[str, Any], pixels: np.ndarray) -> None:
    """One CT or PT image file with explicit tags and int16 pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = (
        CTImageStorage if tags["Modality"] == "CT" else PositronEmissionTomographyImageStorage
    )
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = pixels.astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_series(
    folder: Path,
    modality: str,
    stored: np.ndarray,
    positions: np.ndarray,
    *,
    slopes: list[float] | None = None,
    intercepts: list[float] | None = None,
    iop: tuple[float, ...] = AXIAL,
    pixel_spacing: tuple[float, float] = (0.7, 0.9),
    number: int = 1,
    tags: dict[str, Any] | None = None,
    per_slice: list[dict[str, Any]] | None = None,
    order: list[int] | None = None,
) -> str:
    """Write slices ``stored[k]`` at ``positions[k]`` (in the file order ``order``)."""
    uid = generate_uid()
    count = len(stored)
    for k in order if order is not None else range(count):
        slice_tags = {
            "Modality": modality,
            "SeriesInstanceUID": uid,
            "StudyInstanceUID": "1.2.3.4",
            "SeriesNumber": number,
            "SeriesDescription": f"{modality} test {number}",
            "ImagePositionPatient": [float(v) for v in positions[k]],
            "ImageOrientationPatient": list(iop),
            "PixelSpacing": list(pixel_spacing),
            "SliceThickness": 9.0,  # deliberately not the real spacing
            "RescaleSlope": (slopes or [1.0] * count)[k],
            "RescaleIntercept": (intercepts or [0.0] * count)[k],
            "InstanceNumber": count - k,  # reversed: order must not come from here
            **(tags or {}),
            **(per_slice[k] if per_slice else {}),
        }
        write_slice(folder / f"{modality}_{number}_{k:03d}.dcm", slice_tags, stored[k])
    return uid


def pet_tags(**changes: Any) -> dict[str, Any]:
    """PT header: 70 kg, 370 MBq F-18 at 09:00, series at 10:00, DecayCorrection START."""
    drug = {
        "Radiopharmaceutical": "Fluorodeoxyglucose",
        "RadionuclideTotalDose": 370e6,
        "RadionuclideHalfLife": 6586.2,
        "RadiopharmaceuticalStartTime": "090000",
    }
    drug.update(changes.pop("drug", {}))
    item = Dataset()
    for key, value in drug.items():
        if value is not None:
            setattr(item, key, value)
    tags = {
        "Units": "BQML",
        "DecayCorrection": "START",
        "PatientWeight": 70.0,
        "PatientSex": "F",
        "PatientAge": "045Y",
        "PatientSize": 1.62,
        "Manufacturer": "TestVendor",
        "StudyDate": "20240501",
        "SeriesDate": "20240501",
        "SeriesTime": "100000",
        "AcquisitionDate": "20240501",
        "AcquisitionTime": "100000",
        "RadiopharmaceuticalInformationSequence": Sequence([item]),
    }
    tags.update(changes)
    return {k: v for k, v in tags.items() if v is not None}


def axial_positions(count: int, step: float, start: float = -20.0) -> np.ndarray:
    return np.array([[-30.0, -40.0, start + step * k] for k in range(count)])


def write_ct(folder: Path, count: int = 3, shape: tuple[int, int] = (4, 5), **kwargs: Any) -> str:
    stored = np.full((count, *shape), 1024, dtype=np.int16)
    return write_series(
        folder, "CT", stored, axial_positions(count, 2.5), intercepts=[-1024.0] * count, **kwargs
    )


def write_pt(folder: Path, number: int = 2, **tags: Any) -> str:
    """Three PT slices, each holding 10 000 Bq/mL through a different slope."""
    stored = np.stack([np.full((3, 3), v, dtype=np.int16) for v in (1000, 2000, 4000)])
    return write_series(
        folder,
        "PT",
        stored,
        axial_positions(3, 4.0),
        slopes=[10.0, 5.0, 2.5],
        pixel_spacing=(4.0, 4.0),
        number=number,
        tags=pet_tags(**tags),
    )


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "patient01"
    write_ct(folder / "ct")
    write_pt(folder / "pt")
    return folder


# --- geometry and HU -------------------------------------------------------------------


@pytest.mark.parametrize("iop", [AXIAL, CORONAL, OBLIQUE], ids=["axial", "coronal", "oblique"])
def test_geometry_and_per_slice_rescale(tmp_path: Path, iop: tuple[float, ...]) -> None:
    row, col = np.array(iop[:3]), np.array(iop[3:])
    normal = np.cross(row, col)
    start = np.array([10.0, -5.0, 7.0])
    positions = np.array([start + normal * 2.5 * k for k in range(4)])
    rows, cols = np.mgrid[0:4, 0:5]
    stored = np.stack([rows * 10 + cols + 100 * k for k in range(4)]).astype(np.int16)
    slopes, intercepts = [1.0, 2.0, 1.0, 0.5], [-1024.0, -1000.0, 0.0, -2048.0]
    write_series(
        tmp_path / "s" / "ct",
        "CT",
        stored,
        positions,
        slopes=slopes,
        intercepts=intercepts,
        iop=iop,
        order=[2, 0, 3, 1],
    )
    write_pt(tmp_path / "s" / "pt")
    study = load_dicom_study(tmp_path / "s", LoadOptions())
    ct = study.ct
    assert ct.units is Units.HU and ct.array.dtype == np.float32
    expected = np.stack([stored[k] * slopes[k] + intercepts[k] for k in range(4)])
    np.testing.assert_allclose(ct.array, expected)
    np.testing.assert_allclose(ct.origin, start)
    np.testing.assert_allclose(ct.spacing, (2.5, 0.7, 0.9))  # positions, not SliceThickness
    np.testing.assert_allclose(ct.direction, np.column_stack([normal, col, row]), atol=1e-9)
    # Voxel (d, h, w) sits at IPP_d + h × row spacing along col + w × column spacing along row.
    world = ct.grid.index_to_world(np.array([3, 2, 4]))
    np.testing.assert_allclose(world, positions[3] + col * 2 * 0.7 + row * 4 * 0.9)


def test_two_slices(tmp_path: Path) -> None:
    write_series(tmp_path / "ct", "CT", np.zeros((2, 4, 4), np.int16), axial_positions(2, 3.3))
    write_pt(tmp_path / "pt")
    study = load_dicom_study(tmp_path, LoadOptions())
    assert study.ct.shape == (2, 4, 4)
    assert study.ct.spacing[0] == pytest.approx(3.3)


def test_pydicom_ct_small(tmp_path: Path) -> None:
    source = Path(get_testdata_files("CT_small.dcm")[0])
    ref = pydicom.dcmread(source)
    expected = ref.pixel_array * float(ref.RescaleSlope) + float(ref.RescaleIntercept)
    shutil.copy(source, tmp_path / "ct.dcm")
    write_pt(tmp_path / "pet")
    study = load_dicom_study(tmp_path, LoadOptions())
    assert study.ct.shape == (1, 128, 128)
    np.testing.assert_allclose(study.ct.array[0], expected)
    np.testing.assert_allclose(study.ct.origin, [float(v) for v in ref.ImagePositionPatient])
    # One slice: the slice spacing falls back to SliceThickness (5 mm).
    np.testing.assert_allclose(study.ct.spacing, (5.0, 0.661468, 0.661468))
    # The series-level reader gives the same volume.
    ct_series = next(s for s in scan_dicom_folder(tmp_path) if s.modality == "CT")
    volume, record = read_series_volume(ct_series, LoadOptions(), Units.HU)
    assert record is None
    np.testing.assert_allclose(volume.array[0], expected)


# --- SUV -------------------------------------------------------------------------------


SUV_CASES = [
    pytest.param({}, LoadOptions(), SUV_60MIN, "SeriesDate/SeriesTime", (), id="start"),
    pytest.param(
        {"DecayCorrection": "ADMIN"}, LoadOptions(), SUV_ADMIN, "SeriesDate", (), id="admin"
    ),
    pytest.param(
        {
            "StudyDate": "20240502",
            "SeriesDate": "20240502",
            "SeriesTime": "004500",
            "AcquisitionDate": "20240502",
            "AcquisitionTime": "004500",
            "drug": {"RadiopharmaceuticalStartTime": "234000"},
        },
        LoadOptions(),
        SUV_65MIN,
        "SeriesDate/SeriesTime",
        (),
        id="past-midnight",
    ),
    pytest.param(
        {
            "drug": {
                "RadiopharmaceuticalStartDateTime": "20240501090000",
                "RadiopharmaceuticalStartTime": "093000",
            }
        },
        LoadOptions(),
        SUV_60MIN,
        "SeriesDate/SeriesTime",
        (),
        id="start-datetime",
    ),
    pytest.param(
        {"SeriesTime": "103000"},
        LoadOptions(),
        SUV_60MIN,
        "AcquisitionDate/AcquisitionTime",
        (),
        id="series-time-rewritten",
    ),
    pytest.param(
        {
            "PatientWeight": 80.0,
            "drug": {"RadionuclideTotalDose": 400e6, "RadiopharmaceuticalStartTime": "083000"},
        },
        LoadOptions(weight_kg=70.0, dose_mbq=370.0, injection_time=time(9, 0)),
        SUV_60MIN,
        "SeriesDate/SeriesTime",
        ("weight_kg", "dose_mbq", "injection_time"),
        id="overrides",
    ),
]


@pytest.mark.parametrize(("tags", "options", "suv", "source", "overridden"), SUV_CASES)
def test_suv(
    tmp_path: Path,
    tags: dict[str, Any],
    options: LoadOptions,
    suv: float,
    source: str,
    overridden: tuple[str, ...],
) -> None:
    assert pytest.approx(2.7634, abs=1e-4) == SUV_60MIN  # the hand arithmetic above
    write_ct(tmp_path / "ct")
    write_pt(tmp_path / "pt", **tags)
    study = load_dicom_study(tmp_path, options)
    assert study.pet.units is Units.SUVBW
    np.testing.assert_allclose(study.pet.array, suv, rtol=1e-5)
    assert study.suv is not None
    assert study.suv.reference_source.startswith(source)
    assert study.suv.overridden == overridden
    assert study.weight_kg == 70.0


def test_series_time_rewritten_uses_earliest_acquisition(tmp_path: Path) -> None:
    write_ct(tmp_path / "ct")
    stored = np.full((3, 3, 3), 1000, dtype=np.int16)
    later = [{"AcquisitionTime": t} for t in ("100400", "100000", "100200")]
    write_series(
        tmp_path / "pt",
        "PT",
        stored,
        axial_positions(3, 4.0),
        slopes=[10.0] * 3,
        number=2,
        tags=pet_tags(SeriesTime="103000"),
        per_slice=later,
    )
    study = load_dicom_study(tmp_path, LoadOptions())
    assert study.suv is not None and study.suv.reference_time == datetime(2024, 5, 1, 10, 0)
    np.testing.assert_allclose(study.pet.array, SUV_60MIN, rtol=1e-5)


def test_patient_and_meta(study_dir: Path) -> None:
    study = load_dicom_study(study_dir, LoadOptions())
    assert (study.id, study.layout, study.source) == ("patient01", "dicom", study_dir)
    assert (study.sex, study.age, study.height_cm) == ("F", 45.0, pytest.approx(162.0))
    assert study.meta["pet_series"]["number"] == "2"
    assert study.meta["ct_series"]["slices"] == 3
    assert study.meta["study_date"] == "2024-05-01"
    assert study.meta["manufacturer"] == "TestVendor"


def test_gml_is_already_suv(tmp_path: Path) -> None:
    write_ct(tmp_path / "ct")
    write_pt(tmp_path / "pt", Units="GML")
    study = load_dicom_study(tmp_path, LoadOptions())
    assert study.suv is None and "already SUVbw" in study.meta["suv_note"]
    np.testing.assert_allclose(study.pet.array, 10_000.0)


def test_cnts_with_philips_factor(tmp_path: Path) -> None:
    write_ct(tmp_path / "ct")
    folder = tmp_path / "pt"
    write_pt(folder, Units="CNTS")
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.private_block(0x7053, "Philips PET Private Group", create=True).add_new(
            0x00, "DS", "0.0002"
        )
        ds.save_as(path)
    study = load_dicom_study(tmp_path, LoadOptions())
    np.testing.assert_allclose(study.pet.array, 10_000 * 0.0002, rtol=1e-6)
    assert "7053,1000" in study.meta["suv_note"]


@pytest.mark.parametrize(
    ("tags", "error", "words"),
    [
        ({"Units": "CNTS"}, UnitsError, ["CNTS", "BQML"]),
        ({"Units": "PROPCNTS"}, UnitsError, ["PROPCNTS"]),
        ({"DecayCorrection": "NONE"}, UnitsError, ["NONE", "DecayCorrection"]),
        ({"PatientWeight": None}, MissingTagError, ["PatientWeight", "--weight-kg"]),
        ({"PatientWeight": 0.0}, MissingTagError, ["PatientWeight", "--weight-kg"]),
        (
            {"drug": {"RadionuclideTotalDose": None}},
            MissingTagError,
            ["RadionuclideTotalDose", "--dose-mbq"],
        ),
        (
            {"drug": {"RadiopharmaceuticalStartTime": None}},
            MissingTagError,
            ["RadiopharmaceuticalStartTime", "--injection-time"],
        ),
        (
            {"drug": {"RadionuclideHalfLife": None}},
            MissingTagError,
            ["RadionuclideHalfLife", "--half-life-s"],
        ),
        pytest.param(
            {"SeriesTime": "1x:00"},
            InputError,
            ["malformed DICOM time"],
            marks=pytest.mark.filterwarnings("ignore:Invalid value for VR TM"),
        ),
        (
            {"drug": {"RadiopharmaceuticalStartDateTime": "20240501110000"}},
            InputError,
            ["before the injection", "--injection-time"],
        ),
    ],
)
def test_pet_header_problems(
    tmp_path: Path, tags: dict[str, Any], error: type[Exception], words: list[str]
) -> None:
    write_ct(tmp_path / "ct")
    write_pt(tmp_path / "pt", **tags)
    with pytest.raises(error) as info:
        load_dicom_study(tmp_path, LoadOptions())
    for word in words:
        assert word in str(info.value)
    assert "PT_2_000.dcm" in str(info.value)  # names the file


def test_missing_weight_override_works(tmp_path: Path) -> None:
    write_ct(tmp_path / "ct")
    write_pt(tmp_path / "pt", PatientWeight=None)
    study = load_dicom_study(tmp_path, LoadOptions(weight_kg=70.0))
    np.testing.assert_allclose(study.pet.array, SUV_60MIN, rtol=1e-5)
    assert study.suv is not None and study.suv.overridden == ("weight_kg",)


def test_missing_half_life_override_works(tmp_path: Path) -> None:
    write_ct(tmp_path / "ct")
    write_pt(tmp_path / "pt", drug={"RadionuclideHalfLife": None})
    study = load_dicom_study(tmp_path, LoadOptions(half_life_s=6586.2))
    np.testing.assert_allclose(study.pet.array, SUV_60MIN, rtol=1e-5)
    assert study.suv is not None and study.suv.overridden == ("half_life_s",)


# --- uneven slices ----------------------------------------------------------------------


def _write_uneven(folder: Path) -> None:
    z = np.array([0.0, 2.0, 4.0, 7.0, 9.0])
    stored = np.stack([np.full((3, 3), 10 * v, dtype=np.int16) for v in z])  # HU = 10 × z
    positions = np.array([[0.0, 0.0, v] for v in z])
    write_series(folder / "ct", "CT", stored, positions, order=[4, 1, 3, 0, 2])
    write_pt(folder / "pt")


def test_uneven_slices_resampled(tmp_path: Path) -> None:
    _write_uneven(tmp_path)
    study = load_dicom_study(tmp_path, LoadOptions(uneven_slices="resample"))
    # Median gap 2 mm over a 9 mm stack → slices at z = 0, 2, 4, 6, 8; HU = 10 z is linear,
    # so interpolation between z = 4 and 7 gives 60 at z = 6, between 7 and 9 gives 80.
    assert study.ct.shape == (5, 3, 3)
    assert study.ct.spacing[0] == pytest.approx(2.0)
    np.testing.assert_allclose(study.ct.array[:, 1, 1], [0, 20, 40, 60, 80], atol=1e-4)
    (record,) = study.meta["uneven_slices"]
    assert record["action"] == "resampled" and record["modality"] == "CT"
    assert (record["min_mm"], record["max_mm"], record["to_mm"]) == (2.0, 3.0, 2.0)


def test_uneven_slices_refused(tmp_path: Path) -> None:
    _write_uneven(tmp_path)
    with pytest.raises(GeometryError, match=r"uneven slice spacing \(2.000 to 3.000 mm"):
        load_dicom_study(tmp_path, LoadOptions(uneven_slices="refuse"))


def test_duplicate_positions_refused(tmp_path: Path) -> None:
    positions = axial_positions(3, 2.0)
    positions[2] = positions[1]
    write_series(tmp_path / "ct", "CT", np.zeros((3, 4, 4), np.int16), positions)
    write_pt(tmp_path / "pt")
    with pytest.raises(GeometryError, match="share a position"):
        load_dicom_study(tmp_path, LoadOptions())


def test_inconsistent_rows_refused(tmp_path: Path) -> None:
    write_ct(tmp_path / "ct")
    write_slice(
        tmp_path / "ct" / "odd.dcm",
        {
            "Modality": "CT",
            "SeriesInstanceUID": scan_dicom_folder(tmp_path)[0].uid,
            "ImagePositionPatient": [0, 0, 50],
            "ImageOrientationPatient": list(AXIAL),
            "PixelSpacing": [0.7, 0.9],
        },
        np.zeros((6, 6), np.int16),
    )
    write_pt(tmp_path / "pt")
    with pytest.raises(GeometryError, match="Rows/Columns differ"):
        load_dicom_study(tmp_path, LoadOptions())


# --- bad folders ------------------------------------------------------------------------


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="empty folder") as info:
        load_dicom_study(tmp_path, LoadOptions())
    assert str(tmp_path) in str(info.value)


def test_no_dicom_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.bin").write_bytes(bytes(300))
    with pytest.raises(InputError, match="no DICOM image files among 2 files"):
        load_dicom_study(tmp_path, LoadOptions())


def test_stray_files_are_skipped(study_dir: Path) -> None:
    (study_dir / "README.txt").write_text("hello")
    (study_dir / "ct" / "thumbs.db").write_bytes(b"\x08\x00" + bytes(200))
    assert load_dicom_study(study_dir, LoadOptions()).ct.shape == (3, 4, 5)


def test_two_pet_series(tmp_path: Path) -> None:
    write_ct(tmp_path / "ct")
    uid_a = write_pt(tmp_path / "pt_a", number=2)
    uid_b = write_pt(tmp_path / "pt_b", number=3, PatientWeight=140.0)
    with pytest.raises(LayoutError) as info:
        load_dicom_study(tmp_path, LoadOptions())
    message = str(info.value)
    for text in (uid_a, uid_b, "--series", "2 PET series", "PT test 3", "3 slice(s)"):
        assert text in message
    by_number = load_dicom_study(tmp_path, LoadOptions(series=("3",)))
    assert by_number.meta["pet_series"]["uid"] == uid_b
    np.testing.assert_allclose(by_number.pet.array, 2 * SUV_60MIN, rtol=1e-5)
    by_uid = load_dicom_study(tmp_path, LoadOptions(series=(uid_a,)))
    assert by_uid.meta["pet_series"]["number"] == "2"


def test_unknown_series_choice(study_dir: Path) -> None:
    with pytest.raises(LayoutError, match="no series matches --series 99"):
        load_dicom_study(study_dir, LoadOptions(series=("99",)))


def test_ct_only_folder(tmp_path: Path) -> None:
    write_ct(tmp_path / "ct")
    with pytest.raises(LayoutError, match=r"no PET \(PT\) series found \(found CT\)"):
        load_dicom_study(tmp_path, LoadOptions())
    assert detect_dicom(tmp_path) and not holds_dicom_study(tmp_path)


@pytest.mark.parametrize(
    ("shape", "keep"),
    [
        pytest.param((4, 5), 200, id="in-file-meta"),
        pytest.param((4, 5), 400, id="in-header"),
        pytest.param((4, 5), -10, id="in-small-pixels"),
        pytest.param((64, 64), -3000, id="in-large-pixels"),  # pixel data located, not read
    ],
)
def test_truncated_file(tmp_path: Path, shape: tuple[int, int], keep: int) -> None:
    write_ct(tmp_path / "ct", shape=shape)
    write_pt(tmp_path / "pt")
    victim = sorted((tmp_path / "ct").iterdir())[1]
    data = victim.read_bytes()
    victim.write_bytes(data[:keep])
    with pytest.raises(InputError, match="truncated") as info:
        load_dicom_study(tmp_path, LoadOptions())
    assert victim.name in str(info.value)


def test_truncated_after_scan(study_dir: Path) -> None:
    """Pixel reading checks the data too: a file cut after its header was read."""
    ct_series = next(s for s in scan_dicom_folder(study_dir) if s.modality == "CT")
    victim = ct_series.files[0]
    victim.write_bytes(victim.read_bytes()[:-20])
    with pytest.raises(InputError, match="truncated") as info:
        read_series_volume(ct_series, LoadOptions(), Units.HU)
    assert victim.name in str(info.value)


def test_find_studies_lists_each_dicom_study(tmp_path: Path) -> None:
    for name in ("p1", "p2"):
        write_ct(tmp_path / name / "ct")
        write_pt(tmp_path / name / "pt")
    write_ct(tmp_path / "p3" / "ct")  # CT only: not a whole study
    refs = find_studies(tmp_path)
    assert [(r.name, r.layout) for r in refs] == [("p1", "dicom"), ("p2", "dicom")]


def test_detect(study_dir: Path, tmp_path: Path) -> None:
    assert LAYOUTS["dicom"] is DICOM_LAYOUT
    assert detect_dicom(study_dir) and holds_dicom_study(study_dir)
    assert not detect_dicom(next((study_dir / "ct").iterdir()))  # a file, not a folder
    assert not detect_dicom((study_dir, study_dir))  # type: ignore[arg-type]
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.txt").write_text("x")
    assert not detect_dicom(tmp_path / "plain")


# --- writer -----------------------------------------------------------------------------


def _rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.radians(degrees)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def _phantom_study(rng: np.random.Generator) -> Study:
    default = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    direction = _rotation(np.array([1.0, 2.0, 0.5]), 25.0) @ default  # proper rotation
    ct = Volume(
        rng.uniform(-1024, 2000, (5, 12, 10)).astype(np.float32),
        (2.5, 0.8, 0.9),
        (-10.0, 20.0, 30.0),
        direction,
        "CT",
        Units.HU,
    )
    pet = Volume(
        rng.uniform(0.05, 15.0, (4, 6, 5)).astype(np.float32),
        (3.0, 2.0, 2.1),
        (-12.0, 18.0, 28.0),
        modality="PT",
        units=Units.SUVBW,
    )
    return Study("ph01", ct, pet, sex="M", age=60.0, weight_kg=82.5, height_cm=178.0)


ACQUISITION = PetAcquisition(
    injected_dose_bq=350e6,
    injection_time=datetime(2024, 6, 3, 23, 10),
    series_time=datetime(2024, 6, 4, 0, 20),  # past midnight
)


@pytest.mark.parametrize(
    "acquisition",
    [
        ACQUISITION,
        PetAcquisition(
            injected_dose_bq=200e6,
            injection_time=datetime(2024, 6, 4, 8, 0),
            series_time=datetime(2024, 6, 4, 9, 30),
            decay_correction="ADMIN",
        ),
    ],
    ids=["start-past-midnight", "admin"],
)
def test_writer_round_trip(tmp_path: Path, acquisition: PetAcquisition) -> None:
    original = _phantom_study(np.random.default_rng(7))
    out = write_dicom_study(original, tmp_path / "ph01", pet_acquisition=acquisition)
    assert sorted(p.name for p in out.iterdir()) == ["CT", "PT"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    study = load_study(out)
    assert study.layout == "dicom"
    for read, wrote in ((study.ct, original.ct), (study.pet, original.pet)):
        assert read.grid.same_as(wrote.grid, atol=1e-4)
    np.testing.assert_allclose(study.ct.array, original.ct.array, atol=1.0)
    np.testing.assert_allclose(study.pet.array, original.pet.array, rtol=5e-3)
    assert study.suv is not None
    assert study.suv.injection_time == acquisition.injection_time
    assert study.suv.decay_correction == acquisition.decay_correction
    assert (study.sex, study.age, study.weight_kg) == ("M", 60.0, 82.5)
    header = pydicom.dcmread(next((out / "PT").iterdir()))
    assert header.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert header.Units == "BQML" and header.Modality == "PT"


def test_writer_clips_ct_to_int16(tmp_path: Path) -> None:
    ct = Volume(
        np.array([[[-40000.0, 5.4, 40000.0]]]), (1.0, 1.0, 1.0), modality="CT", units=Units.HU
    )
    write_dicom_series(
        ct,
        tmp_path / "ct",
        modality="CT",
        series_number=1,
        series_description="ct",
        study_uid=generate_uid(),
        patient={},
    )
    series = scan_dicom_folder(tmp_path / "ct")[0]
    volume, _ = read_series_volume(series, LoadOptions(), Units.HU)
    np.testing.assert_allclose(volume.array.ravel(), [-32768 - 1024, 5.0, 32767 - 1024])


def test_writer_refuses_non_empty_folder(tmp_path: Path) -> None:
    target = tmp_path / "existing"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(InputError, match="refusing to overwrite"):
        write_dicom_study(
            _phantom_study(np.random.default_rng(1)), target, pet_acquisition=ACQUISITION
        )
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert (target / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]


def test_writer_refuses_raw_pet(tmp_path: Path) -> None:
    raw = Volume(np.ones((2, 2, 2)), (1.0, 1.0, 1.0), modality="PT", units=Units.RAW)
    with pytest.raises(UnitsError, match="raw"):
        write_dicom_series(
            raw,
            tmp_path / "pt",
            modality="PT",
            series_number=2,
            series_description="pt",
            study_uid=generate_uid(),
            patient={"weight_kg": 70.0},
            pet=ACQUISITION,
        )
    assert not (tmp_path / "pt").exists()


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit-vr", "explicit-vr"])
def test_file_without_preamble(tmp_path: Path, implicit: bool) -> None:
    """Old exports: a bare data set, no 128-byte preamble or file meta."""
    source = pydicom.dcmread(get_testdata_files("CT_small.dcm")[0])
    expected = source.pixel_array * float(source.RescaleSlope) + float(source.RescaleIntercept)
    del source.file_meta
    source.preamble = None
    (tmp_path / "ct").mkdir()
    source.save_as(tmp_path / "ct" / "IM0001", implicit_vr=implicit, little_endian=True)
    write_pt(tmp_path / "pt")
    assert detect_dicom(tmp_path / "ct")
    study = load_dicom_study(tmp_path, LoadOptions())
    np.testing.assert_allclose(study.ct.array[0], expected)
