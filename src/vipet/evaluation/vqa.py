"""VQA scoring: closed answers by exact match, numbers by tolerance, places by class.

Answers are parsed the way `reports.questions` writes them and the way a model may
paraphrase them, in either language whatever the question's language (a right answer
in the wrong language still counts):

- yes/no: the first word decides ("Có", "Có, ..." / "Không", "Không có" / "Yes" / "No");
- numbers: the first number, comma or dot decimal, a length unit converting to mm
  ("1.2 cm" -> 12; "12 x 8 mm" -> 12, the longest diameter comes first), a few number
  words ("hai", "two"), and "không có" / "none" as 0;
- locations: the location class (`schema.LOCATION_CLASSES`) of the earliest place
  phrase after the first "ở" / "tại" / "in" / "at" (else in the whole answer; the
  longest phrase wins a tie), from the fine-location names of
  `schema.FINE_LOCATIONS` and a small table of organ and class words below, plus the
  laterality words ("phải/trái/hai bên", "right/left/bilateral").

Free-text answers are scored with NLG metrics (`evaluation.nlg`) and exact match after
normalisation (tokens of `tokenize_vi`, closing punctuation dropped).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from vipet.evaluation.nlg import nlg_scores, tokenize_vi
from vipet.reports.schema import FINE_LOCATIONS

__all__ = [
    "Place",
    "VqaTolerance",
    "normalize_text",
    "numbers_match",
    "parse_answer",
    "parse_location",
    "parse_number",
    "parse_yes_no",
    "score_item",
    "score_vqa",
]

_LANGS = ("vi", "en")
_EPS = 1e-9  # 8.8 - 8.0 is 0.8000000000000007: an edge value must stay inside


@dataclass(frozen=True)
class VqaTolerance:
    """How far a numeric answer may be from the reference and still count as right."""

    suv_rel: float = 0.10  # SUVmax: ±10 % of the reference
    size_rel: float = 0.20  # sizes: ±20 % (a diameter measured on another slice)
    count_abs: float = 0  # counts: exact by default

    def __post_init__(self) -> None:
        for name in ("suv_rel", "size_rel", "count_abs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


class Place(NamedTuple):
    """A parsed location answer: a LOCATION_CLASSES name (or None) and a laterality."""

    location: str | None
    side: str  # right | left | both | none


# ---- yes / no ---------------------------------------------------------------------------

_YES = frozenset({"có", "yes", "yeah", "y", "đúng", "true", "positive", "phải"})
_NO = frozenset({"không", "no", "none", "chưa", "false", "negative", "sai", "n"})


def parse_yes_no(text: str) -> bool | None:
    """True / False from the first word of a yes/no answer, None when it is neither."""
    words = [t for t in tokenize_vi(text) if t.isalnum()]
    if not words:
        return None
    if words[:2] == ["có", "thể"]:  # "có thể": maybe, neither yes nor no
        return None
    if words[0] in _NO:  # "không có" starts with the negation
        return False
    if words[0] in _YES:
        return True
    return None


# ---- numbers ----------------------------------------------------------------------------

_NUM = r"\d+(?:[.,]\d+)?"
_NUMBER = re.compile(rf"(?<!\w)({_NUM})((?:\s*[x×]\s*{_NUM})*)\s*(mm|cm|m)?(?![^\W\d_])")
_TO_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0}
_VI_DIGITS = ("một", "hai", "ba", "bốn", "năm", "sáu", "bảy", "tám", "chín", "mười")
_EN_DIGITS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_WORDS = {
    **dict.fromkeys(("không", "zero", "no", "none"), 0),
    **{w: i for i, w in enumerate(_VI_DIGITS, 1)},
    **{w: i for i, w in enumerate(_EN_DIGITS, 1)},
}


def _to_float(text: str, lang: str) -> float:
    # In English "1,234" is a thousands separator; every other comma is a decimal one
    # (Vietnamese reports write SUVmax "8,1").
    if lang == "en" and re.fullmatch(r"\d+,\d{3}", text):
        return float(text.replace(",", ""))
    return float(text.replace(",", "."))


def parse_number(text: str, lang: str = "vi") -> float | None:
    """The first number in ``text`` (lengths in mm), a number word, or None."""
    text = " ".join(tokenize_vi(text))  # NFC, lower case, "12x14" -> "12 x 14"
    match = _NUMBER.search(text)
    if match:
        value = _to_float(match.group(1), lang)
        return value * _TO_MM[match.group(3)] if match.group(3) else value
    for word in text.split():
        if word in _WORDS:
            return float(_WORDS[word])
    return None


def numbers_match(
    predicted: float | None, reference: float, kind: str, tolerance: VqaTolerance
) -> bool:
    """Whether ``predicted`` is within the tolerance of ``kind`` (SUVmax, size, count)."""
    if predicted is None or not math.isfinite(predicted):
        return False
    if kind == "suvmax":
        allowed = tolerance.suv_rel * abs(reference)
    elif kind == "size":
        allowed = tolerance.size_rel * abs(reference)
    elif kind == "count_nodes":
        allowed = tolerance.count_abs
    else:  # a number of an unknown kind: exact
        allowed = 0.0
    return abs(predicted - reference) <= allowed + _EPS


# ---- locations --------------------------------------------------------------------------

# Organ and class words beyond the FINE_LOCATIONS names. Bone phrases are listed in
# full ("cervical spine") so the longer phrase beats the nodal word inside it.
_CLASS_WORDS: dict[str, tuple[str, ...]] = {
    "mediastinum": (
        "trung thất", "khí quản", "carina", "mediastinum", "mediastinal", "trachea",
        "tracheal", "carinal",
    ),
    "lung": (
        "phổi", "thùy trên", "thùy giữa", "thùy dưới", "rốn phổi", "màng phổi", "lung",
        "lungs", "pulmonary", "upper lobe", "middle lobe", "lower lobe", "hilum", "hilar", "pleura", "pleural",
    ),
    "axilla": ("nách", "hố nách", "axilla", "axillae", "axillary"),
    "neck": ("cổ", "vùng cổ", "thượng đòn", "neck", "cervical", "supraclavicular"),
    "abdomen": (
        "bụng", "ổ bụng", "gan", "lách", "tụy", "thận", "thượng thận", "dạ dày", "đại tràng",
        "ruột", "chậu", "hố chậu", "bẹn", "mạc treo", "khung chậu", "abdomen", "abdominal",
        "liver", "hepatic", "spleen", "splenic", "pancreas", "pancreatic", "kidney", "renal",
        "adrenal", "stomach", "colon", "bowel", "iliac", "inguinal", "pelvis", "pelvic",
        "mesenteric", "para-aortic", "paraaortic", "retroperitoneal",
    ),
    "other": (
        "xương", "cột sống", "đốt sống", "xương sườn", "xương cánh chậu", "xương đùi",
        "cột sống cổ", "đốt sống cổ", "bone", "bones", "spine", "spinal", "vertebra",
        "vertebral", "rib", "ribs", "femur", "sternum", "cervical spine", "cervical vertebra",
        "iliac bone", "pelvic bone", "não", "brain",
    ),
}  # fmt: skip
_SIDES = {
    "right": ("phải", "right"),
    "left": ("trái", "left"),
    "both": ("hai bên", "2 bên", "bilateral", "both sides", "both"),
}


def _phrase_table() -> dict[tuple[str, ...], str]:
    table: dict[tuple[str, ...], str] = {}
    for location, words in _CLASS_WORDS.items():
        for word in words:
            table[tuple(tokenize_vi(word))] = location
    for fine in FINE_LOCATIONS.values():  # the schema's names decide over the table
        for name in (fine.vi, fine.en):
            table[tuple(tokenize_vi(name))] = fine.location
    return table


_PHRASES = _phrase_table()
_MAX_PHRASE = max(len(p) for p in _PHRASES)


def _find_side(tokens: list[str]) -> str:
    found = set()
    for side, words in _SIDES.items():
        for word in words:
            w = tuple(tokenize_vi(word))
            if any(tuple(tokens[i : i + len(w)]) == w for i in range(len(tokens))):
                found.add(side)
    if "both" in found or {"right", "left"} <= found:
        return "both"
    return found.pop() if found else "none"


# "ở", "tại" / "in", "at" introduce the place: what follows them decides over the lesion
# noun before them, whose name may itself hold a place word ("dày màng phổi ở xương
# sườn", "pleural thickening in the right rib": a rib lesion).
_LOCATIVES = frozenset({"ở", "tại", "in", "at", "within"})


def _first_place(tokens: list[str]) -> str | None:
    for start in range(len(tokens)):  # the earliest place phrase ...
        for length in range(min(_MAX_PHRASE, len(tokens) - start), 0, -1):  # ... longest
            location = _PHRASES.get(tuple(tokens[start : start + length]))
            if location is not None:
                return location
    return None


def parse_location(text: str) -> Place:
    """The location class and laterality named in ``text`` (Vietnamese or English)."""
    tokens = tokenize_vi(text)
    at = next((i for i, t in enumerate(tokens) if t in _LOCATIVES), None)
    location = _first_place(tokens[at + 1 :]) if at is not None else None
    return Place(location or _first_place(tokens), _find_side(tokens))


# ---- dispatch ---------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """Text for exact match: `tokenize_vi` tokens, closing punctuation dropped."""
    tokens = tokenize_vi(text)
    while tokens and tokens[-1] in {".", "!", "?", ";", ","}:
        tokens.pop()
    return " ".join(tokens)


def parse_answer(text: str, answer_type: str, lang: str = "vi") -> Any:
    """``text`` parsed for its answer type: bool | None (yes_no), float | None (number),
    Place (location) or the normalised string (text)."""
    if lang not in _LANGS:
        raise ValueError(f"unknown language {lang!r}; choose from {_LANGS}")
    if answer_type == "yes_no":
        return parse_yes_no(text)
    if answer_type == "number":
        return parse_number(text, lang)
    if answer_type == "location":
        return parse_location(text)
    if answer_type == "text":
        return normalize_text(text)
    raise ValueError(
        f"unknown answer type {answer_type!r}; choose from yes_no/number/location/text"
    )


# ---- scoring ----------------------------------------------------------------------------

_REQUIRED = ("answer", "prediction", "answer_type", "kind")


def score_item(item: Mapping[str, Any], tolerance: VqaTolerance | None = None) -> dict[str, Any]:
    """Correctness of one item: ``correct`` (bool) and, for locations, ``correct_side``.

    ``item`` holds ``answer`` (reference), ``prediction``, ``answer_type``, ``kind``,
    ``value`` (the reference number, else parsed from ``answer``) and ``lang``. A
    location is correct when its class matches (the reference must name a known
    class); ``correct_side`` also needs the side when the reference has one.
    """
    missing = [k for k in _REQUIRED if k not in item]
    if missing:
        raise ValueError(f"VQA item lacks {missing}: {dict(item)}")
    tolerance = tolerance or VqaTolerance()
    kind, answer_type = item["kind"], item["answer_type"]
    lang = item.get("lang") or "vi"
    predicted = parse_answer(item["prediction"], answer_type, lang)
    out: dict[str, Any] = {"parsed": predicted}
    if answer_type == "yes_no":
        reference = parse_answer(item["answer"], answer_type, lang)
        out["correct"] = predicted is not None and predicted == reference
    elif answer_type == "number":
        value = item.get("value")
        reference = float(value) if value is not None else parse_number(item["answer"], lang)
        ok = reference is not None and numbers_match(predicted, reference, kind, tolerance)
        out["correct"] = ok
    elif answer_type == "location":
        reference = parse_location(item["answer"])
        out["correct"] = reference.location is not None and predicted.location == reference.location
        side_ok = reference.side == "none" or predicted.side == reference.side
        out["correct_side"] = out["correct"] and side_ok
    else:
        out["correct"] = predicted == normalize_text(item["answer"])
    out["unparsed"] = predicted is None or (
        answer_type == "location" and predicted.location is None
    )
    return out


def _accuracy(hits: list[bool]) -> dict[str, Any]:
    n = len(hits)
    return {"n": n, "correct": sum(hits), "accuracy": sum(hits) / n if n else None}


def _text_scores(items: list[Mapping[str, Any]], hits: list[bool]) -> dict[str, Any]:
    """BLEU-4 / ROUGE-L / ROUGE-1 (corpus, `nlg_scores`) and exact match of text answers."""
    out = _accuracy(hits)
    out["exact_match"] = out.pop("accuracy")
    if not items:
        return out | {"bleu4": None, "rouge_l": None, "rouge1": None}
    predictions = {str(i): item["prediction"] for i, item in enumerate(items)}
    references = {str(i): item["answer"] for i, item in enumerate(items)}
    nlg = nlg_scores(predictions, references, meteor=False)
    return out | {k: nlg[k] for k in ("bleu4", "rouge_l", "rouge1")}


def score_vqa(
    items: Iterable[Mapping[str, Any]], tolerance: VqaTolerance | None = None
) -> dict[str, Any]:
    """Accuracy of VQA predictions, overall, per answer type and per question kind.

    Returns ``n``, ``accuracy`` (all items; locations by class, free text by exact
    match), ``closed_accuracy`` (yes/no), ``by_type`` and ``by_kind`` (``n``,
    ``correct``, ``accuracy`` each), ``location`` (``class_accuracy`` and
    ``class_side_accuracy``), ``text`` (exact match and NLG scores) and ``unparsed``
    (predictions no parser understood; they count as wrong).
    """
    items = list(items)
    results = [score_item(item, tolerance) for item in items]
    by_type: dict[str, list[bool]] = defaultdict(list)
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for item, result in zip(items, results, strict=True):
        by_type[item["answer_type"]].append(result["correct"])
        by_kind[item["kind"]].append(result["correct"])
    locations = [r for i, r in zip(items, results, strict=True) if i["answer_type"] == "location"]
    text_items = [i for i in items if i["answer_type"] == "text"]
    overall = _accuracy([r["correct"] for r in results])
    return {
        "n": overall["n"],
        "correct": overall["correct"],
        "accuracy": overall["accuracy"],
        "closed_accuracy": _accuracy(by_type.get("yes_no", []))["accuracy"],
        "by_type": {t: _accuracy(h) for t, h in sorted(by_type.items())},
        "by_kind": {k: _accuracy(h) for k, h in sorted(by_kind.items())},
        "location": {
            "n": len(locations),
            "class_accuracy": _accuracy([r["correct"] for r in locations])["accuracy"],
            "class_side_accuracy": _accuracy([r["correct_side"] for r in locations])["accuracy"],
        },
        "text": _text_scores(text_items, by_type.get("text", [])),
        "unparsed": sum(r["unparsed"] for r in results),
    }
