"""Words for findings in Vietnamese and English: numbers, locations, lesion names.

Report rendering and question generation share these, so a lesion is named the same way
in a report sentence, in a question about it and in the answer. Every phrase a lesion is
rendered with contains `location_phrase(lesion, lang)` verbatim: that is what tests (and,
later, findings extraction) look for.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from vipet.reports.schema import (
    FINE_LOCATIONS,
    LATERALITY_WORDS,
    LOCATION_CLASS_NAMES,
    SECTION_OF_LOCATION,
    SECTIONS,
    Lesion,
)

LANGS: tuple[str, ...] = ("vi", "en")

# Lymph-node stations: a node there is named "hạch cổ trái" / "left cervical lymph node";
# in English these names are adjectives ("axillary"), so other lesions get "... region".
NODAL_STATIONS = frozenset(
    {
        "cervical",
        "supraclavicular",
        "axillary",
        "paratracheal",
        "prevascular",
        "subcarinal",
        "hilar",
        "paraaortic",
        "mesenteric",
        "iliac",
        "inguinal",
    }
)
BONES = frozenset({"spine", "rib", "pelvic_bone", "femur"})
# Vietnamese puts a lung finding straight before its place: "nốt mờ thùy trên phổi phải".
_VI_JUXTAPOSED = frozenset({"lung_upper", "lung_middle", "lung_lower", "hilar"})

# Section a lesion falls back to when its own `section` is not a SECTIONS key.
_SECTION_KEYS = tuple(key for key, _, _ in SECTIONS)

T = TypeVar("T")


def check_lang(lang: str) -> None:
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}; choose from {list(LANGS)}")


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def pick(rng: np.random.Generator, options: Sequence[T]) -> T:
    """One element of ``options``, drawn from ``rng`` (keeps Python types, unlike choice)."""
    return options[int(rng.integers(len(options)))]


def chance(rng: np.random.Generator, p: float) -> bool:
    return bool(rng.random() < p)


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def join_list(items: Sequence[str], lang: str) -> str:
    """ "a, b và c" / "a, b and c"."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    last = " và " if lang == "vi" else " and "
    return ", ".join(items[:-1]) + last + items[-1]


def fmt_suv(value: float, lang: str) -> str:
    """SUV to one decimal: "8,1" in Vietnamese (comma decimal), "8.1" in English."""
    text = f"{value:.1f}"
    return text.replace(".", ",") if lang == "vi" else text


def fmt_mm(value: float) -> str:
    """A size in whole millimetres (half rounds up; a positive size is at least 1 mm)."""
    return str(max(1, math.floor(value + 0.5))) if value > 0 else "0"


def size_text(lesion: Lesion) -> str | None:
    """ "12 x 8 mm", "12 mm", or None when the size is unknown."""
    sizes = [s for s in (lesion.size_mm, lesion.short_mm) if s is not None]
    if not sizes:
        return None
    return " x ".join(fmt_mm(s) for s in sizes) + " mm"


def section_of(lesion: Lesion) -> str:
    """The SECTIONS key of the report section that mentions ``lesion``."""
    if lesion.section in _SECTION_KEYS:
        return lesion.section
    return SECTION_OF_LOCATION.get(lesion.location, "musculoskeletal")


def _ordinal(level: str) -> str:
    if not level.isdigit():
        return level
    n = int(level)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _squash(text: str) -> str:
    return nfc(" ".join(text.split()))


def _fine_phrase(key: str, name: str, lat: str, level: str, lang: str) -> str:
    """The place words of a known fine location, laterality and level included."""
    if lang == "vi":
        if key == "spine":
            return f"đốt sống {level}" if level else name
        if key == "rib":
            return f"{name} {level} {lat}"
        if key == "liver" and level:
            return f"hạ phân thùy {level} {name}"
        if level:
            tail = f"nhóm {level}" if key in NODAL_STATIONS else f"({level})"
            return f"{name} {lat} {tail}"
        return f"{name} {lat}"
    if key == "spine":
        return f"{level} vertebra" if level else name
    if key == "rib":
        return f"{lat} {_ordinal(level)} {name}" if level else f"{lat} {name}"
    if key == "liver" and level:
        return f"{name} segment {level}"
    if level:
        if key in NODAL_STATIONS:
            word = "level" if key in ("cervical", "supraclavicular") else "station"
            return f"{lat} {word} {level} {name}"
        return f"{lat} {name} ({level})"
    return f"{lat} {name}"


