"""Reports from findings, in Vietnamese and English (DOMAIN.md §3 style).

`render_report` turns a list of `Lesion`s (ground truth, or later a model's predicted
findings) into the ViMed-PET JSON structure: four findings sections and an impression.
Every choice of wording comes from the caller's generator, so a seed fixes the report,
while different seeds phrase the same findings differently (templates, synonyms, order,
optional clauses): no model can score by memorising one string. What never varies is the
content: every lesion appears in its section with its place words, size and SUVmax.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from vipet.reports.phrases import (
    IMPRESSION_LINES,
    NEGATIVES,
    NO_AVID_IMPRESSIONS,
    NORMAL_IMPRESSIONS,
    ORGAN_WORDS,
    PHYSIOLOGY_GROUPS,
    PHYSIOLOGY_REFERENCES,
    PHYSIOLOGY_TEMPLATES,
    SUB_NEGATIVES,
    descriptor,
    interpretation,
)
from vipet.reports.schema import FINDINGS_KEY, IMPRESSION_KEY, SECTIONS, Lesion
from vipet.reports.vocab import (
    article,
    capitalize,
    chance,
    check_lang,
    fmt_suv,
    join_list,
    lesion_phrase,
    nfc,
    pick,
    section_of,
    size_text,
)

# Myocardial uptake is mentioned only when it is notable (it varies 1.5–10 with diet).
MYOCARDIUM_NOTABLE_SUV = 3.0
# Below this SUVmax an avid finding reads "tăng nhẹ" / "mildly increased".
MILD_SUV = 4.0
_INTENSE_SUV = 10.0


# ---- one finding ----------------------------------------------------------------------


def _category(lesion: Lesion) -> str:
    if not lesion.fdg_avid:
        return "benign"
    if lesion.suvmax is not None and lesion.suvmax < MILD_SUV:
        return "inflammatory"
    return "malignant"


def _uptake(lesion: Lesion, lang: str, rng: np.random.Generator) -> str:
    """The FDG clause: "tăng chuyển hóa FDG (SUVmax: 8,1)" / "increased FDG uptake
    (SUVmax 8.1)"; "" for an avid hypermetabolic focus of unknown SUV (its name says it)."""
    vi = lang == "vi"
    suv = lesion.suvmax
    if not lesion.fdg_avid:
        core = pick(
            rng,
            ("không tăng chuyển hóa FDG", "không thấy tăng chuyển hóa FDG")
            if vi
            else ("no increased FDG uptake", "no significant FDG uptake"),
        )
    elif lesion.type == "hypermetabolism":
        core = ""
    elif suv is not None and suv < MILD_SUV:
        core = "tăng nhẹ chuyển hóa FDG" if vi else "mildly increased FDG uptake"
    elif suv is not None and suv >= _INTENSE_SUV and chance(rng, 0.4):
        core = "tăng chuyển hóa FDG mạnh" if vi else "intense FDG uptake"
    else:
        core = "tăng chuyển hóa FDG" if vi else "increased FDG uptake"
    if suv is None:
        return core
    value = fmt_suv(suv, lang)
    if not core:
        return f"SUVmax: {value}" if vi else f"an SUVmax of {value}"
    sep = pick(rng, (": ", ": ", ": ", " = ", " ") if vi else (" ", " ", ": ", " = "))
    return f"{core} (SUVmax{sep}{value})"


def _interpretation(lesion: Lesion, lang: str, rng: np.random.Generator) -> str:
    if not chance(rng, 0.6):
        return ""
    text = interpretation(lang, _category(lesion), lesion.type, rng)
    joiner = pick(rng, (" — ", ", ", "; ") if lang == "vi" else (", ", " — ", "; "))
    return joiner + text


def _descriptor(lesion: Lesion, lang: str, rng: np.random.Generator) -> str:
    if not chance(rng, 0.3):
        return ""
    return descriptor(lang, _category(lesion), lesion.type, rng)


