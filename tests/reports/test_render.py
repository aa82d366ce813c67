"""Reports from findings: every lesion is reported, wording varies with the seed only."""

from __future__ import annotations

import math
import re
import unicodedata

import numpy as np
import pytest

from tests.reports.factories import PHYSIOLOGY, example_lesions, random_lesions
from vipet.reports import phrases
from vipet.reports.render import (
    render_finding,
    render_region_findings,
    render_report,
    report_text,
)
from vipet.reports.schema import (
    FINDINGS_KEY,
    FINE_LOCATIONS,
    IMPRESSION_KEY,
    LATERALITIES,
    LESION_TYPE_NAMES,
    LESION_TYPES,
    SECTIONS,
    Lesion,
)
from vipet.reports.vocab import _EN_NOUNS, _VI_NOUNS, location_phrase

LANGS = ("vi", "en")


def heading(key: str, lang: str) -> str:
    return next(vi if lang == "vi" else en for k, vi, en in SECTIONS if k == key)


def expected_size(lesion: Lesion) -> str:
    """Whole millimetres, half up, written independently of the renderer."""
    dims = [d for d in (lesion.size_mm, lesion.short_mm) if d is not None]
    return " x ".join(str(max(1, math.floor(d + 0.5))) for d in dims) + " mm"


def expected_suv(value: float, lang: str) -> str:
    text = f"{value:.1f}"
    return text.replace(".", ",") if lang == "vi" else text


def sentences(text: str) -> list[str]:
    """Split on ". " followed by a capital letter (decimal points never are)."""
    out, start = [], 0
    for m in re.finditer(r"\. ", text):
        if m.end() < len(text) and text[m.end()].isupper():
            out.append(text[start : m.start() + 1])
            start = m.end()
    out.append(text[start:])
    return [s for s in out if s]


def is_avid_wording(sentence: str, lesion: Lesion, lang: str) -> bool:
    if lang == "vi":
        return "không" not in sentence.lower() and "chuyển hóa FDG" in sentence
    negated = re.search(r"\b(no|not|without|non)\b", sentence, flags=re.IGNORECASE)
    return negated is None and ("FDG" in sentence or "hypermetabolic" in sentence.lower())


def is_non_avid_wording(sentence: str, lang: str) -> bool:
    if lang == "vi":
        return "không tăng chuyển hóa FDG" in sentence or "không thấy tăng chuyển hóa" in sentence
    lowered = sentence.lower()
    return "no increased fdg uptake" in lowered or "no significant fdg uptake" in lowered


def names_place(text: str, lesion: Lesion, lang: str) -> bool:
    """``text`` holds the lesion's place words (capitalised when they open a sentence)."""
    words = location_phrase(lesion, lang)
    return words in text or words[:1].upper() + words[1:] in text


def finding_matches(sentence: str, lesion: Lesion, lang: str) -> bool:
    """``sentence`` reports ``lesion``: place, size, SUVmax and the right avidity words."""
    if not names_place(sentence, lesion, lang):
        return False
    if lesion.size_mm is not None and expected_size(lesion) not in sentence:
        return False
    if lesion.suvmax is not None and expected_suv(lesion.suvmax, lang) not in sentence:
        return False
    if lesion.fdg_avid:
        return is_avid_wording(sentence, lesion, lang)
    return is_non_avid_wording(sentence, lang)