def location_phrase(lesion: Lesion, lang: str) -> str:
    """The place of ``lesion`` in words, with laterality and level when it has them.

    "cổ trái nhóm IV", "thùy trên phổi phải", "đốt sống T8", "xương sườn 5 phải" /
    "left level IV cervical", "right upper lobe of the lung", "T8 vertebra", "right 5th rib".
    A location_detail that is not a FINE_LOCATIONS key (free text from extraction) is used
    as it is; an empty one falls back to the location class name.
    """
    check_lang(lang)
    lat = LATERALITY_WORDS[lang].get(lesion.laterality, "")
    level = lesion.level.strip()
    fine = FINE_LOCATIONS.get(lesion.location_detail)
    if fine is None:
        base = lesion.location_detail.strip() or LOCATION_CLASS_NAMES[lang][lesion.location]
        if lat and lat in base.split():
            lat = ""
        text = f"{base} {lat} {level}" if lang == "vi" else f"{lat} {base} {level}"
        return _squash(text)
    if not fine.lateral:
        lat = ""
    name = fine.vi if lang == "vi" else fine.en
    return _squash(_fine_phrase(fine.key, name, lat, level, lang))


# ---- lesion nouns -------------------------------------------------------------------
# Alternatives per type; the first one is the canonical name (schema.LESION_TYPE_NAMES).
_VI_NOUNS: dict[str, tuple[str, ...]] = {
    "lymph_node": ("hạch",),
    "nodule": ("nốt mờ", "nốt mờ tròn"),
    "ground_glass": ("nốt kính mờ", "đám kính mờ", "vùng kính mờ"),
    "mass": ("khối mờ", "đám mờ", "khối mờ tỷ trọng mô mềm"),
    "pleural_thickening": ("dày màng phổi",),
    "interstitial_thickening": ("dày tổ chức kẽ", "dày tổ chức kẽ dạng lưới"),
    "band_opacity": ("dải mờ", "dải xơ mờ"),
    "consolidation": ("đông đặc", "đám đông đặc", "vùng đông đặc nhu mô"),
    "effusion": ("tràn dịch",),
    "soft_tissue": ("tổ chức mô mềm", "khối tổ chức mô mềm", "tổ chức tỷ trọng mô mềm"),
    "wall_thickening": ("dày thành", "dày thành khu trú"),
    "calcified_nodule": ("nốt vôi hóa", "nốt vôi hóa nhỏ"),
    "hypermetabolism": ("ổ tăng chuyển hóa FDG", "vùng tăng chuyển hóa FDG"),
    "other": ("tổn thương", "tổn thương bất thường"),
}
_EN_NOUNS: dict[str, tuple[str, ...]] = {
    "lymph_node": ("lymph node",),
    "nodule": ("nodule", "rounded nodule"),
    "ground_glass": ("ground-glass opacity", "ground-glass nodule", "area of ground-glass opacity"),
    "mass": ("mass", "mass lesion", "soft-tissue mass"),
    "pleural_thickening": ("pleural thickening",),
    "interstitial_thickening": ("interstitial thickening", "reticular interstitial thickening"),
    "band_opacity": ("band-like opacity", "linear band opacity"),
    "consolidation": ("consolidation", "area of consolidation", "focal consolidation"),
    "effusion": ("effusion",),
    "soft_tissue": ("soft-tissue lesion", "soft-tissue density", "soft-tissue thickening"),
    "wall_thickening": ("wall thickening", "focal wall thickening"),
    "calcified_nodule": ("calcified nodule", "small calcified nodule"),
    "hypermetabolism": ("hypermetabolic focus", "focus of increased FDG uptake"),
    "other": ("lesion", "abnormality"),
}
# Organ-specific names: liver lesions are hypodense, bone lesions lytic or hypermetabolic.
_VI_LIVER = {"nodule": ("nốt giảm tỷ trọng",), "mass": ("khối giảm tỷ trọng",)}
_EN_LIVER = {"nodule": ("hypodense nodule",), "mass": ("hypodense mass", "hypoattenuating mass")}
_VI_BONE = {"other": ("tổn thương tiêu xương", "tổn thương xương")}
_EN_BONE = {"other": ("lytic lesion", "osteolytic lesion")}