def _vi_finding(lesion: Lesion, rng: np.random.Generator) -> str:
    phrase = lesion_phrase(lesion, "vi", rng)
    uptake = _uptake(lesion, "vi", rng)
    size = size_text(lesion)
    desc = _descriptor(lesion, "vi", rng)
    sized = ""
    if size is not None:
        words = ("kích thước", "kích thước khoảng")
        if " x " not in size:
            words += ("đường kính", "đường kính khoảng")
        sized = f"{pick(rng, words)} {size}"
    templates = ["list", "uptake_first", "paren"]
    if lesion.fdg_avid and lesion.type != "hypermetabolism":
        templates.append("noun_first")
    template = pick(rng, templates)
    if template == "list":  # Hình ảnh hạch …, kích thước …, tăng chuyển hóa FDG (…)
        parts = [f"Hình ảnh {phrase}", desc, sized, uptake]
    elif template == "uptake_first":  # Hình ảnh nốt mờ … tăng chuyển hóa FDG (…), đường kính …
        parts = [" ".join(p for p in (f"Hình ảnh {phrase}", uptake) if p), desc, sized]
    elif template == "paren":  # Hình ảnh hạch … ( 12 mm) tăng chuyển hóa FDG (…)
        paren = f"( {size})" if size is not None else ""
        bare = lesion.type == "hypermetabolism" and lesion.fdg_avid  # uptake is "SUVmax: …"
        head = " ".join(p for p in (f"Hình ảnh {phrase}", paren, "" if bare else uptake) if p)
        parts = [head, uptake if bare else "", desc]
    else:  # Hình ảnh tăng chuyển hóa FDG (…) tại hạch …, kích thước …
        parts = [f"Hình ảnh {uptake} tại {phrase}", desc, sized]
    return ", ".join(p for p in parts if p) + _interpretation(lesion, "vi", rng) + "."


def _en_finding(lesion: Lesion, rng: np.random.Generator) -> str:
    phrase = lesion_phrase(lesion, "en", rng)
    uptake = _uptake(lesion, "en", rng)
    size = size_text(lesion)
    desc = _descriptor(lesion, "en", rng)
    with_clause = " and ".join(p for p in (uptake, desc) if p)
    with_clause = f" with {with_clause}" if with_clause else ""
    sized = f"{size} {phrase}" if size is not None else phrase
    templates = ["article", "measuring", "there_is"]
    if uptake and lesion.type != "hypermetabolism":
        templates.append("uptake_first")
    template = pick(rng, templates)
    if template == "article":  # A 12 x 8 mm left cervical lymph node with increased …
        text = f"{capitalize(article(sized))} {sized}{with_clause}"
    elif template == "measuring":  # Left cervical lymph node measuring 12 mm, with …
        text = capitalize(phrase) + (f" measuring {size}" if size is not None else "")
        text += f",{with_clause}" if with_clause else ""
    elif template == "there_is":  # There is a left cervical lymph node (12 mm) with …
        paren = f" ({size})" if size is not None else ""
        text = f"There is {article(phrase)} {phrase}{paren}{with_clause}"
    else:  # Increased FDG uptake (SUVmax 8.1) in a 12 mm left cervical lymph node
        text = f"{capitalize(uptake)} in {article(sized)} {sized}"
        text += f" with {desc}" if desc else ""
    return text + _interpretation(lesion, "en", rng) + "."


def render_finding(lesion: Lesion, lang: str, rng: np.random.Generator) -> str:
    """One report sentence for ``lesion``: type, size, FDG uptake, place, sometimes an
    interpretation ("Hình ảnh hạch cổ trái nhóm IV, kích thước 12 x 8 mm, tăng chuyển hóa
    FDG (SUVmax: 8,1) — theo dõi tổn thương thứ phát.")."""
    check_lang(lang)
    text = _vi_finding(lesion, rng) if lang == "vi" else _en_finding(lesion, rng)
    return nfc(text)


# ---- physiology and negatives ---------------------------------------------------------