def match_all(lesions: list[Lesion], candidates: list[str], lang: str) -> dict[int, int]:
    """A sentence per lesion, no sentence used twice (bipartite matching, Kuhn)."""
    edges = [[j for j, s in enumerate(candidates) if finding_matches(s, x, lang)] for x in lesions]
    owner: dict[int, int] = {}

    def claim(i: int, seen: set[int]) -> bool:
        for j in edges[i]:
            if j not in seen:
                seen.add(j)
                if j not in owner or claim(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    for i in range(len(lesions)):
        assert claim(i, set()), f"lesion {lesions[i]} not reported ({lang}): {candidates}"
    return {i: j for j, i in owner.items()}


def assert_all_reported(lesions: list[Lesion], report: dict, lang: str) -> None:
    findings = report[FINDINGS_KEY[lang]]
    for key, _, _ in SECTIONS:
        members = [x for x in lesions if x.section == key]
        match_all(members, sentences(findings[heading(key, lang)]), lang)


@pytest.mark.parametrize("lang", LANGS)
def test_example_report_structure_and_content(lang: str) -> None:
    lesions = example_lesions()
    report = render_report(lesions, lang, np.random.default_rng(0), PHYSIOLOGY)
    assert list(report) == [FINDINGS_KEY[lang], IMPRESSION_KEY[lang]]
    assert list(report[FINDINGS_KEY[lang]]) == [heading(k, lang) for k, _, _ in SECTIONS]
    assert all(text.strip() for text in report[FINDINGS_KEY[lang]].values())
    assert report[IMPRESSION_KEY[lang]].strip()
    assert_all_reported(lesions, report, lang)
    # every lesion is listed in the impression too
    for lesion in lesions:
        assert names_place(report[IMPRESSION_KEY[lang]], lesion, lang)
    text = report_text(report)
    assert text == unicodedata.normalize("NFC", text)
    for _, vi, en in SECTIONS:
        assert f"{vi if lang == 'vi' else en}: " in text
    assert FINDINGS_KEY[lang] in text and IMPRESSION_KEY[lang] in text


def test_location_words_as_in_real_reports() -> None:
    by_id = {lesion.id: lesion for lesion in example_lesions()}
    assert location_phrase(by_id[0], "vi") == "cổ trái nhóm IV"
    assert location_phrase(by_id[0], "en") == "left level IV cervical"
    assert location_phrase(by_id[1], "vi") == "thùy trên phổi phải"
    assert location_phrase(by_id[1], "en") == "right upper lobe of the lung"
    assert location_phrase(by_id[5], "vi") == "đốt sống T8"
    assert location_phrase(by_id[6], "vi") == "xương sườn 5 phải"
    assert location_phrase(by_id[6], "en") == "right 5th rib"
    rng = np.random.default_rng(3)
    vi = {render_finding(by_id[3], "vi", rng) for _ in range(10)}
    assert all("tràn dịch màng phổi trái" in s for s in vi)
    en = {render_finding(by_id[3], "en", rng) for _ in range(10)}
    assert all("left pleural effusion" in s.lower() for s in en)
    liver = {render_finding(by_id[4], "vi", rng) for _ in range(10)}
    assert all("khối giảm tỷ trọng ở hạ phân thùy VII gan" in s for s in liver)


@pytest.mark.parametrize("lang", LANGS)
def test_suv_decimal_separator(lang: str) -> None:
    report = report_text(
        render_report(example_lesions(), lang, np.random.default_rng(1), PHYSIOLOGY)
    )
    assert "8,1" in report if lang == "vi" else "8.1" in report
    if lang == "vi":
        assert re.search(r"\d\.\d", report) is None, "Vietnamese uses a comma decimal"
    else:
        assert re.search(r"\d,\d", report) is None


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("lang", LANGS)
def test_random_findings_are_all_reported(seed: int, lang: str) -> None:
    rng = np.random.default_rng(1000 + seed)
    lesions = random_lesions(rng, int(rng.integers(1, 12)))
    physiology = PHYSIOLOGY if seed % 2 else None
    report = render_report(lesions, lang, np.random.default_rng(seed), physiology)
    assert_all_reported(lesions, report, lang)
    text = report_text(report)
    assert text == unicodedata.normalize("NFC", text)


@pytest.mark.parametrize("lang", LANGS)
def test_mild_uptake_wording(lang: str) -> None:
    lesion = Lesion.at(0, "lymph_node", "axillary", "left", size_mm=9, short_mm=None,
                       suvmax=2.6, fdg_avid=True)  # fmt: skip
    rng = np.random.default_rng(0)
    word = "tăng nhẹ chuyển hóa FDG" if lang == "vi" else "mildly increased FDG uptake"
    assert all(word.lower() in render_finding(lesion, lang, rng).lower() for _ in range(10))


@pytest.mark.parametrize("lang", LANGS)
def test_same_seed_same_report_and_seeds_vary_wording(lang: str) -> None:
    lesions = example_lesions()

    def text(seed: int) -> str:
        return report_text(render_report(lesions, lang, np.random.default_rng(seed), PHYSIOLOGY))

    assert text(7) == text(7)
    assert len({text(seed) for seed in range(20)}) >= 10


@pytest.mark.parametrize("lang", LANGS)
def test_normal_study_reads_normal(lang: str) -> None:
    for seed in range(8):
        physiology = PHYSIOLOGY if seed % 2 else None
        report = render_report([], lang, np.random.default_rng(seed), physiology)
        impression = report[IMPRESSION_KEY[lang]]
        if lang == "vi":
            assert "tăng chuyển hóa FDG bất thường" in impression
            assert re.search(r"\b(không|chưa)\b", impression, flags=re.IGNORECASE)
        else:
            assert re.fullmatch(r"(.*\b)?no\b.*abnormal FDG uptake.*", impression, re.IGNORECASE)
        for section in report[FINDINGS_KEY[lang]].values():
            for sentence in sentences(section):
                negative = re.search(
                    r"\b(không|chưa)\b" if lang == "vi" else r"\bno\b", sentence, re.IGNORECASE
                )
                physiological = "sinh lý" in sentence or "hysiological" in sentence
                assert negative or physiological or "SUVmean" in sentence, sentence


def test_physiology_sentences() -> None:
    vi = [render_report([], "vi", np.random.default_rng(s), PHYSIOLOGY) for s in range(10)]
    head_neck = " ".join(r[FINDINGS_KEY["vi"]]["Đầu - cổ"] for r in vi)
    assert "não" in head_neck and "sinh lý" in head_neck
    quiet_heart = {**PHYSIOLOGY, "myocardium": 2.0}
    for seed in range(10):
        chest = render_report([], "vi", np.random.default_rng(seed), quiet_heart)
        assert "tim" not in chest[FINDINGS_KEY["vi"]]["Lồng ngực"]
    en = [render_report([], "en", np.random.default_rng(s), PHYSIOLOGY) for s in range(10)]
    abdomen = " ".join(r[FINDINGS_KEY["en"]]["Abdomen and pelvis"] for r in en)
    assert "liver" in abdomen and "hysiological" in abdomen


@pytest.mark.parametrize("lesion_type", LESION_TYPES)
def test_render_finding_accepts_every_type_and_location(lesion_type: str) -> None:
    rng = np.random.default_rng(0)
    for detail in FINE_LOCATIONS:
        for laterality in LATERALITIES:
            lesion = Lesion.at(0, lesion_type, detail, laterality, size_mm=None, short_mm=None,
                               suvmax=None, fdg_avid=laterality == "left")  # fmt: skip
            for lang in LANGS:
                sentence = render_finding(lesion, lang, rng)
                assert names_place(sentence, lesion, lang)
                assert sentence.endswith(".") and sentence[0].isupper()
                assert "  " not in sentence and "None" not in sentence


def test_free_text_location_and_unknown_section() -> None:
    lesion = Lesion(id=0, type="nodule", location="lung", location_detail="đỉnh phổi",
                    laterality="right", size_mm=8, short_mm=None, suvmax=None, fdg_avid=False,
                    region="chest", section="lung apex")  # fmt: skip
    report = render_report([lesion], "vi", np.random.default_rng(0))
    assert "đỉnh phổi phải" in report[FINDINGS_KEY["vi"]]["Lồng ngực"]
    assert "8 mm" in report[FINDINGS_KEY["vi"]]["Lồng ngực"]


def test_bad_language() -> None:
    with pytest.raises(ValueError, match="unknown language"):
        render_report([], "fr", np.random.default_rng(0))


def test_template_counts() -> None:
    for lang in LANGS:
        assert len(phrases.PHYSIOLOGY_TEMPLATES[lang]) >= 3
        assert len(phrases.NORMAL_IMPRESSIONS[lang]) >= 3
        assert len(phrases.NO_AVID_IMPRESSIONS[lang]) >= 3
        assert all(len(v) >= 3 for v in phrases.NEGATIVES[lang].values())
        assert all(len(v) >= 3 for v in phrases.SUB_NEGATIVES[lang].values())
        assert all(len(v) >= 3 for v in phrases.IMPRESSION_LINES[lang].values())
    # the first noun of each type is its canonical name
    for lesion_type in LESION_TYPES:
        assert _VI_NOUNS[lesion_type][0] == LESION_TYPE_NAMES["vi"][lesion_type]
        assert _EN_NOUNS[lesion_type][0] == LESION_TYPE_NAMES["en"][lesion_type]


# ---- one region's findings ----------------------------------------------------------------


def region_lines(text: str) -> dict[str, str]:
    """``{heading: text}`` of `render_region_findings` output, in line order."""
    return dict(line.split(": ", 1) for line in text.splitlines())


@pytest.mark.parametrize("lang", LANGS)
def test_region_findings_own_section_then_other_sections_in_report_order(lang: str) -> None:
    by_id = {lesion.id: lesion for lesion in example_lesions()}
    # what a chest volume shows: a lung nodule and an axillary node (chest section), the
    # liver dome (abdomen), a rib and a vertebra (musculoskeletal) — in a scrambled order
    seen = [by_id[6], by_id[4], by_id[7], by_id[5], by_id[1]]
    for seed in range(4):
        text = render_region_findings(seen, "chest", lang, np.random.default_rng(seed))
        lines = region_lines(text)
        keys = ("chest", "abdomen_pelvis", "musculoskeletal")
        assert list(lines) == [heading(k, lang) for k in keys]
        # sentences keep the given order, in the region's own section (findings, then
        # negatives when there is no physiology) and in the others (findings only)
        own = sentences(lines[heading("chest", lang)])
        assert finding_matches(own[0], by_id[7], lang) and finding_matches(own[1], by_id[1], lang)
        assert match_all([by_id[4]], sentences(lines[heading("abdomen_pelvis", lang)]), lang)
        bones = sentences(lines[heading("musculoskeletal", lang)])
        assert len(bones) == 2
        assert finding_matches(bones[0], by_id[6], lang)
        assert finding_matches(bones[1], by_id[5], lang)
        assert text == unicodedata.normalize("NFC", text)


@pytest.mark.parametrize("lang", LANGS)
def test_region_findings_without_lesions_read_normal(lang: str) -> None:
    for seed in range(6):
        physiology = PHYSIOLOGY if seed % 2 else None
        text = render_region_findings(
            [], "head_neck", lang, np.random.default_rng(seed), physiology
        )
        lines = region_lines(text)
        assert list(lines) == [heading("head_neck", lang)]  # never another section's line
        for sentence in sentences(lines[heading("head_neck", lang)]):
            negative = re.search(r"\b(không|chưa)\b" if lang == "vi" else r"\bno\b", sentence, re.I)
            physiological = "sinh lý" in sentence or "hysiological" in sentence
            assert negative or physiological or "SUVmean" in sentence, sentence


def test_region_findings_own_section_has_physiology_and_negatives() -> None:
    by_id = {lesion.id: lesion for lesion in example_lesions()}
    # a head-neck volume that shows a chest-section lesion only: its own line reads normal
    texts = [
        render_region_findings([by_id[2]], "head_neck", "vi", np.random.default_rng(s), PHYSIOLOGY)
        for s in range(10)
    ]
    for text in texts:
        lines = region_lines(text)
        assert list(lines) == ["Đầu - cổ", "Lồng ngực"]
        assert match_all([by_id[2]], sentences(lines["Lồng ngực"]), "vi")
        assert "sinh lý" not in lines["Lồng ngực"]  # physiology is the own section's only
    assert any("não" in region_lines(t)["Đầu - cổ"] for t in texts)


@pytest.mark.parametrize("lang", LANGS)
def test_region_findings_are_fixed_by_the_seed(lang: str) -> None:
    seen = example_lesions()[1:4]

    def text(seed: int) -> str:
        return render_region_findings(seen, "chest", lang, np.random.default_rng(seed), PHYSIOLOGY)

    assert text(3) == text(3)
    assert len({text(seed) for seed in range(10)}) >= 5


def test_region_findings_refuse_a_non_region_and_a_bad_language() -> None:
    rng = np.random.default_rng(0)
    for region in ("musculoskeletal", "whole", "liver"):
        with pytest.raises(ValueError, match="no report section"):
            render_region_findings([], region, "en", rng)
    with pytest.raises(ValueError, match="unknown language"):
        render_region_findings([], "chest", "fr", rng)


@pytest.mark.parametrize("lang", LANGS)
def test_region_findings_marker_opens_each_lesion_sentence_only(lang: str) -> None:
    by_id = {lesion.id: lesion for lesion in example_lesions()}
    # seen in the chest volume: a neck node (a line before the chest's), the chest's own
    # lesions, a liver mass and two bone lesions (lines after it)
    seen = [by_id[0], by_id[6], by_id[4], by_id[7], by_id[5], by_id[1]]
    for seed in range(6):
        physiology = PHYSIOLOGY if seed % 2 else None
        args = (seen, "chest", lang)
        plain = render_region_findings(*args, np.random.default_rng(seed), physiology)
        marked = render_region_findings(
            *args, np.random.default_rng(seed), physiology, marker="<finding>"
        )
        assert marked.count("<finding>") == len(seen)
        assert marked.replace("<finding>", "") == plain  # it takes no place in the text
        own = heading("chest", lang)
        lines = marked.split("\n")
        for i, line in enumerate(lines):
            # another section's line is led by its first lesion's marker, at the end
            # of the line before it (or at the start): the slot comes before the heading
            led = lines[i - 1].endswith("<finding>") if i else line.startswith("<finding>")
            line = line.removeprefix("<finding>") if i == 0 else line
            line = line.removesuffix("<finding>") if i + 1 < len(lines) else line
            title, _, body = line.partition(":")
            assert led == (title != own), line
            parts = body.split("<finding>")
            for part in parts if led else parts[1:]:  # each marker opens a lesion sentence
                first = part.strip().split(". ")[0]
                assert any(finding_matches(first, les, lang) for les in seen), first
