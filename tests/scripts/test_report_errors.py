"""scripts/report_errors.py: the lesion and yes/no tallies on a hand-made study."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def report_errors(load_script):
    return load_script("report_errors")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    lesions = [
        {"type": "nodule", "location": "abdomen"},  # a liver nodule
        {"type": "nodule", "location": "lung"},
        {"type": "lymph_node", "location": "mediastinum"},
    ]
    questions = [
        {"question": "Q1", "answer": "Có", "answer_type": "yes_no", "kind": "avid"},
        {"question": "Q2", "answer": "Không", "answer_type": "yes_no", "kind": "normal"},
        {"question": "Q3", "answer": "12 mm", "answer_type": "number", "kind": "size"},
    ]
    gt = {"id": "s1", "lesions": lesions, "questions_vi": questions}
    (tmp_path / "ground_truth").mkdir()
    (tmp_path / "ground_truth" / "s1.json").write_text(json.dumps(gt), encoding="utf-8")
    return tmp_path


def test_place_errors_pairs_a_misplaced_lesion_with_its_type(report_errors, data) -> None:
    # the liver nodule written in the lung, the lung one right, the mediastinal node
    # written in the axilla, and a second axillary node that is not there
    report = (
        "Lồng ngực: Hình ảnh nốt mờ ở thùy trên phổi phải, kích thước 10 mm. "
        "Hình ảnh nốt mờ ở thùy dưới phổi trái, kích thước 8 mm. "
        "Hình ảnh hạch hố nách phải, kích thước 9 mm. "
        "Hình ảnh hạch hố nách trái, kích thước 7 mm."
    )
    refs = report_errors.references(data, ["s1"], "vi")
    right, errors = report_errors.place_errors({"s1": {"report": report}}, refs, "vi")
    assert right == 1
    # with the node left out instead, it is missing
    report = report.split(" Hình ảnh hạch")[0]
    _, errors_2 = report_errors.place_errors({"s1": {"report": report}}, refs, "vi")
    assert errors_2[("lymph_node", "mediastinum", "MISSING")] == 1
    assert errors == {
        ("nodule", "abdomen", "lung"): 1,
        ("lymph_node", "mediastinum", "axilla"): 1,
        ("lymph_node", "EXTRA", "axilla"): 1,
    }


def test_yes_no_by_kind_counts_truth_against_answer(report_errors, data) -> None:
    answers = [
        {"question": "Q1", "prediction": "Không"},
        {"question": "Q2", "prediction": " không, 1"},  # parsed as the evaluator parses it
        {"question": "Q3", "prediction": "12 mm"},  # not a yes/no question
        {"question": "unknown", "prediction": "Có"},
    ]
    refs = report_errors.references(data, ["s1"], "vi")
    kinds = report_errors.yes_no_by_kind({"s1": {"answers": answers}}, refs, "vi")
    assert kinds == {"avid": {("yes", "no", False): 1}, "normal": {("no", "no", True): 1}}
