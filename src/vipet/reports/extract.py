"""Offline, rule-based extraction of lesions from PET/CT report text (DOMAIN.md §3, §4).

The ViMed-PET paper turns reports into lesion lists with GPT-4o; ViPET does it with
regular expressions and vocabularies, so clinical scores can be computed anywhere, for
free and deterministically. `extract_findings` accepts a plain report text or a report
dict in the ViMed JSON structure and returns `ExtractedLesion`s whose field values are
`schema.Lesion`-compatible (14 types, 6 location classes, FINE_LOCATIONS keys).

Rules (per finding sentence):

- Only the FINDINGS sections of a report dict are read: the impression repeats the same
  lesions in shorter words and would count every lesion twice.
- Physiological-uptake sentences ("bắt xạ … sinh lý", "physiological") and negated
  findings ("Không phát hiện …", "không thấy hạch …", "No abnormal …") yield nothing;
  "không tăng chuyển hóa FDG" / "no increased FDG uptake" only makes a finding non-avid.
- Interpretation clauses ("— theo dõi …", "nghĩ nhiều đến …", "suspicious for …") are
  cut off before anything is read, so their nouns ("hạch di căn") create no lesion.
- The type is the first specific lesion noun; generic nouns ("tổn thương", "lesion")
  count only when there is none; no noun but increased uptake at a place means
  hypermetabolism. A plural or vague count ("vài hạch nhỏ", "several small nodes") is one
  lesion: the text gives no number to duplicate by.
- A multi-location phrase ("hạch rốn phổi phải và trung thất") gives one lesion per
  location (split on "," ";" "và"/"and"); size, SUVmax and avidity are shared.
  "hai bên" / "bilateral" is one lesion with laterality "both".
- Size is the largest dimension of the first measurement (cm → mm, ranges → max);
  SUVmax takes comma or dot decimals (ranges → max). With no uptake wording, a finding is
  avid when its SUVmax is at least 2.5.

Known limits: one measurement set per sentence (two findings measured separately in one
sentence share the first size); no counting of "3 hạch"; laterality of a list
("hạch cổ và thượng đòn trái") attaches to the last place only.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from vipet.reports.schema import (
    FINDINGS_KEY,
    FINE_LOCATIONS,
    IMPRESSION_KEY,
    SECTION_OF_LOCATION,
    SECTIONS,
    Lesion,
)
from vipet.reports.vocab import nfc

AVID_SUV = 2.5  # SUVmax above which a finding with no uptake wording counts as avid

# ---- vocabularies (regexes on lower-cased, NFC, new-style-accent text) -----------------

# (pattern, lesion type). "Specific" nouns name a structure; generic ones only a lesion.
_TYPES: dict[str, tuple[tuple[str, str], ...]] = {
    "vi": (
        (r"nốt vôi hóa|nốt canxi hóa|ổ vôi hóa|nốt mờ vôi hóa", "calcified_nodule"),
        (r"(?:nốt|đám|vùng|ổ) kính mờ|kính mờ", "ground_glass"),
        (r"dày (?:dính )?màng phổi", "pleural_thickening"),
        (r"tràn dịch|dịch màng phổi", "effusion"),
        (r"dày (?:tổ chức )?kẽ|tổn thương kẽ", "interstitial_thickening"),
        (r"dải (?:xơ )?mờ|dải xơ|xơ dải", "band_opacity"),
        (r"đông đặc", "consolidation"),
        (r"dày thành", "wall_thickening"),
        (r"(?:khối |đám )?(?:tổ chức|mô) (?:tỷ trọng )?mô mềm|tổ chức mô mềm|mô mềm",
         "soft_tissue"),
        (r"khối mờ|đám mờ|khối u|khối", "mass"),
        (r"nốt mờ|nốt giảm tỷ trọng|nốt đặc|nốt", "nodule"),
        (r"hạch", "lymph_node"),
        (r"(?:ổ|vùng|điểm) (?:tăng chuyển hóa|tăng hoạt độ|bắt xạ|tăng bắt xạ)",
         "hypermetabolism"),
        (r"tổn thương (?:(?:tiêu|hủy|đặc) )?xương|tiêu xương|hủy xương", "other"),
    ),
    "en": (
        (r"(?:small )?calcified (?:nodule|granuloma)s?|calcifications?", "calcified_nodule"),
        (r"ground[- ]glass(?: opacit(?:y|ies)| nodules?)?", "ground_glass"),
        (r"pleural thickening", "pleural_thickening"),
        (r"effusions?", "effusion"),
        (r"(?:interstitial|septal) thickening", "interstitial_thickening"),
        (r"band(?:-like)? opacit(?:y|ies)|linear opacit(?:y|ies)|fibrotic bands?",
         "band_opacity"),
        (r"consolidations?", "consolidation"),
        (r"wall thickening", "wall_thickening"),
        (r"soft[- ]tissue masse?s?", "mass"),
        (r"soft[- ]tissue (?:lesions?|density|thickening|components?)", "soft_tissue"),
        (r"masse?s?", "mass"),
        (r"nodules?", "nodule"),
        (r"(?:lymph )?nodes?|lymphadenopathy|adenopathy", "lymph_node"),
        (r"hypermetabolic (?:focus|foci|area)|foc(?:us|i) of (?:increased |intense )?"
         r"(?:fdg )?uptake|focal (?:fdg )?uptake", "hypermetabolism"),
        (r"(?:osteo)?lytic (?:bone )?lesions?|sclerotic (?:bone )?lesions?", "other"),
    ),
}  # fmt: skip
_GENERIC: dict[str, tuple[tuple[str, str], ...]] = {
    "vi": ((r"tổn thương", "other"),),
    "en": ((r"lesions?|abnormalit(?:y|ies)", "other"),),
}

# (pattern, location class, FINE_LOCATIONS key or "" for free text). Longer first.
_LOCATIONS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "vi": (
        (r"cạnh khí quản|trước khí quản", "mediastinum", "paratracheal"),
        (r"dưới carina|dưới cựa", "mediastinum", "subcarinal"),
        (r"trước mạch máu|trước mạch", "mediastinum", "prevascular"),
        (r"cửa sổ (?:chủ phổi|phế chủ)|cạnh thực quản|thực quản|màng (?:ngoài )?tim"
         r"|tuyến ức|trung thất", "mediastinum", ""),
        (r"rốn phổi", "lung", "hilar"),
        (r"thùy trên(?: phổi)?|thùy lưỡi", "lung", "lung_upper"),
        (r"thùy giữa(?: phổi)?", "lung", "lung_middle"),
        (r"thùy dưới(?: phổi)?", "lung", "lung_lower"),
        (r"(?:khoang )?màng phổi", "lung", "pleura"),
        (r"nhu mô phổi|đỉnh phổi|đáy phổi|phế trường|phổi", "lung", ""),
        (r"(?:hạ )?phân thùy [ivx\d]+(?: (?:của )?gan)?|thùy (?:phải |trái )?gan|gan",
         "abdomen", "liver"),
        (r"cạnh động mạch chủ(?: bụng)?|cạnh đmc(?: bụng)?", "abdomen", "paraaortic"),
        (r"mạc treo(?: ruột)?", "abdomen", "mesenteric"),
        (r"hố chậu|chậu (?:gốc|trong|ngoài)|chậu", "abdomen", "iliac"),
        (r"bẹn", "abdomen", "inguinal"),
        (r"lách|tụy|thượng thận|thận|dạ dày|đại tràng|ruột|bàng quang|tử cung"
         r"|buồng trứng|tuyến tiền liệt|túi mật|ổ bụng|sau phúc mạc|phúc mạc"
         r"|khung chậu|tiểu khung", "abdomen", ""),
        (r"cột sống (?:cổ|ngực|thắt lưng|lưng)|cột sống|(?:thân )?đốt sống", "other", "spine"),
        (r"xương sườn|cung sườn", "other", "rib"),
        (r"xương cánh chậu|cánh chậu|xương chậu", "other", "pelvic_bone"),
        (r"(?:cổ )?xương đùi", "other", "femur"),
        (r"(?:hố )?thượng đòn", "neck", "supraclavicular"),
        (r"cổ", "neck", "cervical"),
        (r"dưới hàm|dưới cằm|mang tai|tuyến giáp|vòm họng|hạ họng|họng|thanh quản"
         r"|amidan", "neck", ""),
        (r"hố nách|nách", "axilla", "axillary"),
        (r"xương ức|xương cùng|xương bả vai|xương cánh tay|xương đòn|hộp sọ|(?<!tiêu )(?<!hủy )(?<!đặc )xương"
         r"|tuyến vú|vú|não", "other", ""),
    ),
    "en": (
        (r"(?:cervical|thoracic|lumbar) spine|(?:cervical|thoracic|lumbar) vertebra[el]?"
         r"|spine|spinal|vertebra(?:e|l)?(?: bod(?:y|ies))?", "other", "spine"),
        (r"iliac (?:bone|wing|crest)|pelvic bones?|ilium|sacrum|acetabulum", "other",
         "pelvic_bone"),
        (r"femur|femoral (?:head|neck|shaft)", "other", "femur"),
        (r"ribs?", "other", "rib"),
        (r"paratracheal|pretracheal", "mediastinum", "paratracheal"),
        (r"subcarinal", "mediastinum", "subcarinal"),
        (r"prevascular", "mediastinum", "prevascular"),
        (r"mediastin(?:um|al)|aortopulmonary(?: window)?|(?:para)?esophage(?:us|al)"
         r"|pericardi(?:um|al)|thym(?:us|ic)", "mediastinum", ""),
        (r"(?<!fatty )hil(?:um|ar|a)", "lung", "hilar"),
        (r"upper lobe(?: of the (?:right |left )?lung)?|lingula(?:r)?", "lung", "lung_upper"),
        (r"middle lobe(?: of the (?:right |left )?lung)?", "lung", "lung_middle"),
        (r"lower lobe(?: of the (?:right |left )?lung)?", "lung", "lung_lower"),
        (r"pleura(?:l)?", "lung", "pleura"),
        (r"lungs?|pulmonary", "lung", ""),
        (r"liver(?: segment [ivx\d]+)?|hepatic", "abdomen", "liver"),
        (r"para-?aortic|retrocaval|aortocaval", "abdomen", "paraaortic"),
        (r"mesenter(?:y|ic)", "abdomen", "mesenteric"),
        (r"(?:external |internal |common )?iliac", "abdomen", "iliac"),
        (r"inguinal|groin", "abdomen", "inguinal"),
        (r"spleen|splenic|pancrea(?:s|tic)|adrenal(?: glands?)?|kidneys?|renal"
         r"|stomach|gastric|colon|colonic|bowel|bladder|uter(?:us|ine)|ovar(?:y|ian)"
         r"|prostate|abdom(?:en|inal)|retroperitone(?:um|al)|peritone(?:um|al)|pelvi[sc]"
         r"|gallbladder|porta hepatis", "abdomen", ""),
        (r"supraclavicular", "neck", "supraclavicular"),
        (r"cervical|neck", "neck", "cervical"),
        (r"submandibular|submental|parotid|thyroid|nasopharyn\w*|oropharyn\w*"
         r"|hypopharyn\w*|pharyn\w*|laryn\w*|tonsil\w*", "neck", ""),
        (r"axill(?:a|ary|ae)", "axilla", "axillary"),
        (r"sternum|scapula|humerus|skull|clavicle|bones?|osseous|skeletal|breasts?|brain",
         "other", ""),
    ),
}  # fmt: skip

# Words a location may carry after it (Vietnamese: "cổ trái nhóm IV", "xương sườn 5 phải").
_VI_TAIL = re.compile(
    r"(?:\s+(?:phải và trái|trái và phải|cả hai bên|hai bên|2 bên|phải|trái"
    r"|nhóm\s+[ivx]+[ab]?|[ivx]+[ab]?(?!\w)|\d+[lr]?(?!\w)|[ctls]\d{1,2}(?!\w)"
    r"|\((?![^)]*\d\s*(?:mm|cm))[^)]*\)))*"
)
_EN_TAIL = re.compile(r"(?:\s+(?:bilaterally|on both sides|\((?![^)]*\d\s*(?:mm|cm))[^)]*\)))*")
_LATERALITY = {
    "vi": ((r"phải và trái|trái và phải|hai bên|2 bên", "both"), (r"phải", "right"),
           (r"trái", "left")),
    "en": ((r"right and left|left and right|bilateral(?:ly)?|both|either", "both"),
           (r"right", "right"), (r"left", "left")),
}  # fmt: skip

# Connectors that make the next place part of the same finding ("… phải và trung thất").
_CONNECTOR = re.compile(r"[,;]|(?<!\w)(?:và|and)(?!\w)")
# Words allowed between two places of one finding besides a connector and a lesion noun.
_GAP_FILLER = {
    "vi": re.compile(r"(?<!\w)(?:ở|tại|vùng|nhóm|các|nhiều|vài|và|cả|nhỏ)(?!\w)|[,;]"),
    "en": re.compile(
        r"(?<!\w)(?:in|at|of|the|a|an|and|both|right|left|bilateral|small|several|multiple"
        r"|region|regions|station|level)(?!\w)|[,;]"
    ),
}

# Interpretation clauses: cut from here to the end of the sentence.
_INTERPRETATION = {
    "vi": re.compile(
        r"\s[—–]\s|(?:[,;]\s*|\s+)(?:theo dõi|nghĩ nhiều|nghĩ đến|nghĩ tới|nghi ngờ|đề nghị"
        r"|phù hợp với|gợi ý|không loại trừ|có thể là|tổn thương lành tính)(?!\w)"
    ),
    "en": re.compile(
        r"\s[—–]\s|(?:[,;]\s*|\s+)(?:suspicious|likely|probably|concerning|suggestive"
        r"|consistent with|favou?ring|compatible with|in keeping with|representing|possibly"
        r"|may represent|could represent|worrisome|follow-up suggested|follow-up)(?!\w)"
    ),
}
_PHYSIOLOGICAL = re.compile(r"sinh lý|physiolog")
# Negation of uptake only (a finding that is not avid) versus negation of a finding.
_UPTAKE_NEGATION = {
    "vi": re.compile(
        r"(?:không|chưa)(?: thấy| có| ghi nhận)? (?:tăng|bắt xạ)"
        r"|(?:không|chưa) (?:thấy |có )?(?:hình ảnh )?tăng (?:nhẹ )?chuyển hóa"
    ),
    "en": re.compile(
        r"(?<!\w)(?:no|without)(?: evidence of)?(?: (?:significant|increased|abnormal|"
        r"appreciable|definite|focal|avid|pathological|intense))*(?: fdg| tracer)? "
        r"(?:uptake|avidity|activity)(?!\w)|non[- ]?(?:fdg[- ])?avid|not (?:fdg[- ])?avid"
    ),
}
_NEGATION = {
    "vi": re.compile(r"(?<!\w)(?:không|chưa)(?: thấy| phát hiện| có| ghi nhận| còn)?(?!\w)"),
    "en": re.compile(r"(?<!\w)(?:no|without|negative for|absence of|free of|resolved)(?!\w)"),
}
_AVID = {
    "vi": re.compile(r"tăng (?:nhẹ )?(?:chuyển hóa|hấp thu|bắt xạ|hoạt độ)|bắt xạ (?:fdg )?mạnh"),
    "en": re.compile(
        r"increased|intense|hypermetabolic|fdg[- ]avid|(?<!non-)(?<!non)avid|high(?:ly)? "
        r"(?:fdg )?uptake|marked (?:fdg )?uptake"
    ),
}
_NUMBER = r"\d+(?:[.,]\d+)?"
_SUV = re.compile(
    rf"suv\s*max\s*(?:[:=]|of|là|khoảng|~)?\s*({_NUMBER})"
    rf"(?:\s*(?:-|–|đến|to)\s*({_NUMBER}))?"
)
_SIZE = re.compile(
    rf"({_NUMBER})(?:\s*(?:x|×|-|–|đến|to)\s*({_NUMBER}))?(?:\s*(?:x|×)\s*({_NUMBER}))?"
    r"\s*(mm|cm)(?!\w)"
)
_SECTION_FALLBACK = {"head_neck": ("neck", ""), "abdomen_pelvis": ("abdomen", "")}
_VI_CHARS = set("àáảãạăằắẳẵặâầấẩẫậđèéẻẽẹêềếểễệìíỉĩịòóỏõọôồốổỗộơờớởỡợùúủũụưừứửữựỳýỷỹỵ")
# Old-style tone placement ("hoá", "tuỵ") to the new style the vocabularies use; each
# pair has the same length, so match positions stay valid in the original text.
_ACCENTS = {
    "oá": "óa", "oà": "òa", "oả": "ỏa", "oã": "õa", "oạ": "ọa",
    "oé": "óe", "oè": "òe", "oẻ": "ỏe", "oẽ": "õe", "oẹ": "ọe",
    "uý": "úy", "uỳ": "ùy", "uỷ": "ủy", "uỹ": "ũy", "uỵ": "ụy",
}  # fmt: skip
_ACCENT_RE = re.compile(r"(?<!q)(" + "|".join(_ACCENTS) + r")(?!\w)")


def _compile(patterns: list[str]) -> list[re.Pattern[str]]:
    return [re.compile(rf"(?<!\w)(?:{p})(?!\w)") for p in patterns]


def _scan(text: str, patterns: list[re.Pattern[str]]) -> list[tuple[int, int, int]]:
    """Leftmost-longest, non-overlapping matches of any pattern: (start, end, index).

    One alternation would take the first alternative that fits ("nốt" before "nốt vôi
    hóa"); comparing every pattern's matches keeps the longest phrase at each place."""
    found = sorted(
        (m.start(), -(m.end() - m.start()), i)
        for i, pattern in enumerate(patterns)
        for m in pattern.finditer(text)
    )
    out: list[tuple[int, int, int]] = []
    for start, neg_len, i in found:
        if out and start < out[-1][1]:
            continue
        out.append((start, start - neg_len, i))
    return out


_TYPE_RE = {lang: _compile([p for p, _ in table]) for lang, table in _TYPES.items()}
_GENERIC_RE = {lang: _compile([p for p, _ in table]) for lang, table in _GENERIC.items()}
_LOC_RE = {lang: _compile([p for p, _, _ in table]) for lang, table in _LOCATIONS.items()}
_LAT_RE = {
    lang: [(re.compile(rf"(?<!\w)(?:{p})(?!\w)"), v) for p, v in table]
    for lang, table in _LATERALITY.items()
}


# ---- result ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractedLesion:
    """One lesion read from report text; values are `schema.Lesion`-compatible, unknown
    numbers are None and ``sentence`` is the text it came from."""

    type: str
    location: str
    location_detail: str  # FINE_LOCATIONS key, or the place words when not one of them
    laterality: str
    size_mm: float | None
    suvmax: float | None
    fdg_avid: bool
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_lesion(self, id: int = 0) -> Lesion:
        """A `schema.Lesion` (region and section from the fine location, or guessed from
        the class) — e.g. to re-render extracted findings as a report."""
        fine = FINE_LOCATIONS.get(self.location_detail)
        region = fine.region if fine else _REGION_OF_CLASS[self.location]
        section = fine.section if fine else SECTION_OF_LOCATION[self.location]
        return Lesion(
            id=id,
            type=self.type,
            location=self.location,
            location_detail=self.location_detail,
            laterality=self.laterality,
            size_mm=self.size_mm,
            short_mm=None,
            suvmax=self.suvmax,
            fdg_avid=self.fdg_avid,
            region=region,
            section=section,
        )


_REGION_OF_CLASS = {
    "neck": "head_neck",
    "mediastinum": "chest",
    "lung": "chest",
    "axilla": "chest",
    "abdomen": "abdomen_pelvis",
    "other": "chest",
}


@dataclass(frozen=True)
class _Place:
    start: int
    end: int  # after the laterality / level words that belong to it
    location: str
    detail: str
    laterality: str


# ---- text helpers ------------------------------------------------------------------------


def detect_language(text: str) -> str:
    """ "vi" when the text has Vietnamese letters (tone marks, đ, ơ, ư …), else "en"."""
    lowered = text.lower()
    return "vi" if sum(ch in _VI_CHARS for ch in lowered) >= 2 else "en"


def _normalise(text: str) -> str:
    """Lower-cased NFC text with new-style tone placement; same length as nfc(text)."""
    lowered = nfc(text).lower()
    return _ACCENT_RE.sub(lambda m: _ACCENTS[m.group(1)], lowered)


def split_sentences(text: str) -> list[str]:
    """Sentences of a report section: split after ". ! ?" when the next one starts with
    a capital letter (so "8.1" and "SUVmax: 8,1)." stay whole), and on line breaks."""
    sentences: list[str] = []
    for line in nfc(text).splitlines():
        merged: list[str] = []
        for piece in re.split(r"(?<=[.!?])\s+", line.strip()):
            if merged and not piece[:1].isupper():
                merged[-1] = f"{merged[-1]} {piece}"
            elif piece:
                merged.append(piece)
        sentences.extend(merged)
    return sentences


def _number(text: str) -> float:
    return float(text.replace(",", "."))


def _suvmax(text: str) -> float | None:
    values = [
        max(_number(m.group(1)), _number(m.group(2)) if m.group(2) else 0.0)
        for m in _SUV.finditer(text)
    ]
    return max(values) if values else None


def _size_mm(text: str) -> float | None:
    """Largest dimension of the first measurement ("12 x 14 mm", "5-10 mm", "1,5 cm")."""
    m = _SIZE.search(text)
    if m is None:
        return None
    values = [_number(g) for g in m.groups()[:3] if g]
    scale = 10.0 if m.group(4) == "cm" else 1.0
    return round(max(values) * scale, 2)


def _fdg_avid(text: str, lang: str, suvmax: float | None) -> bool:
    if _UPTAKE_NEGATION[lang].search(text):
        return False
    if _AVID[lang].search(text):
        return True
    return suvmax is not None and suvmax >= AVID_SUV


# ---- one sentence ------------------------------------------------------------------------


def _strip_clauses(text: str, lang: str) -> str:
    """The finding part of a normalised sentence: interpretation cut off, and negated
    findings ("…, không thấy hạch trung thất") blanked up to the next ";" (blanked with
    spaces so positions still index the original sentence)."""
    m = _INTERPRETATION[lang].search(text)
    if m is not None:
        text = text[: m.start()]
    uptake_spans = [(u.start(), u.end()) for u in _UPTAKE_NEGATION[lang].finditer(text)]
    for neg in _NEGATION[lang].finditer(text):
        if any(a <= neg.start() < b for a, b in uptake_spans):
            continue
        end = text.find(";", neg.end())
        end = len(text) if end < 0 else end
        text = text[: neg.start()] + " " * (end - neg.start()) + text[end:]
    return text


def _laterality(words: str, lang: str) -> str:
    for pattern, value in _LAT_RE[lang]:
        if pattern.search(words):
            return value
    return "none"


def _places(text: str, lang: str) -> list[_Place]:
    """Every place named in ``text``, with the laterality words around it."""
    places: list[_Place] = []
    table = _LOCATIONS[lang]
    prev_end = 0
    for start, end, i in _scan(text, _LOC_RE[lang]):
        _, location, detail = table[i]
        tail = (_VI_TAIL if lang == "vi" else _EN_TAIL).match(text, end)
        stop = tail.end() if tail else end
        words = text[start:stop]
        if lang == "en":  # English puts laterality first: "left level IV cervical"
            before = re.split(r"[,;()]", text[max(prev_end, start - 30) : start])[-1]
            words = f"{before} {words}"
        lat = _laterality(words, lang)
        fine = FINE_LOCATIONS.get(detail)
        if fine is not None and not fine.lateral:
            lat = "none"
        places.append(_Place(start, stop, location, detail or text[start:end], lat))
        prev_end = stop
    return places


def _type_at(text: str, lang: str) -> str | None:
    """The first specific lesion noun in ``text``, else the first generic one."""
    for patterns, table in ((_TYPE_RE, _TYPES), (_GENERIC_RE, _GENERIC)):
        found = _scan(text, patterns[lang])
        if found:
            return table[lang][found[0][2]][1]
    return None


def _is_continuation(gap: str, lang: str) -> bool:
    """True when only a connector (plus fillers and lesion nouns) separates two places:
    "rốn phổi phải và trung thất", "cổ trái nhóm IV và hạch thượng đòn trái"."""
    if not _CONNECTOR.search(gap):
        return False
    rest = gap
    for start, end, _ in reversed(_scan(rest, _TYPE_RE[lang] + _GENERIC_RE[lang])):
        rest = rest[:start] + " " + rest[end:]
    rest = _GAP_FILLER[lang].sub(" ", rest)
    return not rest.strip()


def _sentence_lesions(
    sentence: str, lang: str, fallback: tuple[str, str] | None
) -> list[ExtractedLesion]:
    """The lesions of one finding sentence (none for physiology or negatives)."""
    norm = _normalise(sentence)
    if _PHYSIOLOGICAL.search(norm):
        return []
    text = _strip_clauses(norm, lang)
    suvmax = _suvmax(text)
    avid = _fdg_avid(text, lang, suvmax)
    kind = _type_at(text, lang)
    places = _places(text, lang)
    # A place word inside the lesion noun ("dày màng phổi", "pleural effusion") counts
    # only when no other place is named ("pleural thickening in the femur": femur).
    nouns = _scan(text, _TYPE_RE[lang])
    outside = [p for p in places if not any(a <= p.start < b for a, b, _ in nouns)]
    places = outside or places
    if kind is None:
        if not (avid and places):
            return []
        kind = "hypermetabolism"  # uptake at a place with no structure named
    if not places:
        location, detail = fallback or ("other", "")
        places = [_Place(0, 0, location, detail, "none")]
    items = [(places[0], kind)]
    for prev, place in itertools.pairwise(places):
        gap = text[prev.end : place.start]
        if not _is_continuation(gap, lang):
            break
        after = _CONNECTOR.split(gap)[-1]  # "… và hạch thượng đòn": that noun's type
        items.append((place, _type_at(after, lang) or kind))
    size = _size_mm(text)
    return [
        ExtractedLesion(t, p.location, p.detail, p.laterality, size, suvmax, avid, sentence)
        for p, t in items
    ]


# ---- reports -----------------------------------------------------------------------------

_HEADINGS = {nfc(h).lower(): key for key, vi, en in SECTIONS for h in (vi, en)}
_FINDINGS_KEYS = {nfc(k).lower() for k in FINDINGS_KEY.values()} | {"findings"}
_IMPRESSION_KEYS = {nfc(k).lower() for k in IMPRESSION_KEY.values()} | {"impression"}


def _sections(report: Mapping) -> list[tuple[str, str | None]]:
    """(text, section key or None) of the findings of a report dict.

    ViMed JSON: ``{"Mô tả hình ảnh" | "Findings": {heading: text} | text, "Nhận định kết
    quả" | "Impression": text}``. Only the findings are read: the impression lists the
    same lesions again. A dict with no findings key is read whole, impression excepted
    (e.g. a bare ``{heading: text}`` mapping)."""
    body: Any = None
    for key, value in report.items():
        if nfc(str(key)).strip().lower() in _FINDINGS_KEYS:
            body = value
    if body is None:
        body = {
            k: v for k, v in report.items() if nfc(str(k)).strip().lower() not in _IMPRESSION_KEYS
        }
    if isinstance(body, str):
        return [(body, None)]
    out: list[tuple[str, str | None]] = []
    for heading, text in body.items():
        if isinstance(text, str):
            out.append((text, _HEADINGS.get(nfc(str(heading)).strip().lower())))
        elif isinstance(text, Mapping):
            out.extend(_sections(text))
    return out


def _laid_out_sections(text: str) -> list[tuple[str, str | None]] | None:
    """The findings of a plain text laid out like `vipet.reports.render.report_text`
    (one "heading: text" per line, a findings heading line, an impression line), or None
    for text without that layout. Generated reports are this text: read whole, the
    impression would list every lesion a second time."""
    out: list[tuple[str, str | None]] = []
    laid_out = False
    for line in text.splitlines():
        head, sep, rest = line.partition(":")
        key = nfc(head).strip().lower()
        if sep and key in _IMPRESSION_KEYS:
            return out
        if sep and key in _FINDINGS_KEYS:
            laid_out = True
            rest = rest.strip()
            if not rest:
                continue
        if sep and key in _HEADINGS:
            laid_out = True
            out.append((rest.strip(), _HEADINGS[key]))
        elif line.strip():
            out.append((line.strip(), None))
    return out if laid_out else None


def extract_findings(
    text_or_report: str | Mapping, lang: str | None = None
) -> list[ExtractedLesion]:
    """The lesions a report describes, in reading order.

    ``text_or_report`` is a plain report text or a ViMed JSON report dict (findings
    sections only are read — see `_sections`; so is a text laid out as `report_text`
    writes a report, see `_laid_out_sections`); ``lang`` "vi" / "en", or None to detect
    it from the text. A finding with no place words takes the class of its report section
    when that is unambiguous (head–neck → neck, abdomen–pelvis → abdomen), else "other".
    """
    if isinstance(text_or_report, Mapping):
        sections = _sections(text_or_report)
    else:
        text = str(text_or_report)
        sections = _laid_out_sections(text) or [(text, None)]
    if lang is None:
        lang = detect_language(" ".join(text for text, _ in sections))
    if lang not in ("vi", "en"):
        raise ValueError(f"unknown language {lang!r}; choose from ['vi', 'en']")
    lesions: list[ExtractedLesion] = []
    for text, section in sections:
        fallback = _SECTION_FALLBACK.get(section or "")
        for sentence in split_sentences(text):
            lesions.extend(_sentence_lesions(sentence, lang, fallback))
    return lesions
