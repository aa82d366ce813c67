"""The command line: inspect, preprocess, errors as one line with nothing written."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta

import pytest

from tests.helpers import small_study, write_autopet
from vipet.cli import main
from vipet.errors import ViPetError
from vipet.io.dicom_writer import PetAcquisition, write_dicom_study

SCAN = datetime(2026, 3, 2, 11, 0, 0)
ACQ = PetAcquisition(
    injected_dose_bq=350e6, injection_time=SCAN - timedelta(minutes=75), series_time=SCAN
)


@pytest.fixture(scope="module")
def dicom_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dicom") / "patient"
    write_dicom_study(small_study(), folder, pet_acquisition=ACQ)
    return folder


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_inspect_dicom_prints_suv_inputs_and_writes_picture(dicom_study, tmp_path, capsys) -> None:
    png = tmp_path / "pic" / "study.png"
    code, out, err = run(capsys, "inspect", dicom_study, "--png", png)
    assert code == 0, err
    assert "layout: dicom" in out
    # By hand: 75 min uptake, F-18 half-life 6586.2 s -> decay 2^(-4500/6586.2) = 0.62279;
    # factor = 70 000 g / (350e6 Bq x 0.62279) = 3.2113e-4 per Bq/mL.
    decay = 2 ** (-4500 / 6586.2)
    factor = 70_000 / (350e6 * decay)
    assert f"SUVbw factor: {factor:.6g}" in out
    assert "patient weight: 70 kg" in out and "injected dose: 350.00 MBq" in out
    assert "uptake interval: 75.0 min" in out and f"dose x {decay:.4f}" in out
    assert "head_neck" in out and "abdomen_pelvis" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_override_is_reported(dicom_study, capsys) -> None:
    code, out, _ = run(
        capsys, "inspect", dicom_study, "--weight-kg", "80", "--injection-time", "09:45"
    )
    assert code == 0
    assert "80 kg (user override)" in out
    factor = 80_000 / (350e6 * 2 ** (-4500 / 6586.2))
    assert f"SUVbw factor: {factor:.6g}" in out


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        ("empty", "empty"),
        ("ct_only", "PT"),
        ("text", "DICOM"),
    ],
)
def test_bad_inputs_give_one_line_and_write_nothing(
    dicom_study, tmp_path, capsys, setup, needle
) -> None:
    folder = tmp_path / setup
    if setup == "empty":
        folder.mkdir()
    elif setup == "ct_only":
        shutil.copytree(dicom_study / "CT", folder / "CT")
    else:
        folder.mkdir()
        (folder / "notes.txt").write_text("not an image")
    png = tmp_path / "out.png"
    code, out, err = run(capsys, "inspect", folder, "--png", png)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in err + out
    assert not png.exists()


def test_bad_flag_value_is_one_line(dicom_study, capsys) -> None:
    code, _, err = run(capsys, "inspect", dicom_study, "--injection-time", "quarter past")
    assert code == 1 and err.count("\n") == 1 and "--injection-time" in err


def test_debug_shows_the_traceback(tmp_path) -> None:
    with pytest.raises(ViPetError):
        main(["inspect", str(tmp_path / "missing"), "--debug"])


def test_preprocess_dataset(tmp_path, capsys) -> None:
    for i in range(2):
        write_autopet(tmp_path / "data" / f"P{i}" / "S1", small_study(seed=i))
    code, out, err = run(
        capsys,
        "preprocess",
        tmp_path / "data",
        "--out",
        tmp_path / "cache",
        "--workers",
        "2",
        "--set",
        "grid=[8,32,32]",
    )
    assert code == 0, err
    assert "2 studies found" in out and "built 2" in out
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert [e["study"] for e in manifest["studies"]] == ["P0/S1", "P1/S1"]
    assert manifest["config"]["grid"] == [8, 32, 32]


def test_unknown_config_key_is_one_line(tmp_path, capsys) -> None:
    write_autopet(tmp_path / "d" / "P0" / "S1", small_study())
    code, _, err = run(
        capsys, "preprocess", tmp_path / "d", "--out", tmp_path / "c", "--set", "gird=[1,2,3]"
    )
    assert code == 1 and "unknown config key 'gird'" in err
    assert not (tmp_path / "c").exists()


def test_phantom_command(tmp_path, capsys) -> None:
    code, out, err = run(
        capsys, "phantom", "--n", "1", "--out", tmp_path / "ph", "--layout", "nifti"
    )
    assert code == 0, err
    assert "wrote 1 studies (nifti)" in out and "splits:" in out
    assert (tmp_path / "ph" / "dataset.json").is_file()
    code, _, err = run(capsys, "phantom", "--n", "1", "--out", tmp_path / "ph")
    assert code == 1 and "not empty" in err and err.count("\n") == 1
