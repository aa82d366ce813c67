"""The yes/no head: its config and save/load round trip, the questions it is fitted on,
the logistic fit and its cross-validation, and the predictor handing it the LM's bare
yes or no (and nothing else)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vipet.data.tokenizer import synthetic_corpus, train_tokenizer
from vipet.inference.predictor import Predictor, StudyContext
from vipet.inference.yes_no import _logistic, fit_rows, yes_no_questions
from vipet.io.volume import Grid
from vipet.model.checkpoint import load_vipet, save_vipet
from vipet.model.config import ViPetConfig
from vipet.model.presets import build_model
from vipet.model.yes_no_head import YesNoConfig, YesNoHead
from vipet.preprocess import RegionSample


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(synthetic_corpus(20, 0), vocab_size=600)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="languages must be among"):
        YesNoConfig(hidden=8, langs=("fr",))
    with pytest.raises(ValueError, match="hidden must be positive"):
        YesNoConfig(hidden=0)
    with pytest.raises(ValueError, match="unknown YesNoConfig keys"):
        ViPetConfig(yes_no_head={"width": 8})


def test_head_round_trips_with_the_model(tok, tmp_path) -> None:
    model = build_model("tiny", tok).eval()
    hidden = model.config.text_config.hidden_size
    config = YesNoConfig(hidden=hidden, langs=("vi", "en"))
    head = YesNoHead(config)
    w = torch.randn(hidden)
    head.set_rows({"en": (w, 0.5)})
    model.yes_no_head, model.config.yes_no_head = head, config.to_dict()
    save_vipet(model, tok, tmp_path / "m")
    again, _ = load_vipet(tmp_path / "m")
    h = torch.randn(3, hidden)
    assert torch.allclose(again.yes_no_head.logit(h, "en"), h @ w + 0.5, atol=1e-5)
    assert torch.equal(again.yes_no_head.logit(h, "vi"), torch.zeros(3))  # not fitted: 0
    assert again.yes_no_head.words("en") == ("Yes", "No")
    assert build_model("tiny", tok).yes_no_head is None  # only a fitted model has one


def test_questions_are_the_bare_yes_no_answers(tmp_path) -> None:
    gt = tmp_path / "ground_truth"
    gt.mkdir()
    qs = {
        "questions_vi": [
            {"question": "A?", "answer": "Có", "kind": "type_in_region", "region": "chest"},
            {"question": "B?", "answer": "Không", "kind": "normal"},
            {"question": "C?", "answer": "Không có", "kind": "abnormal_region"},  # free text
            {"question": "D?", "answer": "2", "kind": "count_nodes"},
        ],
        "questions_en": [{"question": "E?", "answer": "No", "kind": "normal"}],
    }
    (gt / "s1.json").write_text(json.dumps({"id": "s1", **qs}))
    found = yes_no_questions(tmp_path, ["s1"])
    assert [(q.lang, q.question, q.region, q.answer) for q in found] == [
        ("vi", "A?", "chest", True),
        ("vi", "B?", None, False),
        ("en", "E?", None, False),
    ]


def test_logistic_fit_applies_to_raw_states_and_cv_picks_the_penalty() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g, dtype=torch.float64) * 3 + 5  # not standardised
    y = ((x[:, 0] - 5) + 0.3 * torch.randn(200, generator=g, dtype=torch.float64) > 0).double()
    w, b = _logistic(x, y, 1e-4)
    assert float((((x @ w + b) > 0).double() == y).double().mean()) > 0.9
    groups = [f"s{i // 4}" for i in range(200)]
    _, _, l2, cv = fit_rows(x.float(), y, groups, grid=(1e-4, 10.0))
    assert l2 == 1e-4 and cv > 0.85  # a huge penalty flattens w: cross-validation sees it
    # a signal that only memorises: held-out studies say so
    noise = torch.randn(200, 6, generator=g)
    _, _, _, cv_noise = fit_rows(noise, y, groups, grid=(1e-4,))
    assert cv_noise < 0.7


def test_predictor_lets_the_head_pick_only_a_bare_yes_or_no(tok, monkeypatch) -> None:
    torch.manual_seed(0)
    model = build_model("tiny", tok).eval()
    hidden = model.config.text_config.hidden_size
    head = YesNoHead(YesNoConfig(hidden=hidden, langs=("en",)))
    head.set_rows({"en": (torch.zeros(hidden), 5.0)})  # always "yes"
    model.yes_no_head = head
    p = Predictor(model, tok)
    ct = torch.rand(1, 3, *model.config.ct_encoder_settings.image_size)
    with torch.no_grad():
        vision = model.vision(ct, ct)
    ctx = StudyContext("s", list(model.config.regions), [], model.visual_tokens(vision.float(), 1))
    said = {"text": "No"}
    real = p.generate_ids

    def lm_says(messages, visual, max_new_tokens):  # the real prompt, a chosen answer
        return real(messages, visual, 1)[0], tok.encode(said["text"], add_special_tokens=False)

    monkeypatch.setattr(p, "generate_ids", lm_says)
    assert p.ask(ctx, "Is this study normal?", "en") == "Yes"
    assert p.ask(ctx, "Is this study normal?", "en", yes_no_head=False) == "No"
    said["text"] = "2"  # not a yes/no answer: the LM's stands
    assert p.ask(ctx, "How many nodes?", "en") == "2"
    said["text"] = "Không"  # no vi row: the LM's stands
    assert p.ask(ctx, "?", "vi") == "Không"
    state, logits = p.answer_state(ctx, "Is this study normal?", "en")
    assert state.shape == (hidden,) and logits.shape == (model.config.text_config.vocab_size,)


def test_head_decision_reads_the_answer_state(tok, monkeypatch) -> None:
    """The head's input is the LM's last hidden state at the answer position: a row
    along that state says yes, its opposite no."""
    torch.manual_seed(0)
    model = build_model("tiny", tok).eval()
    hidden = model.config.text_config.hidden_size
    p = Predictor(model, tok)
    ct = torch.rand(1, 3, *model.config.ct_encoder_settings.image_size)
    with torch.no_grad():
        vision = model.vision(ct, ct)
    ctx = StudyContext("s", list(model.config.regions), [], model.visual_tokens(vision.float(), 1))
    state, _ = p.answer_state(ctx, "Is this study normal?", "en")
    yes_ids = tok.encode("Yes", add_special_tokens=False)
    real = p.generate_ids
    monkeypatch.setattr(
        p, "generate_ids", lambda m, v, n: (real(m, v, 1)[0], yes_ids)
    )  # the real prompt ids, the LM "says" yes
    for sign, word in ((1.0, "Yes"), (-1.0, "No")):
        head = YesNoHead(YesNoConfig(hidden=hidden, langs=("en",)))
        head.set_rows({"en": (sign * state, 0.0)})
        model.yes_no_head = head
        assert p.ask(ctx, "Is this study normal?", "en") == word


def test_evidence_rows_are_checked_applied_and_saved(tok, tmp_path) -> None:
    with pytest.raises(ValueError, match="'<lang>/<kind>'"):
        YesNoConfig(hidden=8, langs=("en",), evidence={"vi/normal": [1.0, 0.0]})
    with pytest.raises(ValueError, match="weights and a bias"):
        YesNoConfig(hidden=8, langs=("en",), evidence={"en/normal": [1.0]})
    model = build_model("tiny", tok).eval()
    hidden = model.config.text_config.hidden_size
    rows = {"en/normal": [0.5, -2.0, 1.0, 0.25]}
    config = YesNoConfig(hidden=hidden, langs=("en",), evidence=rows)
    model.yes_no_head, model.config.yes_no_head = YesNoHead(config), config.to_dict()
    save_vipet(model, tok, tmp_path / "m")
    head = load_vipet(tmp_path / "m")[0].yes_no_head
    assert head.config.evidence == rows
    assert head.with_evidence(2.0, "en", "normal", (1.0, 3.0)) == pytest.approx(
        0.5 * 2.0 - 2.0 * 1.0 + 1.0 * 3.0 + 0.25
    )
    assert head.with_evidence(2.0, "en", "avid", (1.0, 3.0)) is None  # no row: the head's
    with pytest.raises(ValueError, match="2 evidence weights"):
        head.with_evidence(2.0, "en", "normal", (1.0,))


def _samples(model, size) -> list[RegionSample]:
    """Random region samples on the model's grid (one per region)."""
    rng = np.random.default_rng(0)
    grid = Grid(tuple(size), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), np.eye(3))
    return [
        RegionSample(
            "s",
            r,
            rng.random(size, dtype=np.float32),
            rng.random(size, dtype=np.float32),
            np.zeros(size, bool),
            grid,
        )
        for r in model.config.regions
    ]


