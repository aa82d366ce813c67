"""The ViMed-PET release: writer, reader and the ``vimed`` layout."""

from __future__ import annotations

import csv
import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from vipet.errors import GeometryError, InputError, LayoutError, UnitsError
from vipet.io.study import LoadOptions, Study
from vipet.io.vimed import (
    DEFAULT_FOV_MM,
    DEFAULT_SLICE_MM,
    PET_RAW_PER_SUV,
    RAW_SUV_MAX,
    VIMED,
    VIMED_DIRECTION,
    to_vimed_axes,
    write_vimed_entry,
)
from vipet.io.volume import Units, Volume

REPORT_VI = {
    "Mô tả hình ảnh": {
        "Đầu - cổ": "Không phát hiện hình ảnh tăng chuyển hóa FDG bất thường.",
        "Lồng ngực": "Hình ảnh nốt mờ thùy trên phổi phải kích thước 12 x 14 mm, "
        "tăng chuyển hóa FDG (SUVmax: 8,1).",
        "Ổ bụng - khung chậu": "Bắt xạ theo đặc điểm sinh lý ở gan, lách.",
        "Hệ cơ - xương": "Chưa phát hiện hình ảnh tăng chuyển hóa FDG bất thường.",
    },
    "Nhận định kết quả": "Nốt phổi phải tăng chuyển hóa FDG.",
}
REPORT_EN = {"Findings": {"Chest": "Right upper lobe nodule, SUVmax 8.1."}, "Impression": "x"}


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1)


def _study(rng: np.random.Generator, *, report: bool = True) -> Study:
    # DICOM-like foot→head order (default direction): the writer must flip it.
    ct = Volume(
        np.rint(rng.normal(0, 300, (6, 8, 8))).astype(np.float32),
        spacing=(3.0, 1.5, 1.5),
        origin=(-5.25, -5.25, -800.0),
        modality="CT",
        units=Units.HU,
    )
    pet = Volume(
        rng.gamma(2.0, 1.5, (4, 4, 4)).astype(np.float32),
        spacing=(4.5, 3.0, 3.0),
        origin=(-4.5, -4.5, -799.0),
        modality="PT",
        units=Units.SUVBW,
    )
    return Study(
        id="src",
        ct=ct,
        pet=pet,
        sex="F",
        weight_kg=52.5,
        height_cm=158.0,
        report=REPORT_VI if report else None,
        report_en=REPORT_EN if report else None,
    )


@pytest.fixture
def release(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Study, Study]:
    first, second = _study(rng), _study(rng, report=False).replace(sex="M", weight_kg=None)
    write_vimed_entry(tmp_path, first, "day_1_patient_0", year=2023, month=8)
    write_vimed_entry(tmp_path, second, "day_2_patient_1", year=2023, month=11)
    return tmp_path, first, second


def test_written_release_reads_back(release: tuple[Path, Study, Study]) -> None:
    root, first, _ = release
    assert VIMED.detect(root)
    assert VIMED.list_studies is not None
    assert VIMED.list_studies(root) == ["day_1_patient_0", "day_2_patient_1"]
    study = VIMED.load(root, LoadOptions(study_id="day_1_patient_0"))
    assert study.id == "day_1_patient_0" and study.layout == "vimed"
    assert (study.sex, study.weight_kg, study.height_cm) == ("F", 52.5, 158.0)
    assert study.report == REPORT_VI and study.report_en == REPORT_EN
    assert study.meta["year"] == 2023 and study.meta["month"] == 8
    assert study.meta["geometry"] == "from metadata"
    assert study.meta["ct_path"] == "2023/THANG 8/CT/day_1_patient_0.npz"
    assert study.meta["pet_raw_per_suv"] == pytest.approx(PET_RAW_PER_SUV)
    # Written head-first: slice 0 on disk is the original's last (most cranial) slice.
    np.testing.assert_array_equal(study.ct.array, first.ct.array[::-1])
    np.testing.assert_allclose(study.ct.direction, VIMED_DIRECTION)
    assert study.ct.units is Units.HU and study.pet.units is Units.RAW
    expected_raw = np.rint(first.pet.array[::-1].astype(np.float64) * PET_RAW_PER_SUV)
    np.testing.assert_allclose(study.pet.array, expected_raw, atol=1)  # float32 rounding
    suv = study.pet.array / study.meta["pet_raw_per_suv"]
    np.testing.assert_allclose(suv, first.pet.array[::-1], atol=0.5 / PET_RAW_PER_SUV + 1e-6)


def test_written_geometry_keeps_world_positions(release: tuple[Path, Study, Study]) -> None:
    root, first, _ = release
    study = VIMED.load(root, LoadOptions(study_id="day_1_patient_0"))
    for read, original in ((study.ct, first.ct), (study.pet, first.pet)):
        np.testing.assert_allclose(read.spacing, original.spacing)
        d = original.shape[0] - 1
        np.testing.assert_allclose(
            read.grid.index_to_world(np.array([0, 2, 3])),
            original.grid.index_to_world(np.array([d, 2, 3])),
        )


