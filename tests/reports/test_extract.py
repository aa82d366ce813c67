"""Rule-based findings extraction: ViPET's own rendered reports and real-style sentences."""

from __future__ import annotations

import numpy as np
import pytest

from tests.reports.factories import PHYSIOLOGY, example_lesions
from vipet.reports.extract import detect_language, extract_findings
from vipet.reports.render import render_report, report_text


def _keys(lesions) -> list[tuple]:
    return sorted((x.type, x.location, x.fdg_avid) for x in lesions)


@pytest.mark.parametrize("lang", ["vi", "en"])
@pytest.mark.parametrize("seed", range(5))
def test_rendered_reports_round_trip(lang: str, seed: int) -> None:
    lesions = example_lesions()
    report = render_report(lesions, lang, np.random.default_rng(seed), PHYSIOLOGY)
    found = extract_findings(report)  # language auto-detected, impression ignored
    assert _keys(found) == _keys(lesions)
    by_suv = {round(x.suvmax, 1): x for x in found}
    for lesion in lesions:
        hit = by_suv[round(lesion.suvmax, 1)]
        assert hit.size_mm == pytest.approx(lesion.size_mm, abs=0.5)
        assert hit.location_detail == lesion.location_detail


def test_vi_several_findings_in_one_sentence() -> None:
    text = (
        "Hình ảnh hạch cổ trái nhóm IV và hạch thượng đòn trái, kích thước lớn nhất "
        "15 x 12 mm, tăng chuyển hóa FDG (SUVmax: 7,5)."
    )
    found = extract_findings(text)
    assert [(x.location_detail, x.laterality) for x in found] == [
        ("cervical", "left"),
        ("supraclavicular", "left"),
    ]
    assert all(x.type == "lymph_node" and x.location == "neck" for x in found)
    assert all(x.size_mm == 15 and x.suvmax == 7.5 and x.fdg_avid for x in found)


def test_vi_multi_location_split_and_interpretation() -> None:
    text = (
        "Hình ảnh hạch rốn phổi phải và trung thất tăng chuyển hóa FDG (SUVmax = 6.2), "
        "kích thước 5-10 mm, nghĩ nhiều đến hạch di căn."
    )
    found = extract_findings(text, "vi")
    assert [(x.location, x.location_detail, x.laterality) for x in found] == [
        ("lung", "hilar", "right"),
        ("mediastinum", "trung thất", "none"),
    ]
    assert found[0].size_mm == 10 and found[0].suvmax == 6.2  # range → max, dot decimal


def test_vi_both_sides_few_nodes_and_units() -> None:
    found = extract_findings(
        "Hình ảnh vài hạch nhỏ hố nách hai bên, đường kính 1,2 cm, không tăng chuyển hóa FDG."
    )
    assert len(found) == 1  # "vài hạch" is one lesion
    (node,) = found
    assert (node.type, node.location, node.laterality) == ("lymph_node", "axilla", "both")
    assert node.size_mm == 12 and node.fdg_avid is False and node.suvmax is None


def test_vi_negatives_and_physiology_make_no_lesion() -> None:
    text = (
        "Hình ảnh bắt xạ theo đặc điểm sinh lý ở não. Không phát hiện hạch to vùng cổ. "
        "Chưa phát hiện hình ảnh tăng chuyển hóa FDG bất thường ở hệ thống cơ xương. "
        "Gan, lách, tụy không thấy tổn thương khu trú; không thấy hạch ổ bụng. "
        "Gan bắt xạ đồng nhất (SUVmean: 2,2)."
    )
    assert extract_findings(text) == []


def test_vi_types_and_bone() -> None:
    text = (
        "Hình ảnh nốt kính mờ thùy dưới phổi phải ( 8 mm) không tăng chuyển hóa FDG. "
        "Tràn dịch màng phổi trái lượng ít. "
        "Hình ảnh tăng chuyển hóa FDG tại thân đốt sống L3 (SUVmax: 9,0). "
        "Hình ảnh tổn thương tiêu xương ở xương sườn 5 phải, SUVmax 3,1."
    )
    found = extract_findings(text)
    assert [(x.type, x.location, x.fdg_avid) for x in found] == [
        ("ground_glass", "lung", False),
        ("effusion", "lung", False),
        ("hypermetabolism", "other", True),
        ("other", "other", True),  # no uptake wording: SUVmax 3.1 ≥ 2.5 → avid
    ]
    assert found[3].location_detail == "rib" and found[3].laterality == "right"


def test_en_equivalents() -> None:
    text = (
        "Physiological FDG uptake in the brain. "
        "Enlarged lymph nodes in the right hilum and mediastinum, the largest 15 x 12 mm, "
        "with increased FDG uptake (SUVmax 7.5), suspicious for nodal metastasis. "
        "Several small bilateral axillary nodes with no significant FDG uptake. "
        "A 2 cm mass in the left upper lobe of the lung with an SUVmax of 12,4. "
        "No pulmonary nodule. No abnormal FDG uptake in the abdomen and pelvis."
    )
    assert detect_language(text) == "en"
    found = extract_findings(text)
    assert [(x.type, x.location, x.laterality, x.fdg_avid) for x in found] == [
        ("lymph_node", "lung", "right", True),
        ("lymph_node", "mediastinum", "none", True),
        ("lymph_node", "axilla", "both", False),
        ("mass", "lung", "left", True),
    ]
    assert found[3].size_mm == 20 and found[3].suvmax == 12.4


def test_report_dict_reads_findings_only() -> None:
    report = {
        "Findings": {"Head and neck": "A left cervical lymph node with increased FDG uptake."},
        "Impression": "FDG-avid left cervical lymph node, suspicious for malignancy.",
    }
    assert len(extract_findings(report)) == 1
    assert extract_findings({"Findings": {"Chest": "No abnormal FDG uptake."}}) == []


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_report_as_laid_out_text_reads_findings_only(lang: str) -> None:
    # a generated report is `report_text` of one: its impression line repeats the lesions
    lesions = example_lesions()
    report = render_report(lesions, lang, np.random.default_rng(0), PHYSIOLOGY)
    text = report_text(report)
    assert _keys(extract_findings(text)) == _keys(lesions)
    # the impression alone, without the layout, does name lesions: the cut is what counts
    impression = text.splitlines()[-1].partition(":")[2]
    assert extract_findings(impression, lang)
    # text without the layout is read whole, as before
    assert len(extract_findings(text.replace(":\n", " ").replace(":", ","), lang)) > len(lesions)


def test_to_dict_and_lesion() -> None:
    (x,) = extract_findings("Hình ảnh hạch nách phải 10 mm, SUVmax: 2,4.")
    d = x.to_dict()
    assert d["fdg_avid"] is False and d["location_detail"] == "axillary"
    assert x.to_lesion(3).section == "chest"
