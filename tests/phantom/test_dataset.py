"""ViPET-Phantom datasets: determinism, ground truth measured on the image, reports and
questions that agree with it, and every layout read back through `load_study`."""

from __future__ import annotations

import json
import unicodedata
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from vipet.errors import InputError
from vipet.io import LoadOptions, load_study
from vipet.io.vipet_dataset import read_dataset
from vipet.phantom.dataset import assign_splits, write_dataset
from vipet.phantom.lesions import LesionConfig
from vipet.phantom.simulate import PhantomConfig, ScannerConfig, simulate_case
from vipet.reports.render import report_text
from vipet.reports.schema import FINDINGS_KEY, IMPRESSION_KEY, SECTIONS

# Coarse scanner so each study takes a fraction of a second.
SMALL = PhantomConfig(
    scanner=ScannerConfig(ct_matrix=64, ct_slice_mm=10.0, pet_matrix=48, pet_slice_mm=10.0),
    lesions=LesionConfig(normal_fraction=0.0),
)


@pytest.fixture(scope="module")
def vimed_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "vimed"
    write_dataset(out, 4, seed=3, layout="vimed", workers=2, config=SMALL, progress=False)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes(vimed_dataset, tmp_path) -> None:
    again = tmp_path / "again"
    write_dataset(again, 4, seed=3, layout="vimed", workers=1, config=SMALL, progress=False)
    a, b = _files(vimed_dataset), _files(again)
    assert a.keys() == b.keys()
    different = [k for k in a if a[k] != b[k]]
    assert different == []
    other = tmp_path / "other"
    write_dataset(other, 4, seed=4, layout="vimed", config=SMALL, progress=False)
    assert _files(other)["metadata.csv"] != a["metadata.csv"]


def test_splits_are_deterministic_and_disjoint() -> None:
    s = assign_splits(200, 0)
    assert s == assign_splits(200, 0) and s != assign_splits(200, 1)
    assert (s.count("train"), s.count("val"), s.count("test")) == (140, 30, 30)


def test_suvmax_is_max_pet_in_mask() -> None:
    for index in range(3):
        case = simulate_case(index, 11, SMALL)
        mask, pet = case.study.lesion_mask.array, case.study.pet.array
        assert case.study.lesion_mask.grid.same_as(case.study.pet.grid)
        assert case.lesions, "normal_fraction=0 must give lesions"
        for les in case.lesions:
            assert mask.__eq__(les.id).any()
            assert les.suvmax == pytest.approx(round(float(pet[mask == les.id].max()), 1), abs=1e-9)
            # Avidity is what the image shows: an avid lesion is at least 2.5 SUV.
            assert not les.fdg_avid or les.suvmax >= 2.5


def test_reports_name_every_lesion_in_both_languages(vimed_dataset) -> None:
    desc = read_dataset(vimed_dataset)
    for entry in desc["studies"]:
        gt = json.loads((vimed_dataset / "ground_truth" / f"{entry['id']}.json").read_text())
        for lang in ("vi", "en"):
            report = gt[f"report_{lang}"]
            assert list(report) == [FINDINGS_KEY[lang], IMPRESSION_KEY[lang]]
            headings = [vi if lang == "vi" else en for _, vi, en in SECTIONS]
            assert list(report[FINDINGS_KEY[lang]]) == headings
            text = report_text(report)
            assert text == unicodedata.normalize("NFC", text)
            for les in gt["lesions"]:
                suv = f"{les['suvmax']:.1f}"
                assert (suv.replace(".", ",") if lang == "vi" else suv) in text


def test_questions_agree_with_ground_truth(vimed_dataset) -> None:
    desc = read_dataset(vimed_dataset)
    for entry in desc["studies"]:
        gt = json.loads((vimed_dataset / "ground_truth" / f"{entry['id']}.json").read_text())
        by_id = {les["id"]: les for les in gt["lesions"]}
        for q in gt["questions_vi"] + gt["questions_en"]:
            assert q["answer_type"] in ("yes_no", "number", "location", "text")
            if q["kind"] == "suvmax":
                assert q["value"] == pytest.approx(by_id[q["lesion_id"]]["suvmax"])
            if q["kind"] == "size":
                assert q["value"] == pytest.approx(by_id[q["lesion_id"]]["size_mm"])
            if q["kind"] == "normal":
                assert (q["answer"] in ("Có", "Yes")) == (not gt["lesions"])