def _physiology(
    section: str, lang: str, rng: np.random.Generator, physiology: Mapping[str, float]
) -> list[str]:
    """Physiological-uptake sentences of one section; each group is sometimes left out."""
    sentences = []
    for group_section, organs in PHYSIOLOGY_GROUPS:
        if group_section != section:
            continue
        names: list[str] = []
        for organ in organs:
            value = physiology.get(organ)
            if value is None or (organ == "myocardium" and value <= MYOCARDIUM_NOTABLE_SUV):
                continue
            names.extend(pick(rng, ORGAN_WORDS[lang][organ]))
        if names and chance(rng, 0.85):
            template = pick(rng, PHYSIOLOGY_TEMPLATES[lang])
            sentences.append(capitalize(template.format(o=join_list(names, lang))))
    for organ, (ref_section, templates) in PHYSIOLOGY_REFERENCES[lang].items():
        value = physiology.get(organ)
        if ref_section == section and value is not None and chance(rng, 0.25):
            sentences.append(pick(rng, templates).format(v=fmt_suv(value, lang)))
    return sentences


def _negatives(
    section: str, lesions: Sequence[Lesion], lang: str, rng: np.random.Generator
) -> list[str]:
    if not lesions:
        return [pick(rng, NEGATIVES[lang][section])]
    classes = {lesion.location for lesion in lesions}
    sentences = []
    for (sub_section, location), templates in SUB_NEGATIVES[lang].items():
        if sub_section == section and location not in classes and chance(rng, 0.4):
            sentences.append(pick(rng, templates))
    return sentences


def _section_text(
    section: str,
    lesions: Sequence[Lesion],
    lang: str,
    rng: np.random.Generator,
    physiology: Mapping[str, float] | None,
) -> str:
    findings = [render_finding(lesions[i], lang, rng) for i in rng.permutation(len(lesions))]
    body = findings + _negatives(section, lesions, lang, rng)
    physio = _physiology(section, lang, rng, physiology) if physiology else []
    sentences = physio + body if chance(rng, 0.5) else body + physio
    return " ".join(sentences)


def render_region_findings(
    lesions: Sequence[Lesion],
    region: str,
    lang: str,
    rng: np.random.Generator,
    physiology: Mapping[str, float] | None = None,
    marker: str = "",
) -> str:
    """What one body region's volume shows, as report lines ``"<heading>: <text>"``.

    ``lesions`` are the lesions seen in that volume (those the region files), in the
    order to describe them; every sentence keeps that order. The region's own section
    comes with its physiological uptake and negatives, as in a whole report; a lesion
    that belongs to another section — a liver lesion at the dome seen in the chest
    volume, a rib or vertebra (musculoskeletal) — is described under that section's
    heading, in a line of its own. Lines follow the report's section order, so the lines
    of the three regions merge into one report (`vipet.data.prompts.merge_region_texts`).

    ``marker`` (e.g. `vipet.data.tokenizer.FINDING_TOKEN`) opens each lesion's sentence,
    in place of nothing, so the text without the marker is unchanged. The first lesion
    of a section other than the region's own takes its marker *before* that section's
    line (before the newline, or at the very start): the heading is written only for
    the lesions under it, so whoever writes the text must know where the next lesion
    lies before writing the heading — a model that gets the lesion's slot at the marker
    (`ViPetConfig.slot_pointer`) then reads it there, instead of having to look ahead
    (run 14's LM, from perfect slots, wrote 21 of the test split's liver nodules seen
    in the chest volume as lung nodules under the chest heading: docs/training.md).
    """
    check_lang(lang)
    keys = [key for key, _, _ in SECTIONS]
    if region not in keys[:3]:  # musculoskeletal is a section, not a body region
        raise ValueError(f"region {region!r} has no report section; choose from {keys[:3]}")
    by_section: dict[str, list[Lesion]] = {key: [] for key in keys}
    for lesion in lesions:
        by_section[section_of(lesion)].append(lesion)
    lines = []
    for key, vi_heading, en_heading in SECTIONS:
        members = by_section[key]
        if key != region and not members:
            continue
        # (opening, sentence): a lesion's sentence opens with the marker
        sentences = [(marker, render_finding(lesion, lang, rng)) for lesion in members]
        lead = ""  # what comes before the line: another section's first marker
        if key == region:
            sentences += [("", s) for s in _negatives(key, members, lang, rng)]
            physio = _physiology(key, lang, rng, physiology) if physiology else []
            physio_pairs = [("", s) for s in physio]
            sentences = physio_pairs + sentences if chance(rng, 0.5) else sentences + physio_pairs
        else:
            lead, sentences[0] = marker, ("", sentences[0][1])
        heading = vi_heading if lang == "vi" else en_heading
        # the marker takes the place of nothing: "heading:<m> First.<m> Second. Other."
        # reads "heading: First. Second. Other." once special tokens are dropped
        body = "".join(f"{m} {s}" for m, s in sentences) if sentences else " "
        lines.append((lead, f"{heading}:{body}"))
    # "<lead>\n" between lines: "...Other.<m>\nAbdomen: Liver." reads the same once the
    # special tokens are dropped
    text = ""
    for i, (lead, line) in enumerate(lines):
        text += lead + ("\n" if i else "") + line
    return nfc(text)


