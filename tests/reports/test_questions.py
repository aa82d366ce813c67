"""Questions from findings: every answer agrees with the lesion list it came from."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

import numpy as np
import pytest

from tests.reports.factories import example_lesions, random_lesions
from vipet.reports.questions import (
    ANSWER_TYPES,
    QA,
    QUESTION_KINDS,
    make_questions,
    type_questions,
)
from vipet.reports.schema import LESION_TYPE_NAMES, REGIONS, Lesion
from vipet.reports.vocab import location_phrase

LANGS = ("vi", "en")
YES = {"vi": "Có", "en": "Yes"}
NO = {"vi": "Không", "en": "No"}

Pred = Callable[[Lesion], bool]


def _in_region(region: str) -> Pred:
    return lambda x: x.region == region


def _in_class(location: str, side: str | None = None) -> Pred:
    return lambda x: x.location == location and (side is None or x.laterality in (side, "both"))


# Scope names as the questions write them, with an independent membership test.
SCOPES: dict[str, dict[str, Pred]] = {
    "vi": {
        "vùng đầu - cổ": _in_region("head_neck"),
        "lồng ngực": _in_region("chest"),
        "ổ bụng - khung chậu": _in_region("abdomen_pelvis"),
        "vùng cổ": _in_class("neck"),
        "vùng cổ phải": _in_class("neck", "right"),
        "vùng cổ trái": _in_class("neck", "left"),
        "trung thất": _in_class("mediastinum"),
        "phổi": _in_class("lung"),
        "phổi phải": _in_class("lung", "right"),
        "phổi trái": _in_class("lung", "left"),
        "hố nách": _in_class("axilla"),
        "hố nách phải": _in_class("axilla", "right"),
        "hố nách trái": _in_class("axilla", "left"),
    },
    "en": {
        "head and neck": _in_region("head_neck"),
        "chest": _in_region("chest"),
        "abdomen and pelvis": _in_region("abdomen_pelvis"),
        "neck": _in_class("neck"),
        "right side of the neck": _in_class("neck", "right"),
        "left side of the neck": _in_class("neck", "left"),
        "mediastinum": _in_class("mediastinum"),
        "lungs": _in_class("lung"),
        "right lung": _in_class("lung", "right"),
        "left lung": _in_class("lung", "left"),
        "axillae": _in_class("axilla"),
        "right axilla": _in_class("axilla", "right"),
        "left axilla": _in_class("axilla", "left"),
    },
}
REGION_WORDS = {
    "vi": {"head_neck": "đầu - cổ", "chest": "lồng ngực", "abdomen_pelvis": "ổ bụng - khung chậu"},
    "en": {"head_neck": "head and neck", "chest": "chest", "abdomen_pelvis": "abdomen and pelvis"},
}


def longest_in(text: str, names: list[str]) -> str:
    found = [n for n in names if n.lower() in text.lower()]
    assert found, f"no known name in {text!r}"
    return max(found, key=len)


def parse_type_question(question: str, lang: str) -> tuple[str, Pred]:
    names = {name: t for t, name in LESION_TYPE_NAMES[lang].items()}
    type_name = longest_in(question, list(names))
    rest = question.lower().replace(type_name.lower(), " ")
    return names[type_name], SCOPES[lang][longest_in(rest, list(SCOPES[lang]))]


def check_answer(qa: QA, lesions: list[Lesion], lang: str) -> None:
    """Recompute ``qa``'s answer from ``lesions``."""
    by_id = {x.id: x for x in lesions}
    yes_no = {True: YES[lang], False: NO[lang]}
    if qa.kind == "type_in_region":
        lesion_type, scope = parse_type_question(qa.question, lang)
        present = any(x.type == lesion_type and scope(x) for x in lesions)
        assert qa.answer == yes_no[present], qa
    elif qa.kind == "count_nodes":
        scope = SCOPES[lang][longest_in(qa.question, list(SCOPES[lang]))]
        n = sum(1 for x in lesions if x.type == "lymph_node" and scope(x))
        assert (qa.answer, qa.value) == (str(n), float(n)), qa
    elif qa.kind in ("avid", "suvmax", "size"):
        lesion = by_id[qa.lesion_id]
        assert location_phrase(lesion, lang) in qa.question.lower() or (
            location_phrase(lesion, lang).lower() in qa.question.lower()
        )
        assert qa.region == lesion.region
        if qa.kind == "avid":
            assert qa.answer == yes_no[lesion.fdg_avid]
        elif qa.kind == "suvmax":
            shown = f"{lesion.suvmax:.1f}"
            assert qa.answer == (shown.replace(".", ",") if lang == "vi" else shown)
            assert qa.value == pytest.approx(lesion.suvmax, abs=0.05)
        else:
            assert qa.value == round(lesion.size_mm) or abs(qa.value - lesion.size_mm) <= 0.5
            assert qa.answer == f"{int(qa.value)} mm"
    elif qa.kind == "most_avid_location":
        avid = [x for x in lesions if x.fdg_avid and x.suvmax is not None]
        top = max(avid, key=lambda x: x.suvmax)
        assert by_id[qa.lesion_id].suvmax == pytest.approx(top.suvmax, abs=0.05)
        assert location_phrase(by_id[qa.lesion_id], lang).lower() in qa.answer.lower()
    elif qa.kind == "normal":
        assert qa.answer == yes_no[not lesions]
    elif qa.kind == "abnormal_region":
        hit = [REGION_WORDS[lang][r] for r in REGIONS if any(x.region == r for x in lesions)]
        if hit:
            assert qa.answer.lower().split(", ") == hit
        else:
            assert qa.answer in ("Không có", "None")
    else:  # pragma: no cover
        raise AssertionError(f"unexpected kind {qa.kind}")


