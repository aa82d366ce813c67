"""VQA scoring: answer parsing (VI/EN), numeric tolerances, location classes, accuracies."""

from __future__ import annotations

import numpy as np
import pytest

from tests.reports.factories import random_lesions
from vipet.evaluation.vqa import (
    Place,
    VqaTolerance,
    numbers_match,
    parse_answer,
    parse_location,
    score_item,
    score_vqa,
)
from vipet.reports.questions import make_questions
from vipet.reports.schema import FINE_LOCATIONS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Có", True), ("có.", True), ("Có, có hạch ở cổ phải", True), ("Không", False),
        ("Không có", False), ("không có tổn thương", False), ("Yes", True),
        ("yes, it is", True), ("No.", False), ("None", False), ("có thể", None),
        ("maybe", None), ("", None),
    ],
)  # fmt: skip
def test_parse_yes_no_both_languages(text: str, expected: bool | None) -> None:
    assert parse_answer(text, "yes_no", "vi") is expected
    assert parse_answer(text, "yes_no", "en") is expected


@pytest.mark.parametrize(
    ("text", "lang", "expected"),
    [
        ("8,1", "vi", 8.1), ("SUVmax: 8,1", "vi", 8.1), ("8.1", "en", 8.1),
        ("12 mm", "vi", 12.0), ("12mm", "en", 12.0), ("1.2 cm", "en", 12.0),
        ("1,2 cm", "vi", 12.0), ("12 x 8 mm", "vi", 12.0), ("1,2 x 0,8 cm", "vi", 12.0),
        ("đốt sống T8, SUVmax 5,2", "vi", 5.2), ("3", "vi", 3.0), ("hai hạch", "vi", 2.0),
        ("two nodes", "en", 2.0), ("Không có", "vi", 0.0), ("none", "en", 0.0),
        ("1,234", "en", 1234.0), ("1,234", "vi", 1.234), ("chưa rõ", "vi", None),
    ],
)  # fmt: skip
def test_parse_number(text: str, lang: str, expected: float | None) -> None:
    got = parse_answer(text, "number", lang)
    assert got == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("text", "location", "side"),
    [
        ("Hạch cổ phải nhóm IV", "neck", "right"),
        ("right level IV cervical lymph node", "neck", "right"),
        ("Nốt mờ thùy trên phổi trái", "lung", "left"),
        ("nodule in the left upper lobe of the lung", "lung", "left"),
        ("Hạch dưới carina", "mediastinum", "none"),
        ("subcarinal lymph node", "mediastinum", "none"),
        ("hạch hố nách trái", "axilla", "left"),
        ("left axillary lymph node", "axilla", "left"),
        ("Khối giảm tỷ trọng ở gan", "abdomen", "none"),
        ("hypodense mass in the liver", "abdomen", "none"),
        ("hạch bẹn hai bên", "abdomen", "both"),
        ("bilateral inguinal lymph node", "abdomen", "both"),
        ("Tổn thương tiêu xương ở đốt sống T8", "other", "none"),
        ("lytic lesion in the C5 cervical vertebra", "other", "none"),
        ("xương cánh chậu phải", "other", "right"),
        ("Dày màng phổi ở xương sườn phải", "other", "right"),  # the place follows "ở"
        ("pleural thickening in the right rib", "other", "right"),
        ("tràn dịch màng phổi trái", "lung", "left"),
        ("phổi phải và trái", "lung", "both"),
        ("không rõ", None, "none"),
    ],
)
def test_parse_location_vi_en(text: str, location: str | None, side: str) -> None:
    assert parse_location(text) == Place(location, side)
    assert parse_answer(text, "location", "en") == Place(location, side)


def test_parse_answer_rejects_unknown_type_and_lang() -> None:
    with pytest.raises(ValueError, match="answer type"):
        parse_answer("x", "colour", "vi")
    with pytest.raises(ValueError, match="language"):
        parse_answer("x", "yes_no", "fr")
    with pytest.raises(ValueError, match="suv_rel"):
        VqaTolerance(suv_rel=-0.1)


@pytest.mark.parametrize(
    ("predicted", "reference", "kind", "ok"),
    [
        (8.8, 8.0, "suvmax", True), (7.2, 8.0, "suvmax", True), (8.9, 8.0, "suvmax", False),
        (7.1, 8.0, "suvmax", False), (12.0, 10.0, "size", True), (8.0, 10.0, "size", True),
        (12.1, 10.0, "size", False), (3.0, 3.0, "count_nodes", True),
        (4.0, 3.0, "count_nodes", False), (None, 3.0, "count_nodes", False),
    ],
)  # fmt: skip
def test_numeric_tolerance_edges(
    predicted: float | None, reference: float, kind: str, ok: bool
) -> None:
    assert numbers_match(predicted, reference, kind, VqaTolerance()) is ok