def test_predictor_weighs_the_head_with_the_candidates_below_the_slots(tok, monkeypatch) -> None:
    """A head with an evidence row keeps the detector's candidates when it encodes a
    study (every peak above the floor, the slots' among them), and a closed question it
    reads is answered from the head's log-odds and the candidates; a question it cannot
    read, from the head alone."""
    from vipet.inference.evidence import EVIDENCE_FLOOR

    torch.manual_seed(0)
    model = build_model("tiny", tok).eval()
    hidden = model.config.text_config.hidden_size
    p = Predictor(model, tok)
    size = model.config.ct_encoder_settings.image_size
    samples = _samples(model, size)
    plain = p.encode_samples("s", samples)
    assert plain.candidates is None  # no evidence row: nothing kept
    ctx = p.encode_samples("s", samples, with_candidates=True)
    assert ctx.candidates is not None
    assert all(c["score"] > EVIDENCE_FLOOR for c in ctx.candidates)
    assert {c["region"] for c in ctx.candidates} <= set(model.config.regions)
    for r in ctx.regions:  # the slots' findings are among the candidates
        there = [(c["location_detail"], c["score"]) for c in ctx.candidates if c["region"] == r]
        assert all((f["location_detail"], f["score"]) in there for f in ctx.findings(r))
    assert len(ctx.candidates) > sum(len(ctx.findings(r)) for r in ctx.regions)

    yes_ids = tok.encode("Yes", add_special_tokens=False)
    real = p.generate_ids
    monkeypatch.setattr(p, "generate_ids", lambda m, v, n: (real(m, v, 1)[0], yes_ids))
    # the head alone says "no"; the row ignores it and answers "yes" only when nothing
    # above the floor is there (the strongest candidate's log-odds below -3)
    config = YesNoConfig(
        hidden=hidden, langs=("en",), evidence={"en/normal": [0.0, -1.0, 0.0, -3.0]}
    )
    head = YesNoHead(config)
    head.set_rows({"en": (torch.zeros(hidden), -5.0)})
    model.yes_no_head = head
    assert p.encode_samples("s", samples).candidates is not None  # a row: kept by default
    question = "Is this PET/CT study normal?"
    for found, word in (([], "Yes"), ([{"score": 0.9}], "No")):
        ctx.candidates = found
        assert p.ask(ctx, question, "en") == word
    ctx.candidates = []
    assert p.ask(ctx, "Is anything odd here?", "en") == "No"  # not read: the head's
    ctx.candidates = None
    assert p.ask(ctx, question, "en") == "No"  # candidates not kept: the head's