def check_common(qas: list[QA], lang: str) -> None:
    for qa in qas:
        assert qa.answer_type in ANSWER_TYPES and qa.kind in QUESTION_KINDS
        assert qa.question.endswith("?") and qa.question[0].isupper()
        assert unicodedata.normalize("NFC", qa.question) == qa.question
        assert unicodedata.normalize("NFC", qa.answer) == qa.answer
        if qa.answer_type == "yes_no":
            assert qa.answer in (YES[lang], NO[lang])
        if qa.answer_type == "number":
            assert qa.value is not None


@pytest.mark.parametrize("lang", LANGS)
def test_example_answers_agree_with_findings(lang: str) -> None:
    lesions = example_lesions()
    qas = make_questions(lesions, lang, np.random.default_rng(0))
    check_common(qas, lang)
    kinds = {qa.kind for qa in qas}
    assert {"normal", "most_avid_location", "abnormal_region"} <= kinds
    assert sum(qa.region == r for qa in qas for r in REGIONS) == 3 * 4
    for qa in qas:
        check_answer(qa, lesions, lang)
    most = next(qa for qa in qas if qa.kind == "most_avid_location")
    assert most.lesion_id == 4 and most.answer_type == "location"


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("lang", LANGS)
def test_random_answers_agree_with_findings(seed: int, lang: str) -> None:
    rng = np.random.default_rng(2000 + seed)
    lesions = random_lesions(rng, int(rng.integers(0, 10)))
    qas = make_questions(lesions, lang, np.random.default_rng(seed), n_per_region=6)
    check_common(qas, lang)
    for qa in qas:
        check_answer(qa, lesions, lang)


@pytest.mark.parametrize("lang", LANGS)
def test_vi_suv_answer_uses_comma(lang: str) -> None:
    lesions = example_lesions()
    answers = {
        qa.answer
        for seed in range(20)
        for qa in make_questions(lesions, lang, np.random.default_rng(seed))
        if qa.kind == "suvmax"
    }
    assert answers
    assert all(("," in a) if lang == "vi" else ("." in a) for a in answers)


