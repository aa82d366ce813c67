"""A closed question read back to what it asks, and the detector's evidence for it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.reports.factories import example_lesions, random_lesion
from vipet.inference.evidence import (
    EVIDENCE_FLOOR,
    EVIDENCE_KINDS,
    FEATURES,
    ClosedQuestion,
    evidence,
    read_question,
)
from vipet.reports.questions import YES_NO, Scope, make_questions


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_every_closed_question_the_templates_write_is_read_back(lang) -> None:
    """Over many random studies: a type question reads back to a type and a scope whose
    truth is its reference answer; an avidity question to its lesion's type and place;
    "is the study normal?" to its kind; every other question to None."""
    read = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        lesions = [*example_lesions()] if seed == 0 else []
        lesions += [random_lesion(rng, 10 + i) for i in range(int(rng.integers(0, 6)))]
        for qa in make_questions(lesions, lang, np.random.default_rng(seed)):
            asked = read_question(qa.question, lang)
            if qa.kind not in EVIDENCE_KINDS:
                assert asked is None, qa.question
                continue
            assert asked is not None and asked.kind == qa.kind, qa.question
            read += 1
            if qa.kind == "type_in_region":
                assert asked.scope is not None
                there = any(
                    asked.scope.contains(x) and x.type == asked.lesion_type for x in lesions
                )
                assert there == (qa.answer == YES_NO[lang][0]), qa.question
            elif qa.kind == "avid":
                named = next(x for x in lesions if x.id == qa.lesion_id)
                assert (asked.lesion_type, asked.location) == (named.type, named.location)
    assert read > 200


def test_other_words_are_not_read() -> None:
    assert read_question("Is there anything odd?", "en") is None
    assert read_question("Có hạch ở trung thất không?", "fr") is None
    assert read_question("  có hạch ở trung thất không? ", "vi") is not None  # trimmed


def _cand(type_, detail, side, score, avid=True, region=None) -> dict:
    from vipet.reports.schema import FINE_LOCATIONS

    fine = FINE_LOCATIONS[detail]
    return {
        "type": type_,
        "location_detail": detail,
        "location": fine.location,
        "laterality": side,
        "fdg_avid": avid,
        "score": score,
        "region": region or fine.region,
    }


def _odds(p: float) -> float:
    return math.log(p / (1 - p))


def test_type_evidence_is_the_strongest_candidate_of_the_type_in_the_scope() -> None:
    found = [
        _cand("lymph_node", "axillary", "right", 0.3),
        _cand("lymph_node", "axillary", "left", 0.6),  # the other side
        _cand("mass", "axillary", "right", 0.8),  # another type
        _cand("lymph_node", "lung_upper", "right", 0.9),  # another place
    ]
    right_axilla = Scope("chest", "hố nách phải", "right axilla", "axilla", "right")
    asked = ClosedQuestion("type_in_region", "lymph_node", right_axilla)
    assert evidence(asked, found) == pytest.approx((_odds(0.3), _odds(0.8)))
    chest = Scope("chest", "lồng ngực", "chest")
    assert evidence(ClosedQuestion("type_in_region", "lymph_node", chest), found)[0] == (
        pytest.approx(_odds(0.9))
    )
    # nothing there: a candidate at the floor
    neck = Scope("head_neck", "vùng cổ", "neck", "neck")
    none = evidence(ClosedQuestion("type_in_region", "lymph_node", neck), found)
    assert none == pytest.approx((_odds(EVIDENCE_FLOOR),) * FEATURES)


def test_avid_and_normal_evidence() -> None:
    found = [
        _cand("lymph_node", "cervical", "left", 0.7, avid=True),
        _cand("lymph_node", "cervical", "right", 0.4, avid=False),
        _cand("lymph_node", "cervical", "left", 0.95, avid=True, region="chest"),  # overlap
        _cand("nodule", "cervical", "left", 0.9, avid=False),  # another type
    ]
    asked = ClosedQuestion("avid", "lymph_node", location="neck")
    assert evidence(asked, found, "head_neck") == pytest.approx((_odds(0.7), _odds(0.4)))
    assert evidence(asked, found)[0] == pytest.approx(_odds(0.95))  # any region
    assert evidence(ClosedQuestion("normal"), found) == pytest.approx((_odds(0.95), _odds(0.9)))
    assert evidence(ClosedQuestion("normal"), []) == pytest.approx(
        (_odds(EVIDENCE_FLOOR),) * FEATURES
    )
    with pytest.raises(ValueError, match="no evidence"):
        evidence(ClosedQuestion("suvmax"), found)
