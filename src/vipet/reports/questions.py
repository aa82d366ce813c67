"""Question–answer pairs from ground-truth findings, in Vietnamese and English.

Closed questions (yes/no): is there a lesion of a type in a region, organ or side; is a
given lesion FDG-avid; is the study normal. Open questions: where the most avid lesion
is, a lesion's SUVmax or size, how many lymph nodes a region holds, which regions are
abnormal. Lesions are named as the reports name them (`vocab.lesion_phrase`), numbers are
formatted as the reports format them (VI comma decimal), and every numeric answer is
also given as a number (`QA.value`) for tolerance scoring.

A study is *normal* when it has no finding at all; a region is *abnormal* when it holds
at least one finding (avid or not).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vipet.reports.schema import LESION_TYPE_NAMES, REGIONS, Lesion
from vipet.reports.vocab import (
    article,
    capitalize,
    check_lang,
    fmt_mm,
    fmt_suv,
    lesion_phrase,
    location_phrase,
    nfc,
    pick,
)

__all__ = [
    "ANSWER_TYPES",
    "QA",
    "QUESTION_KINDS",
    "Scope",
    "location_phrase",
    "make_questions",
    "type_questions",
]

ANSWER_TYPES: tuple[str, ...] = ("yes_no", "number", "location", "text")
QUESTION_KINDS: tuple[str, ...] = (
    "type_in_region",
    "avid",
    "normal",
    "most_avid_location",
    "suvmax",
    "size",
    "count_nodes",
    "abnormal_region",
)
YES_NO = {"vi": ("Có", "Không"), "en": ("Yes", "No")}
NONE_ANSWER = {"vi": "Không có", "en": "None"}


@dataclass(frozen=True)
class QA:
    """One question with its reference answer."""

    question: str
    answer: str
    answer_type: str  # ANSWER_TYPES
    kind: str  # QUESTION_KINDS
    region: str | None = None  # the region a region-scoped question is about
    lesion_id: int | None = None  # the lesion a lesion-level question is about
    value: float | None = None  # numeric answers (SUVmax, size, count) as numbers

    def __post_init__(self) -> None:
        if self.answer_type not in ANSWER_TYPES:
            raise ValueError(
                f"unknown answer type {self.answer_type!r}; choose from {ANSWER_TYPES}"
            )
        if self.kind not in QUESTION_KINDS:
            raise ValueError(f"unknown question kind {self.kind!r}; choose from {QUESTION_KINDS}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- scopes: a region, a location class in it, or one side of it --------------------


@dataclass(frozen=True)
class Scope:
    """Where a type question looks: a region, a location class in it, or one side of
    that class (`contains` says whether a lesion lies there)."""

    region: str
    vi: str
    en: str  # used after "the"
    location: str | None = None
    side: str | None = None

    def contains(self, lesion: Lesion) -> bool:
        if self.location is None:
            return lesion.region == self.region
        if lesion.location != self.location:
            return False
        return self.side is None or lesion.laterality in (self.side, "both")


_REGION_NAMES = {
    "head_neck": ("vùng đầu - cổ", "head and neck"),
    "chest": ("lồng ngực", "chest"),
    "abdomen_pelvis": ("ổ bụng - khung chậu", "abdomen and pelvis"),
}
_REGION_ANSWERS = {
    "vi": {"head_neck": "đầu - cổ", "chest": "lồng ngực", "abdomen_pelvis": "ổ bụng - khung chậu"},
    "en": {"head_neck": "head and neck", "chest": "chest", "abdomen_pelvis": "abdomen and pelvis"},
}
# Location classes seen in each region: (class, vi, en, sides as (side, vi, en)).
_CLASS_SCOPES: dict[str, tuple[tuple[str, str, str, tuple[tuple[str, str, str], ...]], ...]] = {
    "head_neck": (
        ("neck", "vùng cổ", "neck", (("right", "vùng cổ phải", "right side of the neck"),
                                     ("left", "vùng cổ trái", "left side of the neck"))),
    ),
    "chest": (
        ("mediastinum", "trung thất", "mediastinum", ()),
        ("lung", "phổi", "lungs", (("right", "phổi phải", "right lung"),
                                   ("left", "phổi trái", "left lung"))),
        ("axilla", "hố nách", "axillae", (("right", "hố nách phải", "right axilla"),
                                         ("left", "hố nách trái", "left axilla"))),
    ),
    "abdomen_pelvis": (),
}  # fmt: skip


def _scopes(region: str, *, sides: bool) -> list[Scope]:
    vi, en = _REGION_NAMES[region]
    scopes = [Scope(region, vi, en)]
    for location, cvi, cen, side_names in _CLASS_SCOPES.get(region, ()):
        scopes.append(Scope(region, cvi, cen, location))
        if sides:
            scopes.extend(Scope(region, svi, sen, location, s) for s, svi, sen in side_names)
    return scopes


def _scope_name(scope: Scope, lang: str) -> str:
    return scope.vi if lang == "vi" else scope.en


# Types worth asking about per location class or region (absent ones make the "No"
# questions; "other" is never asked: every finding is some lesion).
_NECK = ("lymph_node", "mass", "soft_tissue", "hypermetabolism", "nodule")
_MEDIASTINUM = ("lymph_node", "mass", "soft_tissue", "hypermetabolism")
_LUNG = (
    "nodule", "ground_glass", "mass", "consolidation", "band_opacity",
    "interstitial_thickening", "calcified_nodule", "effusion", "pleural_thickening",
    "lymph_node",
)  # fmt: skip
_AXILLA = ("lymph_node", "mass", "soft_tissue")
_ABDOMEN = (
    "lymph_node", "mass", "nodule", "soft_tissue", "wall_thickening", "effusion",
    "hypermetabolism", "calcified_nodule",
)  # fmt: skip
_PLAUSIBLE: dict[str, tuple[str, ...]] = {
    "neck": _NECK,
    "mediastinum": _MEDIASTINUM,
    "lung": _LUNG,
    "axilla": _AXILLA,
    "head_neck": (*_NECK, "calcified_nodule", "wall_thickening"),
    "chest": tuple(dict.fromkeys((*_LUNG, *_MEDIASTINUM, *_AXILLA))),
    "abdomen_pelvis": _ABDOMEN,
}
_EN_MASS_NOUNS = frozenset(
    {"pleural_thickening", "interstitial_thickening", "consolidation", "wall_thickening"}
)


def _en_type_with_article(lesion_type: str) -> str:
    name = LESION_TYPE_NAMES["en"][lesion_type]
    return name if lesion_type in _EN_MASS_NOUNS else f"{article(name)} {name}"


# ---- templates ------------------------------------------------------------------------

_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "vi": {
        "type_in_region": (
            "Có {t} ở {s} không?",
            "Có hình ảnh {t} ở {s} không?",
            "{S} có {t} không?",
        ),
        "avid": (
            "{X} có tăng chuyển hóa FDG không?",
            "Có tăng chuyển hóa FDG tại {x} không?",
            "{X} có tăng hấp thu FDG không?",
        ),
        "normal": (
            "Kết quả PET/CT có bình thường không?",
            "PET/CT toàn thân có bình thường không?",
            "Hình ảnh PET/CT này có bình thường không?",
        ),
        "most_avid_location": (
            "Tổn thương tăng chuyển hóa FDG mạnh nhất nằm ở đâu?",
            "Tổn thương có SUVmax cao nhất ở vị trí nào?",
            "Vị trí tăng chuyển hóa FDG mạnh nhất là ở đâu?",
        ),
        "suvmax": (
            "SUVmax của {x} là bao nhiêu?",
            "{X} có SUVmax bằng bao nhiêu?",
            "Giá trị SUVmax tại {x} là bao nhiêu?",
        ),
        "size": (
            "Kích thước của {x} là bao nhiêu?",
            "{X} có kích thước bao nhiêu mm?",
            "Đường kính lớn nhất của {x} là bao nhiêu?",
        ),
        "count_nodes": (
            "Có bao nhiêu hạch ở {s}?",
            "Số lượng hạch ở {s} là bao nhiêu?",
            "{S} có mấy hạch?",
        ),
        "abnormal_region": (
            "Vùng nào có tổn thương bất thường?",
            "Những vùng cơ thể nào có tổn thương?",
            "Tổn thương nằm ở vùng nào?",
        ),
    },
    "en": {
        "type_in_region": (
            "Is there {t} in the {s}?",
            "Is any {t0} seen in the {s}?",
            "Does the study show {t} in the {s}?",
        ),
        "avid": (
            "Is the {x} FDG-avid?",
            "Does the {x} show increased FDG uptake?",
            "Is there increased FDG uptake in the {x}?",
        ),
        "normal": (
            "Is this PET/CT study normal?",
            "Is the whole-body PET/CT normal?",
            "Are the PET/CT findings normal?",
        ),
        "most_avid_location": (
            "Where is the most FDG-avid lesion?",
            "Where is the lesion with the highest SUVmax?",
            "What is the location of the most intense FDG uptake?",
        ),
        "suvmax": (
            "What is the SUVmax of the {x}?",
            "What SUVmax does the {x} reach?",
            "How high is the SUVmax of the {x}?",
        ),
        "size": (
            "What is the size of the {x}?",
            "How large is the {x} (in mm)?",
            "What is the longest diameter of the {x}?",
        ),
        "count_nodes": (
            "How many lymph nodes are there in the {s}?",
            "How many lymph nodes are seen in the {s}?",
            "What is the number of lymph nodes in the {s}?",
        ),
        "abnormal_region": (
            "Which body regions show abnormal findings?",
            "Which regions contain lesions?",
            "In which body regions are lesions seen?",
        ),
    },
}


@dataclass
class _Context:
    """What every question maker needs; ``tally`` balances yes/no type questions."""

    lesions: Sequence[Lesion]
    lang: str
    rng: np.random.Generator
    named: dict[int, str]  # lesion index -> unambiguous description
    tally: dict[str, int] = field(default_factory=lambda: {"yes": 0, "no": 0})

    def ask(self, kind: str, **words: str) -> str:
        template = pick(self.rng, _TEMPLATES[self.lang][kind])
        filled = dict(words) | {k.upper(): capitalize(v) for k, v in words.items()}
        return nfc(capitalize(template.format(**filled)))

    def yes_no(self, flag: bool) -> str:
        return YES_NO[self.lang][0 if flag else 1]


def _unambiguous_names(lesions: Sequence[Lesion], lang: str) -> dict[int, str]:
    """Lesion index -> its canonical description, for descriptions naming one lesion."""
    names = [lesion_phrase(lesion, lang) for lesion in lesions]
    return {i: name for i, name in enumerate(names) if names.count(name) == 1}


# ---- question makers (each returns (content key, QA) or None) -------------------------

Made = tuple[tuple, QA] | None


def _type_in_region(ctx: _Context, region: str) -> Made:
    options: dict[bool, list[tuple[Scope, str]]] = {True: [], False: []}
    for scope in _scopes(region, sides=True):
        present = {lesion.type for lesion in ctx.lesions if scope.contains(lesion)}
        for lesion_type in _PLAUSIBLE[scope.location or scope.region]:
            options[lesion_type in present].append((scope, lesion_type))
    # Keep yes and no even: "No" may lead by at most one (a study with few findings
    # then gets fewer type questions rather than a run of "No").
    flag = ctx.tally["yes"] <= ctx.tally["no"]
    if not options[flag]:
        flag = not flag
        if not options[flag] or (not flag and ctx.tally["no"] - ctx.tally["yes"] >= 1):
            return None
    scope, lesion_type = pick(ctx.rng, options[flag])
    name = LESION_TYPE_NAMES[ctx.lang][lesion_type]
    t = name if ctx.lang == "vi" else _en_type_with_article(lesion_type)
    question = ctx.ask("type_in_region", t=t, t0=name, s=_scope_name(scope, ctx.lang))
    qa = QA(question, ctx.yes_no(flag), "yes_no", "type_in_region", region)
    return ("type_in_region", scope, lesion_type), qa


def _count_nodes(ctx: _Context, region: str) -> Made:
    scope = pick(ctx.rng, _scopes(region, sides=False))
    n = sum(1 for x in ctx.lesions if x.type == "lymph_node" and scope.contains(x))
    question = ctx.ask("count_nodes", s=_scope_name(scope, ctx.lang))
    qa = QA(question, str(n), "number", "count_nodes", region, None, float(n))
    return ("count_nodes", scope), qa


def _lesion_question(kind: str) -> Callable[[_Context, str], Made]:
    def make(ctx: _Context, region: str) -> Made:
        indices = [i for i in ctx.named if ctx.lesions[i].region == region]
        if kind == "suvmax":
            indices = [i for i in indices if ctx.lesions[i].suvmax is not None]
        elif kind == "size":
            indices = [i for i in indices if ctx.lesions[i].size_mm is not None]
        if not indices:
            return None
        i = pick(ctx.rng, indices)
        lesion, name = ctx.lesions[i], ctx.named[i]
        question = ctx.ask(kind, x=name)
        if kind == "suvmax" and lesion.suvmax is not None:
            shown = fmt_suv(lesion.suvmax, ctx.lang)  # value: the number the answer shows
            qa = QA(
                question, shown, "number", kind, region, lesion.id, float(f"{lesion.suvmax:.1f}")
            )
        elif kind == "size" and lesion.size_mm is not None:
            mm = fmt_mm(lesion.size_mm)
            qa = QA(question, f"{mm} mm", "number", kind, region, lesion.id, float(mm))
        else:
            qa = QA(question, ctx.yes_no(lesion.fdg_avid), "yes_no", kind, region, lesion.id)
        return (kind, i), qa

    return make


_REGION_MAKERS: dict[str, Callable[[_Context, str], Made]] = {
    "type_in_region": _type_in_region,
    "count_nodes": _count_nodes,
    "avid": _lesion_question("avid"),
    "suvmax": _lesion_question("suvmax"),
    "size": _lesion_question("size"),
}
# Drawing weights: type questions twice as often (they carry the yes/no balance).
_REGION_KINDS = ("type_in_region", "type_in_region", "count_nodes", "avid", "suvmax", "size")


def _region_questions(ctx: _Context, region: str, n: int) -> list[QA]:
    out: list[QA] = []
    seen: set[tuple] = set()
    for _ in range(8 * n):
        if len(out) >= n:
            break
        made = _REGION_MAKERS[pick(ctx.rng, _REGION_KINDS)](ctx, region)
        if made is None or made[0] in seen:
            continue
        key, qa = made
        seen.add(key)
        out.append(qa)
        if qa.kind == "type_in_region":
            ctx.tally["yes" if qa.answer == YES_NO[ctx.lang][0] else "no"] += 1
    return out


# ---- study-level questions ------------------------------------------------------------


def _most_avid(ctx: _Context) -> QA | None:
    avid = [x for x in ctx.lesions if x.fdg_avid and x.suvmax is not None]
    if not avid:
        return None
    shown = {x.id: float(f"{x.suvmax:.1f}") for x in avid}  # as the report shows them
    top = max(shown.values())
    best = [x for x in avid if shown[x.id] == top]
    names = {lesion_phrase(x, ctx.lang) for x in best}
    if len(names) != 1:  # a tie between different places has no single answer
        return None
    lesion = best[0]
    answer = nfc(capitalize(names.pop()))
    question = ctx.ask("most_avid_location")
    return QA(question, answer, "location", "most_avid_location", None, lesion.id)


def _abnormal_region(ctx: _Context, regions: Sequence[str]) -> QA:
    hit = [r for r in regions if any(x.region == r for x in ctx.lesions)]
    names = [_REGION_ANSWERS[ctx.lang][r] for r in hit]
    answer = capitalize(", ".join(names)) if hit else NONE_ANSWER[ctx.lang]
    return QA(ctx.ask("abnormal_region"), nfc(answer), "text", "abnormal_region")


def make_questions(
    lesions: Sequence[Lesion],
    lang: str,
    rng: np.random.Generator,
    *,
    regions: Sequence[str] = REGIONS,
    n_per_region: int = 4,
) -> list[QA]:
    """Question–answer pairs about one study's findings.

    Up to ``n_per_region`` region-scoped questions for each of ``regions`` (lesion type
    present or absent, lymph-node count, a lesion's avidity / SUVmax / size), then the
    study-level ones: is the study normal, where is the most avid lesion (only when one
    is avid), which regions are abnormal. Kinds that do not apply are skipped.
    """
    check_lang(lang)
    unknown = [r for r in regions if r not in REGIONS]
    if unknown:
        raise ValueError(f"unknown regions {unknown}; choose from {list(REGIONS)}")
    if n_per_region < 0:
        raise ValueError(f"n_per_region must be >= 0, got {n_per_region}")
    ctx = _Context(lesions, lang, rng, _unambiguous_names(lesions, lang))
    out: list[QA] = []
    for region in regions:
        out.extend(_region_questions(ctx, region, n_per_region))
    out.append(QA(ctx.ask("normal"), ctx.yes_no(not lesions), "yes_no", "normal"))
    most = _most_avid(ctx)
    if most is not None:
        out.append(most)
    out.append(_abnormal_region(ctx, regions))
    return out


def type_questions(lang: str) -> dict[str, tuple[Scope, str]]:
    """Every "is there a lesion of type X in Y?" question the templates can write in
    ``lang``, to its scope and lesion type: `make_questions` run backwards, so a tool can
    answer a type question from any lesion list — the head's detections, the lesions
    read from a written report (``scripts/closed_ceiling.py``)."""
    check_lang(lang)
    out: dict[str, tuple[Scope, str]] = {}
    for region in REGIONS:
        for scope in _scopes(region, sides=True):
            for lesion_type in _PLAUSIBLE[scope.location or scope.region]:
                name = LESION_TYPE_NAMES[lang][lesion_type]
                t = name if lang == "vi" else _en_type_with_article(lesion_type)
                words = {"t": t, "t0": name, "s": _scope_name(scope, lang)}
                filled = words | {k.upper(): capitalize(v) for k, v in words.items()}
                for template in _TEMPLATES[lang]["type_in_region"]:
                    out[nfc(capitalize(template.format(**filled)))] = (scope, lesion_type)
    return out
