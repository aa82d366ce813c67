"""The detector's evidence for a closed question, read from the question's own words.

The yes/no head (`vipet.model.yes_no_head`) reads the LM's state, and the LM sees only
the findings in its slots: the peaks that passed their class's threshold. A peak just
below it — a faint node the scorer gave 0.3 where the bar is 0.4 — is invisible to
both, yet it is evidence (how much, per kind of question: `vipet calibrate
--fit-evidence` prints the held-out gain on val; docs/training.md, runs 39 and 40). This
module reads a closed question back to what it asks
(`read_question`: its kind, and the type and place it names) and measures the detector's
candidates — every peak above `EVIDENCE_FLOOR`, kept in `StudyContext.candidates` —
against it (`evidence`). `vipet.inference.yes_no.fit_evidence_model` weighs that against
the head on the validation split, which the detector never trained on.

Three kinds of question are read (`reports.questions`): "is there a <type> in <place>?"
(the strongest candidate of that type there, and of any type there), "is <lesion>
FDG-avid?" (the strongest avid and non-avid candidates of its type at its place), and
"is the study normal?" (the two strongest candidates anywhere). Other questions, and
questions in other words, are left to the head.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from vipet.reports.extract import extract_findings
from vipet.reports.questions import _TEMPLATES, Scope, type_questions
from vipet.reports.schema import Lesion
from vipet.reports.vocab import nfc

EVIDENCE_FLOOR: float = 0.02
"""Candidates scoring above this are kept as evidence: well below the lowest slot
threshold the calibration tries (`vipet.inference.calibrate.GRID`, 0.1)."""
EVIDENCE_KINDS: tuple[str, ...] = ("type_in_region", "avid", "normal")
"""The closed-question kinds `read_question` reads (`reports.questions.QUESTION_KINDS`)."""
FEATURES: int = 2
"""Evidence values per question, whatever its kind."""


@dataclass(frozen=True)
class ClosedQuestion:
    """What a closed question asks: its kind (`EVIDENCE_KINDS`), and for a type question
    the type and scope, for an avidity question the lesion's type and place."""

    kind: str
    lesion_type: str | None = None
    scope: Scope | None = None
    location: str | None = None  # LOCATION_CLASSES: where the named lesion lies


def _key(text: str) -> str:
    """A question as looked up: NFC, one space between words, any case."""
    return " ".join(nfc(text).split()).lower()


@cache
def _type_table(lang: str) -> dict[str, tuple[Scope, str]]:
    return {_key(q): asked for q, asked in type_questions(lang).items()}


@cache
def _patterns(lang: str, kind: str) -> tuple[re.Pattern[str], ...]:
    """The templates of ``kind`` as patterns; a lesion's name is the group ``x``."""
    out = []
    for template in _TEMPLATES[lang][kind]:
        text = re.escape(nfc(template))
        text = text.replace(r"\{X\}", "(?P<x>.+)").replace(r"\{x\}", "(?P<x>.+)")
        out.append(re.compile(f"^{text}$", re.IGNORECASE))
    return tuple(out)


def read_question(question: str, lang: str) -> ClosedQuestion | None:
    """What ``question`` (in ``lang``) asks, when it is a closed question the templates
    write; None otherwise (the head alone answers it)."""
    if lang not in _TEMPLATES:
        return None
    text = " ".join(nfc(question).split())
    typed = _type_table(lang).get(_key(text))
    if typed is not None:
        scope, lesion_type = typed
        return ClosedQuestion("type_in_region", lesion_type=lesion_type, scope=scope)
    if any(p.match(text) for p in _patterns(lang, "normal")):
        return ClosedQuestion("normal")
    for pattern in _patterns(lang, "avid"):
        m = pattern.match(text)
        if m is None:
            continue
        # The lesion is named as `vocab.lesion_phrase` names it; the extractor reads
        # its type and place back (its avidity words are the question's, not read).
        found = extract_findings(m.group("x"), lang)
        if found:
            f = found[0]
            return ClosedQuestion("avid", lesion_type=f.type, location=f.location)
    return None


def _log_odds(score: float) -> float:
    """A candidate's score as log-odds; "no candidate" is a candidate at the floor."""
    p = min(max(score, EVIDENCE_FLOOR), 1 - 1e-4)
    return math.log(p / (1 - p))


def _best(scores: Sequence[float], rank: int = 0) -> float:
    ordered = sorted(scores, reverse=True)
    return ordered[rank] if len(ordered) > rank else 0.0


def _as_lesion(candidate: Mapping[str, Any]) -> Lesion:
    return Lesion.at(
        0,
        candidate["type"],
        candidate["location_detail"],
        candidate["laterality"],
        size_mm=None,
        short_mm=None,
        suvmax=None,
        fdg_avid=bool(candidate["fdg_avid"]),
        region=candidate["region"],
    )


def evidence(
    question: ClosedQuestion, candidates: Sequence[Mapping[str, Any]], region: str | None = None
) -> tuple[float, ...]:
    """`FEATURES` log-odds for ``question`` from a study's ``candidates`` (each a finding
    as `detect` describes it, with its volume's ``region`` and ``score``; see
    `StudyContext.candidates`). ``region``: the region a region-scoped question was
    asked about; a lesion question only looks there."""
    if question.kind == "type_in_region":
        scope = question.scope
        assert scope is not None
        inside = [c for c in candidates if scope.contains(_as_lesion(c))]
        same = [c["score"] for c in inside if c["type"] == question.lesion_type]
        return _log_odds(_best(same)), _log_odds(_best([c["score"] for c in inside]))
    if question.kind == "avid":
        like = [
            c
            for c in candidates
            if c["type"] == question.lesion_type
            and c["location"] == question.location
            and (region is None or c["region"] == region)
        ]
        avid = [c["score"] for c in like if c["fdg_avid"]]
        calm = [c["score"] for c in like if not c["fdg_avid"]]
        return _log_odds(_best(avid)), _log_odds(_best(calm))
    if question.kind == "normal":
        scores = [c["score"] for c in candidates]
        return _log_odds(_best(scores)), _log_odds(_best(scores, 1))
    raise ValueError(f"no evidence for questions of kind {question.kind!r}")


def question_evidence(
    question: str, lang: str, candidates: Sequence[Mapping[str, Any]], region: str | None = None
) -> tuple[str, tuple[float, ...]] | None:
    """``(kind, evidence values)`` of ``question`` against a study's ``candidates`` —
    what `YesNoHead.with_evidence` weighs — or None when the question is not read."""
    asked = read_question(question, lang)
    return None if asked is None else (asked.kind, evidence(asked, candidates, region))
