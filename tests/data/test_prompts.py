"""Prompt builders: visual blocks, chat format, answer-only labels, region targets."""

from __future__ import annotations

import unicodedata
from dataclasses import replace

import numpy as np
import pytest
from jinja2.exceptions import TemplateError

from tests.reports.factories import PHYSIOLOGY, example_lesions
from tests.reports.test_render import match_all, sentences
from vipet.data.prompts import (
    IGNORE_INDEX,
    SYSTEM_PROMPTS,
    build_example,
    build_inference,
    merge_region_texts,
    n_image_tokens,
    question_prompt,
    region_report_text,
    report_prompt,
    target_text,
    visual_block,
    whole_report_text,
)
from vipet.data.tokenizer import END_TOKEN, IMAGE_TOKEN, ROLE_TOKENS, region_token
from vipet.errors import InputError
from vipet.reports.render import render_region_findings, render_report, report_text
from vipet.reports.schema import FINDINGS_KEY, REGIONS, SECTIONS, Lesion


def _report(lang: str) -> dict:
    lesions = [
        Lesion.at(0, "lymph_node", "cervical", "left", size_mm=12, short_mm=8, suvmax=8.14,
                  fdg_avid=True, level="IV"),
        Lesion.at(1, "nodule", "lung_upper", "right", size_mm=14.6, short_mm=None, suvmax=5.2,
                  fdg_avid=True),
        Lesion.at(2, "hypermetabolism", "spine", "none", size_mm=12, short_mm=None, suvmax=7.3,
                  fdg_avid=True, level="T8"),
    ]  # fmt: skip
    return render_report(lesions, lang, np.random.default_rng(3))


def test_visual_block_region_and_whole() -> None:
    assert visual_block("chest", 2) == "<region:chest><ct><pet><image><image>"
    whole = visual_block(None, 2)
    assert whole == "<region:whole>" + "".join(visual_block(r, 2) for r in REGIONS)
    assert visual_block("whole", 2) == whole
    assert whole.count(IMAGE_TOKEN) == n_image_tokens(None, 2) == 6
    assert n_image_tokens("head_neck", 2) == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_visual_block_rejects_bad_counts(bad) -> None:
    with pytest.raises(ValueError, match="n_visual"):
        visual_block("chest", bad)


def test_unknown_region_and_language_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown region"):
        report_prompt("vi", "legs", 1)
    with pytest.raises(ValueError, match="unknown language"):
        report_prompt("fr", "chest", 1)


@pytest.mark.parametrize(
    ("lang", "region", "instruction"),
    [
        ("vi", "chest", "Hãy viết báo cáo PET/CT cho vùng lồng ngực."),
        ("vi", None, "Hãy viết báo cáo PET/CT toàn thân."),
        ("en", "abdomen_pelvis", "Write the PET/CT report for the abdomen and pelvis."),
        ("en", None, "Write the whole-body PET/CT report."),
    ],
)
def test_report_prompt(lang: str, region: str | None, instruction: str) -> None:
    messages = report_prompt(lang, region, 3)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == SYSTEM_PROMPTS[lang]
    assert messages[1]["content"] == f"{visual_block(region, 3)}\n{instruction}"


def test_chat_template_renders_roles(tokenizer) -> None:
    messages = report_prompt("vi", "chest", 2)
    text = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": "Trả lời."}], tokenize=False
    )
    system, user, assistant = (ROLE_TOKENS[r] for r in ("system", "user", "assistant"))
    assert text == (
        f"<s>{system}\n{SYSTEM_PROMPTS['vi']}{END_TOKEN}\n"
        f"{user}\n{messages[1]['content']}{END_TOKEN}\n{assistant}\nTrả lời.{END_TOKEN}"
    )
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith(f"{END_TOKEN}\n{assistant}\n") and text.startswith(prompt)
    with pytest.raises(TemplateError, match="unknown chat role"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


@pytest.mark.parametrize("answer", ["Có", "SUVmax: 8,1", _report("vi")["Nhận định kết quả"]])
def test_labels_mask_all_but_the_answer(tokenizer, answer: str) -> None:
    messages = question_prompt("vi", "Có hạch cổ không?", 4, region="head_neck")
    example = build_example(tokenizer, messages, answer)
    ids, labels = example["input_ids"], example["labels"]
    assert len(ids) == len(labels) == len(example["attention_mask"])
    kept = [t for t, y in zip(ids, labels, strict=True) if y != IGNORE_INDEX]
    assert tokenizer.decode(kept) == answer + END_TOKEN
    assert kept == ids[-len(kept) :]  # the answer is one span at the end
    assert ids.count(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)) == 4
    inference = build_inference(tokenizer, messages)
    n = len(inference["input_ids"])
    assert ids[:n] == inference["input_ids"] and inference["attention_mask"] == [1] * n
    assert set(labels[:n]) == {IGNORE_INDEX} and IGNORE_INDEX not in labels[n:]