def test_normal_study_report_says_so(tmp_path) -> None:
    cfg = replace(SMALL, lesions=LesionConfig(normal_fraction=1.0))
    write_dataset(tmp_path / "n", 1, seed=0, config=cfg, progress=False)
    gt = json.loads((tmp_path / "n" / "ground_truth" / "phantom_00000.json").read_text())
    assert gt["lesions"] == []
    assert "không" in gt["report_vi"][IMPRESSION_KEY["vi"]].lower()
    assert "no " in gt["report_en"][IMPRESSION_KEY["en"]].lower()


@pytest.mark.parametrize("layout", ["vimed", "nifti", "dicom"])
def test_every_layout_reads_back(layout, tmp_path) -> None:
    out = tmp_path / layout
    write_dataset(out, 2, seed=5, layout=layout, config=SMALL, progress=False)
    desc = read_dataset(out)
    for entry in desc["studies"]:
        study = load_study(out, LoadOptions(study_id=entry["id"]))
        assert study.layout.startswith("vipet-dataset/") and study.id == entry["id"]
        case = simulate_case(int(entry["id"].split("_")[1]), 5, SMALL)
        assert study.ct.shape == case.study.ct.shape or layout == "nifti"  # AutoPET reads CTres
        assert len(study.lesions) == len(case.lesions)
        if layout == "dicom":
            # Through the DICOM path (Bq/mL + radiopharmaceutical tags) SUV comes back within 1 %.
            ref = case.study.pet.array
            assert study.pet.units.value == "SUVbw" and study.pet.shape == ref.shape
            big = ref > 0.1
            rel = np.abs(study.pet.array[big] - ref[big]) / ref[big]
            assert rel.max() < 0.01
            np.testing.assert_allclose(study.ct.array, case.study.ct.array, atol=1)
        if layout == "nifti":
            np.testing.assert_allclose(study.pet.array, case.study.pet.array, rtol=1e-6)
        if layout == "vimed":
            # Raw counts in the release, SUV again through the dataset (int16 quantisation).
            assert study.pet.units.value == "SUVbw" and study.report is not None
            np.testing.assert_allclose(study.pet.array[::-1], case.study.pet.array, atol=0.01)
    # The plain readers find it too, and say which layout they found.
    first = desc["studies"][0]
    inner = {"vimed": "vimed", "nifti": "autopet", "dicom": "dicom"}[layout]
    # (a ViMed-PET release shares the dataset root, where the dataset layout comes first)
    plain = load_study(
        out / first["path"], LoadOptions(study_id=first.get("study_id")), layout=inner
    )
    assert plain.layout == inner and plain.lesions is None


def test_refuses_non_empty_output(tmp_path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        write_dataset(tmp_path / "x", 1, config=SMALL, progress=False)
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


def test_dicom_layout_is_reproducible_too(tmp_path) -> None:
    # UIDs derive from the seed, so even DICOM files are byte-identical across runs.
    for name in ("a", "b"):
        write_dataset(tmp_path / name, 1, seed=9, layout="dicom", config=SMALL, progress=False)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)


def test_dataset_layout_feeds_the_cache(vimed_dataset, tmp_path) -> None:
    from vipet.io import find_studies
    from vipet.preprocess import PreprocessConfig
    from vipet.preprocess.cache import build_cache, load_shard

    refs = find_studies(vimed_dataset)
    desc = read_dataset(vimed_dataset)
    assert [r.name for r in refs] == [s["id"] for s in desc["studies"]]
    assert all(r.layout == "vipet-dataset" for r in refs)
    cfg = PreprocessConfig(grid=(8, 32, 32))
    report = build_cache(refs[:1], tmp_path / "cache", cfg, progress=False)
    assert report.built == 1 and not report.failed
    samples = load_shard(tmp_path / "cache" / report.entries[0]["shard"])
    ids = {int(i) for s in samples for i in np.unique(s.lesion) if i}
    gt = json.loads((vimed_dataset / "ground_truth" / f"{refs[0].name}.json").read_text())
    assert ids == {les["id"] for les in gt["lesions"]}