def test_second_entry_and_rewrite(
    release: tuple[Path, Study, Study], rng: np.random.Generator
) -> None:
    root, _, second = release
    study = VIMED.load(root, LoadOptions(study_id="day_2_patient_1"))
    assert study.sex == "M" and study.weight_kg is None and study.meta["month"] == 11
    assert study.report is None and study.report_en is None
    # Rewriting an entry replaces its row instead of appending a second one.
    write_vimed_entry(root, second.replace(weight_kg=70.0), "day_2_patient_1", year=2023, month=11)
    assert VIMED.list_studies is not None
    assert VIMED.list_studies(root) == ["day_1_patient_0", "day_2_patient_1"]
    assert VIMED.load(root, LoadOptions(study_id="day_2_patient_1")).weight_kg == 70.0
    assert not [p for p in root.rglob(".*") if p.is_file()]  # no temp files left behind


def _nfd(value: object) -> object:
    if isinstance(value, str):
        return unicodedata.normalize("NFD", value)
    if isinstance(value, dict):
        return {_nfd(k): _nfd(v) for k, v in value.items()}
    return value


def test_report_is_utf8_and_nfc(tmp_path: Path, rng: np.random.Generator) -> None:
    nfd = _nfd(REPORT_VI)
    assert nfd != REPORT_VI  # decomposed diacritics compare unequal until normalised
    write_vimed_entry(tmp_path, _study(rng).replace(report=nfd), "ca", year=2022)
    raw = (tmp_path / "2022/reports/ca.json").read_bytes().decode("utf-8")
    assert "Nhận định kết quả" in unicodedata.normalize("NFC", raw)  # stored unescaped
    study = VIMED.load(tmp_path, LoadOptions())  # one row: no id needed
    assert study.report == REPORT_VI
    assert study.meta["month"] is None


def test_raw_pet_is_kept_and_suv_clipped(tmp_path: Path, rng: np.random.Generator) -> None:
    src = _study(rng)
    hot = src.pet.array.copy()
    hot[0, 0, 0] = 2 * RAW_SUV_MAX
    write_vimed_entry(tmp_path, src.replace(pet=src.pet.with_array(hot)), "hot", year=2021)
    back = VIMED.load(tmp_path, LoadOptions(study_id="hot"))
    assert back.pet.array.max() == 32767
    write_vimed_entry(tmp_path, back, "again", year=2021)
    again = VIMED.load(tmp_path, LoadOptions(study_id="again"))
    np.testing.assert_array_equal(again.pet.array, back.pet.array)
    assert again.meta["pet_raw_per_suv"] == back.meta["pet_raw_per_suv"]


def test_writer_refuses_bad_input(tmp_path: Path, rng: np.random.Generator) -> None:
    src = _study(rng)
    with pytest.raises(UnitsError):
        write_vimed_entry(
            tmp_path, src.replace(pet=src.pet.with_array(src.pet.array, Units.BQML)), "a", year=2020
        )
    t = np.deg2rad(20)
    oblique = np.array([[0, -np.sin(t), np.cos(t)], [0, np.cos(t), np.sin(t)], [1.0, 0, 0]])
    tilted = Volume(src.ct.array, src.ct.spacing, direction=oblique, modality="CT", units="HU")
    with pytest.raises(GeometryError, match="oblique"):
        write_vimed_entry(tmp_path, src.replace(ct=tilted), "b", year=2020)
    with pytest.raises(InputError, match="name"):
        write_vimed_entry(tmp_path, src, "../x", year=2020)


def test_to_vimed_axes_keeps_voxel_positions(rng: np.random.Generator) -> None:
    # W along -y, H along -x, D along +z: every axis needs a permutation or a flip.
    direction = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    vol = Volume(rng.random((3, 4, 5)), (2.0, 3.0, 4.0), (10.0, 20.0, 30.0), direction)
    out = to_vimed_axes(vol)
    np.testing.assert_allclose(out.direction, VIMED_DIRECTION)
    src_pts = vol.grid.index_to_world(np.argwhere(np.ones(vol.shape)))
    src_vals = vol.array.reshape(-1)
    out_idx = np.rint(out.grid.world_to_index(src_pts)).astype(int)
    np.testing.assert_array_equal(out.array[tuple(out_idx.T)], src_vals)


# --------------------------------------------------------------------------- hand-written