def test_whole_report_example_round_trips(tokenizer) -> None:
    report = _report("en")
    messages = report_prompt("en", None, 2)
    example = build_example(tokenizer, messages, whole_report_text(report))
    text = tokenizer.decode(example["input_ids"])
    assert text.endswith(report_text(report) + END_TOKEN)
    inference = build_inference(tokenizer, messages)["input_ids"]
    assert example["input_ids"][: len(inference)] == inference


def test_max_length_cuts_the_answer_not_the_prompt(tokenizer) -> None:
    messages = report_prompt("vi", "chest", 2)
    n_prompt = len(build_inference(tokenizer, messages)["input_ids"])
    example = build_example(tokenizer, messages, "Không thấy bất thường.", max_length=n_prompt + 2)
    assert len(example["input_ids"]) == n_prompt + 2
    assert sum(y != IGNORE_INDEX for y in example["labels"]) == 2
    with pytest.raises(ValueError, match="prompt alone"):
        build_example(tokenizer, messages, "x", max_length=n_prompt)


def test_prompt_must_end_with_a_user_turn(tokenizer) -> None:
    messages = [*report_prompt("en", "chest", 1), {"role": "assistant", "content": "x"}]
    with pytest.raises(ValueError, match="end with a user"):
        build_inference(tokenizer, messages)


def test_multi_turn_has_one_visual_block(tokenizer) -> None:
    history = [("Is there a lymph node in the neck?", "Yes"), ("What is its SUVmax?", "8.1")]
    messages = question_prompt("en", "How large is it?", 3, region=None, history=history)
    assert [m["role"] for m in messages] == [
        "system", "user", "assistant", "user", "assistant", "user"
    ]  # fmt: skip
    assert messages[1]["content"] == f"{visual_block(None, 3)}\n{history[0][0]}"
    assert [m["content"] for m in messages[2:]] == ["Yes", history[1][0], "8.1", "How large is it?"]
    example = build_example(tokenizer, messages, "12 mm")
    ids = example["input_ids"]
    assert ids.count(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)) == n_image_tokens(None, 3)
    assert ids.count(tokenizer.convert_tokens_to_ids(region_token("whole"))) == 1
    kept = [t for t, y in zip(ids, example["labels"], strict=True) if y != IGNORE_INDEX]
    assert tokenizer.decode(kept) == "12 mm" + END_TOKEN  # earlier answers are context only
    learned = build_example(tokenizer, messages, "12 mm", learn_history=True)
    assert learned["input_ids"] == ids
    kept = [t for t, y in zip(ids, learned["labels"], strict=True) if y != IGNORE_INDEX]
    assert tokenizer.decode(kept) == "".join(a + END_TOKEN for a in ("Yes", "8.1", "12 mm"))
    # each learned turn is labelled where a one-turn example of it would be
    first = build_example(tokenizer, messages[:2], "Yes")
    n = len(first["labels"])
    assert learned["labels"][:n] == first["labels"]


@pytest.mark.parametrize(
    ("lang", "region", "heading"),
    [
        ("vi", "head_neck", "Đầu - cổ"),
        ("vi", "chest", "Lồng ngực"),
        ("vi", "abdomen_pelvis", "Ổ bụng - khung chậu"),
        ("en", "head_neck", "Head and neck"),
        ("en", "chest", "Chest"),
        ("en", "abdomen_pelvis", "Abdomen and pelvis"),
    ],
)
def test_region_report_text(lang: str, region: str, heading: str) -> None:
    report = _report(lang)
    findings = next(iter(report.values()))
    text = region_report_text(report, region, lang)
    assert text == f"{heading}: {findings[heading]}"
    assert text in whole_report_text(report).split("\n")  # its line of the whole report
    assert target_text(report, region, lang) == text


