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
from vipet.inference.calibrate import (
    calibrate,
    calibrate_answers,
    write_answer_scale,
    write_thresholds,
)
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


def test_answer_scale_config_and_its_errors(tmp_path) -> None:
    assert ViPetConfig().answer_threshold_scale == 1.0
    for bad in (0.0, -0.5, 2.5, True, "0.7"):
        with pytest.raises(ValueError, match="answer_threshold_scale"):
            ViPetConfig(answer_threshold_scale=bad)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vipet", "x": 1}))
    write_answer_scale(tmp_path, 0.7)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written == {"model_type": "vipet", "x": 1, "answer_threshold_scale": 0.7}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random model whose heatmap peaks (sigma about 0.1 everywhere at the start)
    (0.1 on average, 0.6 at most) rarely clear a bar of 0.5 and often one of 0.25, on a 5-study
    phantom with its cache."""
    from tests.helpers import phantom_with_cache
    from tests.train.common import GRID
    from vipet.data.dataset import ViPetDataset
    from vipet.data.tokenizer import synthetic_corpus, train_tokenizer
    from vipet.evaluation.runner import split_ids
    from vipet.inference.predictor import Predictor
    from vipet.model.presets import build_model

    data, cache = phantom_with_cache(tmp_path_factory.mktemp("answers"), 5, GRID)
    tok = train_tokenizer(synthetic_corpus(20, 0), vocab_size=600)
    torch.manual_seed(0)
    model = build_model("tiny", tok, slot_threshold=0.5).eval()
    ds = ViPetDataset(data, cache, "train", tok, model.visual_tokens_per_region)
    return Predictor(model, tok), data, ds, split_ids(data, "train")


def test_calibrate_answers_tries_every_scale_and_keeps_one_only_when_it_is_better(tiny) -> None:
    from vipet.io.vipet_dataset import ground_truth

    predictor, data, ds, ids = tiny
    filled: list[int] = []  # slots the question's context holds, in the order asked
    inner = predictor.ask

    def spy(ctx, question, lang="vi", region=None, **kw):
        filled.append(int(ctx.visual.detections.filled.sum()))
        return inner(ctx, question, lang, region=region, max_new_tokens=2, **kw)

    predictor.ask = spy
    try:
        result = calibrate_answers(predictor, ds, ids, data, scales=(1.0, 0.5), progress=False)
    finally:
        del predictor.ask
    closed = [
        sum(q["answer_type"] == "yes_no" for q in ground_truth(data, sid)["questions_vi"])
        for sid in ids
    ]
    assert result.questions == sum(closed) > 0
    assert set(result.accuracy) == {"1", "0.5"}
    # each study's questions at 1.0, then at 0.5: the lower bar finds at least as much
    at_one, at_half, i = [], [], 0
    for k in closed:
        at_one += filled[i : i + k]
        at_half += filled[i + k : i + 2 * k]
        i += 2 * k
    assert i == len(filled)
    assert all(h >= o for o, h in zip(at_one, at_half, strict=True)) and sum(at_half) > sum(at_one)
    # a scale is chosen only when it answers better than one operating point
    better = result.accuracy["0.5"] > result.accuracy["1"]
    assert result.scale == (0.5 if better else 1.0)
    with pytest.raises(ValueError, match=r"include 1\.0"):
        calibrate_answers(predictor, ds, ids, data, scales=(0.5,))


def test_questions_read_the_findings_at_their_own_operating_point(tiny) -> None:
    predictor, _, ds, ids = tiny
    model = predictor.model
    samples = list(ds._samples(ids[0]).values())
    ctx = predictor.encode_samples(ids[0], samples)
    assert ctx.answer_visual is None and ctx.for_answers() is ctx  # one operating point
    model.config.answer_threshold_scale = 0.5
    try:
        ctx = predictor.encode_samples(ids[0], samples)
        report_slots = int(ctx.visual.detections.filled.sum())
        answer_slots = int(ctx.answer_visual.detections.filled.sum())
        assert answer_slots > report_slots
        assert torch.equal(ctx.for_answers().visual.tokens, ctx.answer_visual.tokens)
        seen: list = []
        inner = predictor._generate
        predictor._generate = lambda messages, visual, n: (
            seen.append(visual) or inner(messages, visual, n)
        )
        predictor.ask(
            ctx, "Is there a lymph node in the chest?", "en", region="chest", max_new_tokens=2
        )
        predictor.report(ctx, "en", "chest", max_new_tokens=2)
        answered, reported = seen
        assert int(answered.detections.filled.sum()) >= int(reported.detections.filled.sum())
        assert torch.equal(answered.tokens, ctx.for_answers().region_visual("chest").tokens)
        assert torch.equal(reported.tokens, ctx.region_visual("chest").tokens)
    finally:
        model.config.answer_threshold_scale = 1.0
        predictor.__dict__.pop("_generate", None)
    # the model's own reading at scale 1 is its vision pass's
    ct, pet = (
        torch.stack([torch.from_numpy(getattr(s, k).astype("float32")) for s in samples])[None]
        for k in ("ct", "pet")
    )
    with torch.no_grad():
        vision = model.vision(ct, pet)
        again = model.find(vision.dense, pet[0], vision.grid)
    assert torch.equal(again.filled, vision.detections.filled)
    assert torch.equal(again.features, vision.detections.features)