def _write_minimal(root: Path, header: list[str] | None = None, **files: np.ndarray) -> Path:
    ct = files.get("ct", np.zeros((10, 16, 16), np.int16))
    pet = files.get("pet", np.ones((5, 8, 8), np.int16))
    folder = root / "PETCT2017" / "THANG 8"
    (folder / "CT").mkdir(parents=True)
    (folder / "PET").mkdir()
    (folder / "reports").mkdir()
    np.savez(folder / "CT" / "day_1_patient_0.npz", data=ct)
    np.savez(folder / "PET" / "day_1_patient_0.npz", data=pet)
    report = json.dumps(REPORT_VI, ensure_ascii=False)
    (folder / "reports" / "day_1_patient_0.json").write_text(report, encoding="utf-8")
    header = header or [
        "name", "sex", "height", "weight", "year",
        "pet_path", "ct_path", "report_path", "report_en_path",
    ]  # fmt: skip
    values = {
        "name": "day_1_patient_0",
        "sex": "Nữ",
        "height": "155",
        "weight": "",
        "year": "2017",
        "pet_path": "PETCT2017/THANG 8/PET/day_1_patient_0.npz",
        "ct_path": "PETCT2017/THANG 8/CT/day_1_patient_0.npz",
        "report_path": "PETCT2017/THANG 8/reports/day_1_patient_0.json",
        "report_en_path": "",
    }
    with (root / "metadata.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerow([values[c] for c in header])
    return folder


def test_minimal_release_uses_assumed_geometry(tmp_path: Path) -> None:
    _write_minimal(tmp_path)
    assert VIMED.detect(tmp_path) and VIMED.detect(tmp_path / "metadata.csv")
    study = VIMED.load(tmp_path, LoadOptions())
    assert study.meta["geometry"] == "assumed" and study.meta["month"] == 8
    assert study.meta["year"] == 2017 and "pet_raw_per_suv" not in study.meta
    assert (study.sex, study.height_cm, study.weight_kg) == ("F", 155.0, None)
    assert study.report == REPORT_VI and study.report_en is None
    assert study.pet.units is Units.RAW and study.ct.units is Units.HU
    assert study.ct.spacing == (DEFAULT_SLICE_MM, DEFAULT_FOV_MM / 16, DEFAULT_FOV_MM / 16)
    assert study.pet.spacing == (2 * DEFAULT_SLICE_MM, DEFAULT_FOV_MM / 8, DEFAULT_FOV_MM / 8)
    for vol in (study.ct, study.pet):  # one physical box, centred on the origin
        centre = vol.grid.index_to_world((np.asarray(vol.shape) - 1) / 2.0)
        np.testing.assert_allclose(centre, 0.0, atol=1e-9)
        np.testing.assert_allclose(vol.grid.extent_mm, (30.0, DEFAULT_FOV_MM, DEFAULT_FOV_MM))
    assert study.ct.grid.corners()[0][2] > study.ct.grid.corners()[-1][2]  # slice 0 = head


def test_missing_columns_are_named(tmp_path: Path) -> None:
    _write_minimal(tmp_path, header=["name", "sex", "pet_path", "ct_path"])
    assert not VIMED.detect(tmp_path)
    with pytest.raises(InputError, match=r"metadata\.csv.*height, weight, year"):
        VIMED.load(tmp_path, LoadOptions())


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", r"CT/day_1_patient_0\.npz.*not found"),
        ("no-data", r"PET/day_1_patient_0\.npz.*'data'"),
        ("2d", r"PET/day_1_patient_0\.npz.*3D"),
        ("bad-json", r"reports/day_1_patient_0\.json"),
    ],
)
def test_broken_files_are_named(tmp_path: Path, case: str, message: str) -> None:
    folder = _write_minimal(tmp_path)
    if case == "missing":
        (folder / "CT" / "day_1_patient_0.npz").unlink()
    elif case == "no-data":
        np.savez(folder / "PET" / "day_1_patient_0.npz", volume=np.zeros((2, 2, 2)))
    elif case == "2d":
        np.savez(folder / "PET" / "day_1_patient_0.npz", data=np.zeros((2, 2)))
    else:
        (folder / "reports" / "day_1_patient_0.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match=message):
        VIMED.load(tmp_path, LoadOptions())


def test_study_selection_errors(release: tuple[Path, Study, Study]) -> None:
    root, _, _ = release
    with pytest.raises(LayoutError, match="day_1_patient_0, day_2_patient_1"):
        VIMED.load(root, LoadOptions())
    with pytest.raises(LayoutError, match=r"'nobody'.*day_1_patient_0"):
        VIMED.load(root, LoadOptions(study_id="nobody"))


def test_detect_is_specific(tmp_path: Path) -> None:
    (tmp_path / "CTres.nii.gz").write_bytes(b"")
    assert not VIMED.detect(tmp_path)
    assert not VIMED.detect((tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"))
    assert not VIMED.detect(tmp_path / "missing")


def test_load_study_picks_vimed(release: tuple[Path, Study, Study]) -> None:
    pytest.importorskip("vipet.io.dicom")
    from vipet.io import detect_layout, find_studies, load_study

    root, _, _ = release
    assert detect_layout(root).name == "vimed"
    study = load_study(root, LoadOptions(study_id="day_2_patient_1"))
    assert study.layout == "vimed" and study.id == "day_2_patient_1"
    refs = find_studies(root)
    assert [r.name for r in refs] == ["day_1_patient_0", "day_2_patient_1"]
    assert refs[0].load().report == REPORT_VI
