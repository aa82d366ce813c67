"""Clinical-efficacy protocol: greedy matching and micro F1-T/TP/TF/TPF (DOMAIN.md §4)."""

from __future__ import annotations

import pytest

from vipet.evaluation.clinical import clinical_scores, match_lesions
from vipet.reports.extract import extract_findings
from vipet.reports.schema import Lesion


def L(type: str, location: str, avid: bool = True, suv: float | None = None, size=None) -> dict:
    return {"type": type, "location": location, "fdg_avid": avid, "suvmax": suv, "size_mm": size}


def test_greedy_takes_first_unused_reference() -> None:
    ref = [L("lymph_node", "neck"), L("lymph_node", "neck"), L("nodule", "lung")]
    pred = [L("lymph_node", "neck"), L("lymph_node", "neck"), L("lymph_node", "neck")]
    # Duplicates: each predicted node takes the next unused one; the third finds none.
    assert match_lesions(pred, ref, ("type", "location")) == [(0, 0), (1, 1)]


def test_other_never_matches() -> None:
    ref = [L("other", "other"), L("hypermetabolism", "other"), L("nodule", "lung")]
    pred = [L("other", "other"), L("hypermetabolism", "other"), L("nodule", "lung")]
    assert match_lesions(pred, ref, ("type",)) == [(1, 1), (2, 2)]  # type "other" out
    assert match_lesions(pred, ref, ("type", "location")) == [(2, 2)]  # location "other"
    assert match_lesions(pred, ref, ("type",), match_other=True) == [(0, 0), (1, 1), (2, 2)]


def test_scores_hand_computed() -> None:
    ref = {
        "a": [L("lymph_node", "neck", True, 8.0, 12), L("nodule", "lung", False, 1.0, 6)],
        "b": [L("mass", "abdomen", True, 10.0, 30)],
    }
    pred = {
        "a": [L("lymph_node", "neck", True, 7.5, 14), L("nodule", "mediastinum", False)],
        "b": [L("mass", "abdomen", False), L("effusion", "lung", False)],
    }
    s = clinical_scores(pred, ref)
    # T: node, nodule, mass match → tp 3; 4 predicted, 3 reference.
    # P = 3/4, R = 3/3 = 1, F1 = 2*0.75*1/1.75 = 6/7.
    assert (s["T"]["tp"], s["T"]["n_pred"], s["T"]["n_ref"]) == (3, 4, 3)
    assert s["f1_t"] == pytest.approx(6 / 7)
    # TP: nodule's place differs → tp 2; P = 2/4, R = 2/3, F1 = 2*(1/2)(2/3)/(7/6) = 4/7.
    assert s["f1_tp"] == pytest.approx(4 / 7)
    # TF: mass avidity differs → tp 2 → 4/7 as well.
    assert s["f1_tf"] == pytest.approx(4 / 7)
    # TPF: only the node → tp 1; P = 1/4, R = 1/3, F1 = 2*(1/12)/(7/12) = 2/7.
    assert s["TPF"]["tp"] == 1 and s["f1_tpf"] == pytest.approx(2 / 7)
    # Errors on the one TPF pair: |7.5 - 8| = 0.5, |14 - 12| = 2.
    assert s["suvmax_mae"] == pytest.approx(0.5) and s["size_mae_mm"] == pytest.approx(2.0)
    assert s["suvmax_n"] == 1 and s["size_n"] == 1
    node = s["per_type"]["lymph_node"]
    assert node["support"] == 1 and node["f1"] == 1.0
    assert s["per_type"]["mass"]["recall"] == 0.0 and s["per_location"]["lung"]["n_pred"] == 1


def test_empty_reports() -> None:
    s = clinical_scores({"a": []}, {"a": []})
    assert s["f1_tpf"] == 0.0 and s["TPF"]["n_pred"] == 0 and s["n_studies"] == 1
    # Nothing predicted: precision undefined → 0, recall 0; missing study = empty list.
    s = clinical_scores({}, {"a": [L("nodule", "lung")]})
    assert s["TPF"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0,
                        "n_pred": 0, "n_ref": 1}  # fmt: skip


def test_multi_location_split_and_mixed_inputs() -> None:
    ref = [
        Lesion.at(0, "lymph_node", "hilar", "right", size_mm=10, short_mm=None, suvmax=6.0,
                  fdg_avid=True),
        Lesion.at(1, "lymph_node", "subcarinal", "none", size_mm=9, short_mm=None, suvmax=5.0,
                  fdg_avid=True),
    ]  # fmt: skip
    pred = extract_findings(
        "Hình ảnh hạch rốn phổi phải và dưới carina tăng chuyển hóa FDG (SUVmax: 6,0)."
    )
    s = clinical_scores({"p": pred}, {"p": ref})
    # Two lesions from one phrase; both match on type, class (lung, mediastinum), FDG.
    assert s["f1_tpf"] == 1.0
    # One SUVmax for both: |6 - 6| and |6 - 5| → mean 0.5.
    assert s["suvmax_mae"] == pytest.approx(0.5)