@pytest.mark.parametrize("lang", LANGS)
def test_type_questions_are_balanced(lang: str) -> None:
    answers = []
    for seed in range(40):
        lesions = random_lesions(np.random.default_rng(3000 + seed), 6)
        qas = make_questions(lesions, lang, np.random.default_rng(seed))
        answers += [qa.answer for qa in qas if qa.kind == "type_in_region"]
    share = answers.count(YES[lang]) / len(answers)
    assert 0.35 <= share <= 0.65, share


@pytest.mark.parametrize("lang", LANGS)
def test_normal_study_questions(lang: str) -> None:
    qas = make_questions([], lang, np.random.default_rng(0))
    check_common(qas, lang)
    kinds = [qa.kind for qa in qas]
    assert "most_avid_location" not in kinds
    normal = next(qa for qa in qas if qa.kind == "normal")
    assert normal.answer == YES[lang]
    for qa in qas:
        check_answer(qa, [], lang)


def test_no_most_avid_question_without_avid_lesion() -> None:
    lesions = [x for x in example_lesions() if not x.fdg_avid]
    qas = make_questions(lesions, "vi", np.random.default_rng(0))
    assert "most_avid_location" not in {qa.kind for qa in qas}
    assert next(qa for qa in qas if qa.kind == "normal").answer == "Không"


def test_ambiguous_lesions_are_not_asked_about() -> None:
    twin = dict(size_mm=10, short_mm=None, suvmax=5.0, level="")
    lesions = [
        Lesion.at(0, "lymph_node", "axillary", "left", fdg_avid=True, **twin),
        Lesion.at(1, "lymph_node", "axillary", "left", fdg_avid=False, **twin),
    ]
    for seed in range(10):
        qas = make_questions(lesions, "en", np.random.default_rng(seed), n_per_region=8)
        assert not {qa.kind for qa in qas} & {"avid", "suvmax", "size"}


@pytest.mark.parametrize("lang", LANGS)
def test_each_kind_has_several_phrasings(lang: str) -> None:
    lesions = example_lesions()
    seen: dict[str, set[str]] = {}
    for seed in range(40):
        for qa in make_questions(lesions, lang, np.random.default_rng(seed)):
            seen.setdefault(qa.kind, set()).add(qa.question)
    assert set(seen) == set(QUESTION_KINDS)
    assert all(len(questions) >= 2 for questions in seen.values())


def test_deterministic_and_validated() -> None:
    lesions = example_lesions()
    first = make_questions(lesions, "vi", np.random.default_rng(5))
    assert first == make_questions(lesions, "vi", np.random.default_rng(5))
    assert make_questions(lesions, "vi", np.random.default_rng(0), regions=("chest",))
    with pytest.raises(ValueError, match="unknown regions"):
        make_questions(lesions, "vi", np.random.default_rng(0), regions=("legs",))
    with pytest.raises(ValueError, match="unknown answer type"):
        QA("q?", "a", "free", "normal")
    with pytest.raises(ValueError, match="unknown language"):
        make_questions(lesions, "de", np.random.default_rng(0))


@pytest.mark.parametrize("lang", LANGS)
def test_type_questions_answer_back_every_type_question(lang: str) -> None:
    # the inverse of the type question maker: each question it writes, read back to its
    # scope and type, gives the reference answer from the study's lesions
    table = type_questions(lang)
    checked = 0
    for seed in range(20):
        rng = np.random.default_rng(3000 + seed)
        lesions = random_lesions(rng, int(rng.integers(0, 10)))
        qas = make_questions(lesions, lang, np.random.default_rng(seed), n_per_region=6)
        for qa in qas:
            if qa.kind != "type_in_region":
                continue
            scope, lesion_type = table[qa.question]
            assert scope.region == qa.region
            there = any(x.type == lesion_type and scope.contains(x) for x in lesions)
            assert qa.answer == (YES[lang] if there else NO[lang])
            checked += 1
    assert checked >= 80
    with pytest.raises(ValueError):
        type_questions("fr")