# ---- impression -----------------------------------------------------------------------


def _impression_item(lesion: Lesion, lang: str, rng: np.random.Generator) -> str:
    phrase = lesion_phrase(lesion, lang)
    if lesion.suvmax is not None and lesion.fdg_avid and chance(rng, 0.3):
        phrase += f" (SUVmax{': ' if lang == 'vi' else ' '}{fmt_suv(lesion.suvmax, lang)})"
    return phrase


def _impression(lesions: Sequence[Lesion], lang: str, rng: np.random.Generator) -> str:
    if not lesions:
        return pick(rng, NORMAL_IMPRESSIONS[lang])
    groups: dict[str, list[Lesion]] = {"malignant": [], "inflammatory": [], "benign": []}
    for i in rng.permutation(len(lesions)):
        groups[_category(lesions[i])].append(lesions[i])
    lines = []
    for category, members in groups.items():
        if not members:
            continue
        items = join_list([_impression_item(m, lang, rng) for m in members], lang)
        line = pick(rng, IMPRESSION_LINES[lang][category])
        lines.append(capitalize(line.format(items=items)))
    if not groups["malignant"] and not groups["inflammatory"] and chance(rng, 0.5):
        lines.append(pick(rng, NO_AVID_IMPRESSIONS[lang]))
    return " ".join(lines)


# ---- report ---------------------------------------------------------------------------


def render_report(
    lesions: Sequence[Lesion],
    lang: str,
    rng: np.random.Generator,
    physiology: Mapping[str, float] | None = None,
) -> dict:
    """A report in the ViMed-PET JSON structure:
    ``{FINDINGS_KEY[lang]: {heading: text, ...the four SECTIONS in order},
    IMPRESSION_KEY[lang]: text}``. ``physiology`` maps organs ("brain", "myocardium",
    "liver", "spleen", "kidneys", "bladder", "bowel", "blood_pool") to SUVmean."""
    check_lang(lang)
    by_section: dict[str, list[Lesion]] = {key: [] for key, _, _ in SECTIONS}
    for lesion in lesions:
        by_section[section_of(lesion)].append(lesion)
    findings = {}
    for key, vi_heading, en_heading in SECTIONS:
        heading = vi_heading if lang == "vi" else en_heading
        text = _section_text(key, by_section[key], lang, rng, physiology)
        findings[nfc(heading)] = nfc(text)
    return {
        nfc(FINDINGS_KEY[lang]): findings,
        nfc(IMPRESSION_KEY[lang]): nfc(_impression(lesions, lang, rng)),
    }


def report_text(report: Mapping) -> str:
    """A report as plain text, one heading or section per line (for NLG metrics)."""
    lines = []
    for key, value in report.items():
        if isinstance(value, Mapping):
            lines.append(f"{key}:")
            lines.extend(f"{heading}: {text}" for heading, text in value.items())
        else:
            lines.append(f"{key}: {value}")
    return nfc("\n".join(lines))