def test_tolerance_through_items_and_custom_tolerance() -> None:
    item = {"answer": "8,0", "answer_type": "number", "kind": "suvmax", "value": 8.0}
    assert score_item(item | {"prediction": "SUVmax 8,8", "lang": "vi"})["correct"]
    assert not score_item(item | {"prediction": "8.9", "lang": "en"})["correct"]
    size = {"answer": "10 mm", "answer_type": "number", "kind": "size", "value": None}
    assert score_item(size | {"prediction": "1,2 cm", "lang": "vi"})["correct"]  # 12 mm
    assert not score_item(size | {"prediction": "12,1 mm", "lang": "vi"})["correct"]
    count = {"answer": "2", "answer_type": "number", "kind": "count_nodes", "value": 2.0}
    assert score_item(count | {"prediction": "3"}, VqaTolerance(count_abs=1))["correct"]
    with pytest.raises(ValueError, match="lacks"):
        score_item({"answer": "Có"})


def _item(answer_type: str, kind: str, answer: str, prediction: str, lang: str, value=None):
    return {
        "question": "?", "answer": answer, "prediction": prediction,
        "answer_type": answer_type, "kind": kind, "value": value, "lang": lang,
    }  # fmt: skip


HAND_MADE = [
    _item("yes_no", "type_in_region", "Có", "Có, có hạch.", "vi"),  # right
    _item("yes_no", "type_in_region", "Không", "Có", "vi"),  # wrong
    _item("yes_no", "avid", "No", "No.", "en"),  # right
    _item("yes_no", "avid", "Yes", "maybe", "en"),  # wrong, unparsed
    _item("number", "suvmax", "8,0", "SUVmax 8,8", "vi", 8.0),  # right (edge)
    _item("number", "suvmax", "8.0", "8.9", "en", 8.0),  # wrong
    _item("number", "size", "10 mm", "1,2 cm", "vi", 10.0),  # right (edge)
    _item("number", "count_nodes", "2", "hai hạch", "vi", 2.0),  # right
    _item("number", "count_nodes", "3", "4", "en", 3.0),  # wrong
    _item("location", "most_avid_location", "Hạch cổ phải", "hạch cổ trái", "vi"),  # class
    _item("location", "most_avid_location", "Nodule in the right upper lobe of the lung",
          "right lung", "en"),  # class + side
    _item("location", "most_avid_location", "subcarinal lymph node", "hạch hố nách trái",
          "en"),  # wrong
    _item("text", "abnormal_region", "Lồng ngực, ổ bụng - khung chậu",
          "lồng ngực, ổ bụng - khung chậu.", "vi"),  # exact after normalisation
    _item("text", "abnormal_region", "Chest", "Head and neck", "en"),  # wrong
]  # fmt: skip


def test_score_vqa_hand_made_list() -> None:
    got = score_vqa(HAND_MADE)
    assert got["n"] == 14 and got["correct"] == 8
    assert got["accuracy"] == pytest.approx(8 / 14)
    assert got["closed_accuracy"] == pytest.approx(2 / 4)
    by_type = {t: (v["n"], v["correct"]) for t, v in got["by_type"].items()}
    assert by_type == {"yes_no": (4, 2), "number": (5, 3), "location": (3, 2), "text": (2, 1)}
    by_kind = {k: (v["n"], v["correct"]) for k, v in got["by_kind"].items()}
    assert by_kind == {
        "type_in_region": (2, 1), "avid": (2, 1), "suvmax": (2, 1), "size": (1, 1),
        "count_nodes": (2, 1), "most_avid_location": (3, 2), "abnormal_region": (2, 1),
    }  # fmt: skip
    assert got["location"] == {
        "n": 3,
        "class_accuracy": pytest.approx(2 / 3),
        "class_side_accuracy": pytest.approx(1 / 3),
    }
    text = got["text"]
    assert text["n"] == 2 and text["exact_match"] == pytest.approx(0.5)
    # ROUGE-1 by hand: 8 reference tokens all in the 9-token prediction (P 8/9, R 1,
    # F1 16/17); "chest" vs "head and neck" shares nothing: mean 8/17.
    assert text["rouge1"] == pytest.approx(8 / 17)
    assert 0.0 <= text["bleu4"] <= 1.0 and 0.0 <= text["rouge_l"] <= 1.0
    assert got["unparsed"] == 1


def test_score_vqa_empty() -> None:
    got = score_vqa([])
    assert got["n"] == 0 and got["accuracy"] is None and got["closed_accuracy"] is None
    assert got["text"]["bleu4"] is None


def test_generated_reference_answers_score_themselves_and_parse_to_truth() -> None:
    """Every answer `make_questions` writes parses back to its lesion's class and side."""
    n = 0
    for seed in range(25):
        rng = np.random.default_rng(seed)
        lesions = random_lesions(rng, int(rng.integers(1, 8)))
        by_id = {lesion.id: lesion for lesion in lesions}
        for lang in ("vi", "en"):
            for qa in make_questions(lesions, lang, rng):
                item = qa.to_dict() | {"prediction": qa.answer, "lang": lang}
                result = score_item(item)
                assert result["correct"] and not result["unparsed"], item
                if qa.answer_type == "location":
                    lesion = by_id[qa.lesion_id]
                    place = parse_location(qa.answer)
                    assert place.location == lesion.location, qa.answer
                    if FINE_LOCATIONS[lesion.location_detail].lateral:
                        assert place.side == lesion.laterality, qa.answer
                n += 1
    assert n > 300
