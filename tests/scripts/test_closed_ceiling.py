"""scripts/closed_ceiling.py: the reader of a lesion list, the evidence it conditions on,
and the answer rates learnt from a split's slots."""

from __future__ import annotations

import pytest

from vipet.reports.questions import YES_NO, type_questions
from vipet.reports.schema import Lesion


@pytest.fixture(scope="module")
def cc(load_script):
    return load_script("closed_ceiling")


def _type_question(table, lesion_type: str, region: str) -> str:
    """The first template's question about ``lesion_type`` anywhere in ``region``."""
    return next(
        q
        for q, (scope, t) in table.items()
        if t == lesion_type and scope.region == region and scope.location is None
    )


def test_answer_rates_learn_what_the_slots_miss(cc, monkeypatch) -> None:
    """With no node in its slots the reader says "no"; when most such questions of the fit
    split are "yes" (nodes the head missed) the rates answer "yes"; an even split leaves
    the slots' answer; the normal question keys on the slots' answer alone."""
    table = type_questions("en")
    node = _type_question(table, "lymph_node", "chest")
    mass = _type_question(table, "mass", "chest")
    yes, no = YES_NO["en"]

    def qa(question: str, answer: str, kind: str = "type_in_region") -> dict:
        return {"question": question, "answer": answer, "kind": kind}

    gts = {
        "a": [qa(node, yes), qa(mass, yes), qa("normal?", no, "normal")],
        "b": [qa(node, yes), qa(mass, no), qa("normal?", no, "normal")],
        "c": [qa(node, no), qa("normal?", yes, "normal")],
    }
    monkeypatch.setattr(
        cc, "ground_truth", lambda data, sid: {"lesions": [], "questions_en": gts[sid]}
    )
    lists = {sid: [] for sid in gts}  # the head found nothing in any of them
    rates = cc.answer_rates(None, lists, "en", table)
    assert rates == {
        ("type_in_region", False, "lymph_node", "chest"): True,  # 2 yes, 1 no
        ("normal", True): False,  # 2 not normal, 1 normal
    }  # the mass question split 1 : 1 — left to the slots
    found = [
        Lesion.at(
            1,
            "lymph_node",
            "subcarinal",
            "none",
            size_mm=9.0,
            short_mm=None,
            suvmax=None,
            fdg_avid=False,
        )
    ]
    assert cc.read_answer(qa(node, yes), found, {}, table) is True
    assert cc.read_answer(qa(node, yes), [], {}, table) is False
    assert cc.evidence(qa(node, yes), True, {}, table) == (
        "type_in_region",
        True,
        "lymph_node",
        "chest",
    )
    named = {"kind": "avid", "lesion_id": 3}
    truth = {3: {"type": "nodule", "location": "lung"}}
    assert cc.evidence(named, False, truth, table) == ("avid", False, "nodule")
