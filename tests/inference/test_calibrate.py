"""Per-class slot thresholds: the detector scores by counting, selection, the search, the
model config and `detect` honouring them, and the command."""

from __future__ import annotations

import json
import random

import pytest
import torch

from vipet.cli import main
from vipet.evaluation.clinical import clinical_scores
from vipet.evaluation.detector import Candidate, quick_f1, select
from vipet.inference.calibrate import calibrate, write_thresholds
from vipet.model.config import ViPetConfig
from vipet.model.diag_head import OUTPUTS, DenseFindings
from vipet.model.findings_slots import detect
from vipet.reports.schema import LESION_TYPES


def _lesion(rng: random.Random) -> dict:
    return {
        "type": rng.choice(["lymph_node", "nodule", "effusion", "other"]),
        "location": rng.choice(["lung", "mediastinum", "other"]),
        "fdg_avid": rng.random() < 0.5,
    }


def test_quick_f1_is_the_protocol_matching() -> None:
    rng = random.Random(0)
    for _ in range(20):
        ids = [f"s{i}" for i in range(6)]
        pred = {s: [_lesion(rng) for _ in range(rng.randint(0, 5))] for s in ids}
        ref = {s: [_lesion(rng) for _ in range(rng.randint(0, 5))] for s in ids[1:]}
        full = clinical_scores(pred, ref)
        fast = quick_f1(pred, ref)
        for key, value in fast.items():
            assert value == pytest.approx(full[key]), key


def _cand(region: str, score: float, kind: str, avid: bool, location: str = "lung") -> Candidate:
    finding = {"type": kind, "fdg_avid": avid, "location": location, "region": region}
    return Candidate(region, score, finding)


def test_select_keeps_the_strongest_per_region_above_their_class_bar() -> None:
    found = {
        "s": [
            _cand("chest", 0.9, "nodule", True),
            _cand("chest", 0.8, "nodule", True),
            _cand("chest", 0.7, "nodule", True),
            _cand("chest", 0.2, "lymph_node", False),
            _cand("abdomen_pelvis", 0.35, "lymph_node", True),
        ]
    }
    assert len(select(found, 0.3, 8)["s"]) == 4
    assert len(select(found, 0.3, 2)["s"]) == 3  # two in the chest, one in the abdomen
    picked = select(found, 0.3, 8, {"lymph_node/not_avid": 0.15, "nodule/avid": 0.75})
    assert sorted((f["type"], f["fdg_avid"]) for f in picked["s"]) == [
        ("lymph_node", False),
        ("lymph_node", True),
        ("nodule", True),
        ("nodule", True),
    ]


def test_calibrate_lowers_a_faint_class_and_shuts_a_false_one() -> None:
    # every study: one true non-avid node whose peak is faint (0.2), and one false
    # effusion the head calls at 0.5; one bright true avid node at 0.9
    found, refs = {}, {}
    for i in range(10):
        sid = f"s{i}"
        found[sid] = [
            _cand("chest", 0.9, "lymph_node", True, "mediastinum"),
            _cand("chest", 0.2, "lymph_node", False, "mediastinum"),
            _cand("chest", 0.5, "effusion", False),
        ]
        refs[sid] = [
            {"type": "lymph_node", "fdg_avid": True, "location": "mediastinum"},
            {"type": "lymph_node", "fdg_avid": False, "location": "mediastinum"},
        ]
    result = calibrate(found, refs, default=0.3, slots=8)
    assert result.thresholds["lymph_node/not_avid"] < 0.2
    assert result.thresholds["effusion/not_avid"] >= 0.5
    assert "lymph_node/avid" not in result.thresholds  # the default already serves it
    assert result.after["f1_tpf"] == pytest.approx(1.0)
    assert result.before["f1_tpf"] == pytest.approx(2 * 10 / (20 + 20))


def test_calibrate_leaves_classes_without_support_alone() -> None:
    found = {"s": [_cand("chest", 0.2, "nodule", False)]}
    refs = {"s": [{"type": "nodule", "fdg_avid": False, "location": "lung"}]}
    result = calibrate(found, refs, default=0.3, slots=8, min_support=5)
    assert result.thresholds == {} and result.after == result.before


def test_config_threshold_table_and_its_errors() -> None:
    cfg = ViPetConfig(slot_thresholds={"nodule/not_avid": 0.15, "effusion/avid": 1.0})
    table = cfg.class_threshold_table()
    assert table[LESION_TYPES.index("nodule")] == [cfg.slot_threshold, 0.15]
    assert table[LESION_TYPES.index("effusion")][0] == 1.0
    assert ViPetConfig().class_threshold_table() is None
    with pytest.raises(ValueError, match="unknown class 'nodules/avid'"):
        ViPetConfig(slot_thresholds={"nodules/avid": 0.2})
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        ViPetConfig(slot_thresholds={"nodule/avid": 0.0})


def _dense(types_at: dict[tuple[int, int, int], int], heat_at: dict) -> DenseFindings:
    """Maps of one 4x8x8 volume: heat peaks where given, each with a type (avid)."""
    shape = (1, 4, 8, 8)
    maps = {k: torch.full((1, n, *shape[1:]) if n > 1 else shape, -8.0) for k, n in OUTPUTS.items()}
    for vox, p in heat_at.items():
        maps["heat"][(0, *vox)] = torch.logit(torch.tensor(p))
    maps["avid"][:] = 8.0
    for vox, t in types_at.items():
        z, y, x = vox
        maps["types"][0, t, max(0, z - 1) : z + 2, max(0, y - 1) : y + 2, max(0, x - 1) : x + 2] = (
            8.0
        )
    return DenseFindings(**maps)


def test_detect_holds_each_class_to_its_own_threshold() -> None:
    node, nodule = LESION_TYPES.index("lymph_node"), LESION_TYPES.index("nodule")
    a, b = (1, 2, 2), (2, 6, 6)
    dense = _dense({a: node, b: nodule}, {a: 0.25, b: 0.6})
    pet = torch.zeros(1, 4, 16, 16)
    grid = (1, 2, 2)
    assert [d["type"] for d in detect(dense, pet, grid, 4, 0.3).attributes[0]] == ["nodule"]
    table = torch.full((len(LESION_TYPES), 2), 0.3)
    table[node, 0] = 0.2  # avid nodes from 0.2
    table[nodule, 0] = 0.7  # avid nodules from 0.7
    found = detect(dense, pet, grid, 4, 0.3, class_thresholds=table).attributes[0]
    assert [d["type"] for d in found] == ["lymph_node"]
    # and only the K strongest that pass fill the slots
    table[nodule, 0] = 0.2
    assert len(detect(dense, pet, grid, 1, 0.3, class_thresholds=table).attributes[0]) == 1


def test_write_thresholds_and_the_command_refusals(tmp_path, capsys) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vipet"}))
    write_thresholds(tmp_path, {"nodule/avid": 0.2})
    assert json.loads((tmp_path / "config.json").read_text())["slot_thresholds"] == {
        "nodule/avid": 0.2
    }
    args = ["calibrate", "--checkpoint", str(tmp_path / "none"), "--data", str(tmp_path)]
    assert main(args) == 1
    assert "no config.json" in capsys.readouterr().err
    assert main([*args, "--split", "test"]) == 1
    assert "never on test" in capsys.readouterr().err