def test_musculoskeletal_and_impression_go_with_the_whole_report() -> None:
    report = _report("vi")
    whole = target_text(report, None, "vi")
    assert whole == report_text(report)
    assert "Hệ cơ - xương: " in whole and "Nhận định kết quả: " in whole
    regions = "\n".join(region_report_text(report, r, "vi") for r in REGIONS)
    assert "Hệ cơ - xương" not in regions and "Nhận định" not in regions


def test_region_report_text_errors() -> None:
    with pytest.raises(InputError, match="no 'Findings'"):
        region_report_text(_report("vi"), "chest", "en")
    with pytest.raises(ValueError, match="unknown region"):
        region_report_text(_report("vi"), "whole", "vi")


# ---- merging region outputs ---------------------------------------------------------------


def test_merge_region_texts_gathers_each_section_in_region_order() -> None:
    texts = {  # insertion order does not matter: regions merge head to foot
        "abdomen_pelvis": "Abdomen and pelvis: Liver lesion A.\nMusculoskeletal: Vertebra B.",
        "chest": "Chest: Nodule C.\nAbdomen and pelvis: Dome lesion D.\nMusculoskeletal: Rib E.",
        "head_neck": "Head and neck: Node F.",
    }
    assert merge_region_texts(texts, "en") == (
        "Findings:\n"
        "Head and neck: Node F.\n"
        "Chest: Nodule C.\n"
        "Abdomen and pelvis: Dome lesion D. Liver lesion A.\n"
        "Musculoskeletal: Rib E. Vertebra B."
    )


def test_merge_region_texts_continues_lines_without_a_heading() -> None:
    # a line whose text before ":" is no heading continues the heading before it — the
    # region's own at first; empty lines, empty sections and missing regions give nothing
    chest = (
        "Nodule (SUVmax: 5.2).\n\nChest: SUVmax: 8.1 in a node.\nMusculoskeletal: Rib.\n"
        "Another rib.\nHead and neck:"
    )
    assert merge_region_texts({"chest": chest}, "en") == (
        "Findings:\n"
        "Chest: Nodule (SUVmax: 5.2). SUVmax: 8.1 in a node.\n"
        "Musculoskeletal: Rib. Another rib."
    )
    assert merge_region_texts({}, "vi") == "Mô tả hình ảnh:"


def test_merge_region_texts_normalises_vietnamese() -> None:
    nfd = unicodedata.normalize("NFD", "Lồng ngực: Nốt mờ thùy trên phổi phải.")
    merged = merge_region_texts({"chest": nfd}, "vi")
    assert merged == "Mô tả hình ảnh:\nLồng ngực: Nốt mờ thùy trên phổi phải."
    assert merged == unicodedata.normalize("NFC", merged)
    with pytest.raises(ValueError, match="unknown language"):
        merge_region_texts({"chest": "Chest: x."}, "fr")


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_rendered_regions_merge_into_one_findings_report(lang: str) -> None:
    by_id = {lesion.id: lesion for lesion in example_lesions()}
    # the region whose volume each lesion is seen in: the liver dome and a rib in the chest
    filed = {0: "head_neck", 1: "chest", 2: "chest", 3: "chest", 4: "chest", 5: "abdomen_pelvis",
             6: "chest", 7: "chest"}  # fmt: skip
    lesions = [replace(by_id[i], region=r) for i, r in filed.items()]
    rng = np.random.default_rng(0)
    texts = {
        r: render_region_findings([x for x in lesions if x.region == r], r, lang, rng, PHYSIOLOGY)
        for r in REGIONS
    }
    lines = merge_region_texts(texts, lang).splitlines()
    assert lines[0] == f"{FINDINGS_KEY[lang]}:"
    body = dict(line.split(": ", 1) for line in lines[1:])
    headings = [vi if lang == "vi" else en for _, vi, en in SECTIONS]
    assert list(body) == headings  # every section once, in report order
    for (key, _, _), head in zip(SECTIONS, headings, strict=True):
        match_all([x for x in lesions if x.section == key], sentences(body[head]), lang)