def test_states_carry_each_questions_evidence_when_the_study_kept_candidates(tok) -> None:
    from vipet.inference.evidence import evidence, read_question
    from vipet.inference.yes_no import YesNoQuestion, read_states

    torch.manual_seed(0)
    model = build_model("tiny", tok).eval()
    p = Predictor(model, tok)
    ctx = p.encode_samples("s", _samples(model, model.config.ct_encoder_settings.image_size))
    found = [
        {"type": "lymph_node", "location_detail": "axillary", "location": "axilla",
         "laterality": "right", "fdg_avid": True, "score": 0.6, "region": "chest"},
    ]  # fmt: skip
    normal, typed, other = (
        "Is this PET/CT study normal?",
        "Is there a lymph node in the chest?",
        "?",
    )
    qs = [YesNoQuestion("s", "en", q, None, False) for q in (normal, typed, other)]
    assert read_states(p, qs, lambda sid: ctx, progress=False).evidence["en"] == [None] * 3
    ctx.candidates = found
    read = read_states(p, qs, lambda sid: ctx, progress=False)
    assert read.evidence["en"] == [
        ("normal", evidence(read_question(normal, "en"), found)),
        ("type_in_region", evidence(read_question(typed, "en"), found)),
        None,
    ]
    assert read.evidence["en"][1][1][0] == pytest.approx(np.log(0.6 / 0.4))
