"""The consistency guard: stated lesions against the head's detections, per region."""

from __future__ import annotations

import numpy as np
import pytest

from vipet.inference.guard import (
    DIFFERS,
    SUPPORTED,
    UNSUPPORTED,
    GuardConfig,
    check_region,
    check_report,
)
from vipet.reports.render import render_region_findings
from vipet.reports.schema import FINE_LOCATIONS, Lesion


def _lesion(i: int, type_: str, detail: str, side: str, suv: float, size: float) -> Lesion:
    fine = FINE_LOCATIONS[detail]
    return Lesion(
        id=i,
        type=type_,
        location=fine.location,
        location_detail=detail,
        laterality=side if fine.lateral else "none",
        size_mm=size,
        short_mm=None,
        suvmax=suv,
        fdg_avid=suv >= 2.5,
        region=fine.region,
        section=fine.section,
    )


def _finding(les: Lesion, **change) -> dict:
    """A detection as `Detections.attributes` lists it."""
    d = {
        "type": les.type,
        "fdg_avid": les.fdg_avid,
        "location_detail": les.location_detail,
        "location": les.location,
        "section": les.section,
        "laterality": les.laterality,
        "suvmax": les.suvmax,
        "size_mm": les.size_mm,
        "score": 0.9,
    }
    return {**d, **change}


CHEST = [
    _lesion(1, "lymph_node", "subcarinal", "none", 8.4, 14.0),
    _lesion(2, "nodule", "lung_upper", "right", 1.2, 9.0),
]


@pytest.fixture(params=["vi", "en"])
def lang(request) -> str:
    return request.param


def _text(lesions, lang: str) -> str:  # region lines as the LM is taught to write them
    return render_region_findings(lesions, "chest", lang, np.random.default_rng(0))


def test_a_report_that_says_what_the_head_sees_is_supported(lang) -> None:
    out = check_region("chest", _text(CHEST, lang), [_finding(x) for x in CHEST], lang)
    assert [s.status for s in out.statements] == [SUPPORTED, SUPPORTED]
    assert [s.detection for s in out.statements] == [0, 1]
    assert out.omitted == [] and out.counts[SUPPORTED] == 2
    assert all(s.sentence and s.region == "chest" for s in out.statements)


def test_differences_are_named_with_both_values(lang) -> None:
    node, nodule = CHEST
    findings = [_finding(node, suvmax=3.1), _finding(nodule, fdg_avid=True, suvmax=6.0)]
    out = check_region("chest", _text(CHEST, lang), findings, lang)
    assert [s.status for s in out.statements] == [DIFFERS, DIFFERS]
    assert out.statements[0].differences == ["SUVmax: report 8.4, image 3.1"]
    assert any(
        d.startswith("uptake: report not FDG-avid, image FDG-avid")
        for d in out.statements[1].differences
    )
    # within tolerance is agreement: 1 SUV or 20 %, 3 mm or 25 %
    close = [_finding(node, suvmax=7.6, size_mm=16.0), _finding(nodule, size_mm=11.0)]
    assert check_region("chest", _text(CHEST, lang), close, lang).counts[SUPPORTED] == 2
    strict = GuardConfig(suv_abs=0.1, suv_rel=0.0)
    assert (
        check_region("chest", _text(CHEST, lang), close, lang, config=strict).counts[DIFFERS] == 1
    )


def test_unsupported_statements_and_omitted_findings(lang) -> None:
    node, nodule = CHEST
    extra = _lesion(3, "lymph_node", "axillary", "left", 5.0, 12.0)
    out = check_region(
        "chest", _text([node, nodule], lang), [_finding(node), _finding(extra)], lang
    )
    assert [s.status for s in out.statements] == [SUPPORTED, UNSUPPORTED]
    assert out.statements[1].detection is None and out.statements[1].lesion["type"] == "nodule"
    assert [(o.detection, o.finding["location"]) for o in out.omitted] == [(1, "axilla")]
    assert out.counts == {
        SUPPORTED: 1,
        DIFFERS: 0,
        UNSUPPORTED: 1,
        "omitted": 1,
        "looked_elsewhere": 0,
    }


def test_a_mistyped_lesion_at_a_detected_place_differs_not_unsupported(lang) -> None:
    node = CHEST[0]
    out = check_region("chest", _text([node], lang), [_finding(node, type="mass")], lang)
    assert out.statements[0].status == DIFFERS
    assert out.statements[0].differences[0] == "type: report lymph_node, image mass"


def test_attention_flags_statements_that_looked_elsewhere(lang) -> None:
    findings = [_finding(x) for x in CHEST]
    out = check_region("chest", _text(CHEST, lang), findings, lang, attention=[0.6, 0.05])
    assert [s.looked_elsewhere for s in out.statements] == [False, True]
    assert out.counts["looked_elsewhere"] == 1
    with pytest.raises(ValueError, match="attention values"):
        check_region("chest", _text(CHEST, lang), findings, lang, attention=[0.5])


def test_slot_attention_takes_the_share_on_the_matched_detection(lang) -> None:
    findings = [_finding(x) for x in CHEST][::-1]  # detections in another order
    shares = [[0.05, 0.6], [0.7, 0.1]]  # statement i's share on each detection's slot
    out = check_region("chest", _text(CHEST, lang), findings, lang, slot_attention=shares)
    assert [s.detection for s in out.statements] == [1, 0]
    assert [s.attention for s in out.statements] == [0.6, 0.7]
    assert not any(s.looked_elsewhere for s in out.statements)
    with pytest.raises(ValueError, match="slot_attention values"):
        check_region("chest", _text(CHEST, lang), findings, lang, slot_attention=[[0.5, 0.5]])


def test_check_report_covers_every_region_and_serialises(lang) -> None:
    neck = _lesion(4, "lymph_node", "cervical", "right", 6.0, 11.0)
    out = check_report(
        {"chest": _text(CHEST, lang)},
        {"chest": [_finding(x) for x in CHEST], "head_neck": [_finding(neck)]},
        lang,
    )
    assert out.counts[SUPPORTED] == 2
    assert [(o.region, o.detection) for o in out.omitted] == [("head_neck", 0)]
    d = out.to_dict()
    assert d["counts"]["omitted"] == 1 and d["statements"][0]["status"] == SUPPORTED
    assert "sentence" not in d["statements"][0]["lesion"]  # the sentence is the statement's