def _noun(lesion: Lesion, lang: str, rng: np.random.Generator | None) -> str:
    key = lesion.location_detail
    table = _VI_NOUNS if lang == "vi" else _EN_NOUNS
    if key == "liver":
        table = {**table, **(_VI_LIVER if lang == "vi" else _EN_LIVER)}
    elif key in BONES:
        table = {**table, **(_VI_BONE if lang == "vi" else _EN_BONE)}
    options = table[lesion.type]
    return options[0] if rng is None else pick(rng, options)


def _vi_phrase(lesion: Lesion, loc: str, noun: str, rng: np.random.Generator | None) -> str:
    key, kind = lesion.location_detail, lesion.type
    if key == "pleura" and kind in ("effusion", "pleural_thickening"):
        head = "tràn dịch" if kind == "effusion" else "dày"  # "tràn dịch màng phổi trái"
        rest = noun.removeprefix(head).removeprefix(" màng phổi")
        return f"{head} {loc}{rest}"
    if key == "spine" and lesion.level and rng is not None and chance(rng, 0.5):
        loc = f"thân {loc}"  # "thân đốt sống T8"
    if (kind == "lymph_node" and key in NODAL_STATIONS) or key in _VI_JUXTAPOSED:
        link = " " if rng is None or key not in _VI_JUXTAPOSED else pick(rng, (" ", " ở "))
    else:
        link = " ở "
    return f"{noun}{link}{loc}"


def _en_phrase(lesion: Lesion, loc: str, noun: str, rng: np.random.Generator | None) -> str:
    key, kind = lesion.location_detail, lesion.type
    if key == "pleura" and loc.endswith("pleura") and kind in ("effusion", "pleural_thickening"):
        *mods, head = noun.removeprefix("pleural ").split()
        return " ".join([*mods, f"{loc}l", head])  # "small left pleural effusion"
    if key in NODAL_STATIONS:
        if kind == "lymph_node":
            return f"{loc} {noun}"  # "left axillary lymph node"
        return f"{noun} in the {loc} region"
    if key == "spine" and lesion.level and rng is not None and chance(rng, 0.5):
        return f"{noun} in the {loc}l body"  # "T8 vertebral body"
    return f"{noun} in the {loc}"


def lesion_phrase(lesion: Lesion, lang: str, rng: np.random.Generator | None = None) -> str:
    """``lesion`` named by type and place: "hạch cổ trái nhóm IV", "nốt mờ thùy trên phổi
    phải", "nodule in the right upper lobe of the lung". Without ``rng`` the canonical
    wording (questions, impression); with it a drawn synonym (report sentences)."""
    check_lang(lang)
    loc = location_phrase(lesion, lang)
    noun = _noun(lesion, lang, rng)
    build = _vi_phrase if lang == "vi" else _en_phrase
    return _squash(build(lesion, loc, noun, rng))


def article(phrase: str) -> str:
    """ "a" or "an" for an English noun phrase (numbers read aloud: "an 8 mm", "an 11 mm")."""
    word = phrase.split(" ", 1)[0].lower()
    digits = word.split("x")[0]
    if digits[:1].isdigit():
        lead = "".join(ch for ch in digits if ch.isdigit())
        vowel_sound = lead.startswith("8") or (len(lead) in (2, 5) and lead[:2] in ("11", "18"))
    else:
        consonant_sound = word.startswith(("uni", "use", "usu", "ure", "one"))
        vowel_sound = word[:1] in "aeiou" and not consonant_sound
    return "an" if vowel_sound else "a"
