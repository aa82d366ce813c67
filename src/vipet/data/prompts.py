"""Prompts for report generation and question answering — the same for training and
inference, in Vietnamese and English, through the tokenizer's one chat template.

A prompt is a list of chat messages: a system message, then the first user turn that
opens with the *visual block* and then the instruction or question::

    <region:chest><ct><pet><image><image>…<image>          (n_visual <image> tokens)
    Hãy viết báo cáo PET/CT cho vùng lồng ngực.

A whole-study prompt opens with `<region:whole>` followed by the three region blocks in
`REGIONS` order (3 × n_visual `<image>` tokens). The model replaces the `<image>`
embeddings with its visual tokens, in order; `n_image_tokens` says how many it must
supply. Instructions are fixed, one per language and scope: the model has to learn the
task, not to read paraphrases.

Targets (what the assistant turn must say), from a report in the ViMed-PET structure:

====================  =========================================================
prompt scope          target text
====================  =========================================================
head_neck             findings section "Đầu - cổ" / "Head and neck"
chest                 findings section "Lồng ngực" / "Chest"
abdomen_pelvis        findings section "Ổ bụng - khung chậu" / "Abdomen and pelvis"
whole study           the whole report (`report_text`): all four findings
                      sections — including "Hệ cơ - xương" / "Musculoskeletal",
                      which spans regions — and the impression
====================  =========================================================

A region target is written ``"<heading>: <text>"``, exactly its line in the whole-report
text, so region and whole outputs read (and parse) the same way.

`build_example` makes training ids with labels on the answer only; `build_inference`
makes the same ids up to the assistant marker, so a trained model sees at inference
exactly the prefix it was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from vipet.data.tokenizer import CT_TOKEN, IMAGE_TOKEN, PET_TOKEN, WHOLE, region_token
from vipet.errors import InputError
from vipet.reports.render import report_text
from vipet.reports.schema import FINDINGS_KEY, REGIONS, SECTIONS
from vipet.reports.vocab import check_lang, nfc

IGNORE_INDEX = -100  # label of a token the loss skips (torch's cross-entropy default)

SYSTEM_PROMPTS: dict[str, str] = {
    "vi": "Bạn là trợ lý chẩn đoán hình ảnh, đọc ảnh PET/CT FDG và trả lời bằng tiếng Việt.",
    "en": "You are a radiology assistant reading FDG PET/CT studies and answering in English.",
}
# One instruction per language and scope (a body region, or WHOLE for the whole study).
REPORT_INSTRUCTIONS: dict[str, dict[str, str]] = {
    "vi": {
        "head_neck": "Hãy viết báo cáo PET/CT cho vùng đầu - cổ.",
        "chest": "Hãy viết báo cáo PET/CT cho vùng lồng ngực.",
        "abdomen_pelvis": "Hãy viết báo cáo PET/CT cho vùng ổ bụng - khung chậu.",
        WHOLE: "Hãy viết báo cáo PET/CT toàn thân.",
    },
    "en": {
        "head_neck": "Write the PET/CT report for the head and neck.",
        "chest": "Write the PET/CT report for the chest.",
        "abdomen_pelvis": "Write the PET/CT report for the abdomen and pelvis.",
        WHOLE: "Write the whole-body PET/CT report.",
    },
}
# The findings section(s) a region report covers; musculoskeletal findings and the
# impression belong to the whole-study report only.
REGION_SECTIONS: dict[str, tuple[str, ...]] = {
    "head_neck": ("head_neck",),
    "chest": ("chest",),
    "abdomen_pelvis": ("abdomen_pelvis",),
}

Messages = list[dict[str, str]]


# ---- the visual block -----------------------------------------------------------------


def _scope(region: str | None) -> str:
    """``region`` as a scope name: a REGIONS key, or WHOLE for None / "whole"."""
    if region is None or region == WHOLE:
        return WHOLE
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; choose from {[*REGIONS, WHOLE]} or None")
    return region


def _check_n_visual(n_visual: int) -> None:
    if isinstance(n_visual, bool) or not isinstance(n_visual, int) or n_visual < 1:
        raise ValueError(f"n_visual must be a positive integer, got {n_visual!r}")


def n_image_tokens(region: str | None, n_visual: int) -> int:
    """How many `<image>` tokens the visual block of ``region`` holds (the number of
    visual features the model must splice in): n_visual, or 3 × n_visual for the whole
    study."""
    _check_n_visual(n_visual)
    return n_visual * (len(REGIONS) if _scope(region) == WHOLE else 1)


def visual_block(region: str | None, n_visual: int) -> str:
    """``<region:NAME><ct><pet>`` + ``<image>`` × n_visual for one region; for the whole
    study (None or "whole") ``<region:whole>`` then the three region blocks in order."""
    _check_n_visual(n_visual)
    scope = _scope(region)
    if scope != WHOLE:
        return region_token(scope) + CT_TOKEN + PET_TOKEN + IMAGE_TOKEN * n_visual
    return region_token(WHOLE) + "".join(visual_block(r, n_visual) for r in REGIONS)


# ---- prompts --------------------------------------------------------------------------


def report_prompt(lang: str, region: str | None, n_visual: int) -> Messages:
    """Messages asking for the report of ``region`` (None: the whole study)."""
    check_lang(lang)
    scope = _scope(region)
    user = f"{visual_block(scope, n_visual)}\n{REPORT_INSTRUCTIONS[lang][scope]}"
    return [
        {"role": "system", "content": SYSTEM_PROMPTS[lang]},
        {"role": "user", "content": user},
    ]


def question_prompt(
    lang: str,
    question: str,
    n_visual: int,
    region: str | None = None,
    history: Sequence[tuple[str, str]] = (),
) -> Messages:
    """Messages asking ``question`` about ``region`` (None: the whole study).

    ``history`` holds the earlier (question, answer) turns of the conversation, oldest
    first; the visual block opens the first user turn only — the images are seen once
    and every later turn attends back to them.
    """
    check_lang(lang)
    if not question.strip():
        raise ValueError("question is empty")
    block = visual_block(region, n_visual)
    messages: Messages = [{"role": "system", "content": SYSTEM_PROMPTS[lang]}]
    turns = [*history, (question, None)]
    for i, (asked, answer) in enumerate(turns):
        messages.append({"role": "user", "content": f"{block}\n{asked}" if i == 0 else asked})
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
    return messages


# ---- token ids ------------------------------------------------------------------------


def _chat_ids(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, *, add_generation_prompt: bool
) -> list[int]:
    if tokenizer.chat_template is None:
        raise ValueError(
            "tokenizer has no chat template; use vipet.data.tokenizer.train_tokenizer "
            "or add_vipet_tokens"
        )
    encoded = tokenizer.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True
    )
    return list(encoded["input_ids"])


def _check_prompt(messages: Messages) -> None:
    if not messages or messages[-1].get("role") != "user":
        raise ValueError("a prompt must end with a user message")


def build_inference(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> dict[str, list[int]]:
    """``input_ids`` / ``attention_mask`` of ``messages`` with the generation prompt
    (the assistant marker) appended: what the model continues."""
    _check_prompt(messages)
    ids = _chat_ids(tokenizer, messages, add_generation_prompt=True)
    return {"input_ids": ids, "attention_mask": [1] * len(ids)}


def build_example(
    tokenizer: PreTrainedTokenizerBase,
    messages: Messages,
    answer: str,
    max_length: int | None = None,
    learn_history: bool = False,
) -> dict[str, list[int]]:
    """A training example: ``messages`` answered by ``answer``.

    ``labels`` are `IGNORE_INDEX` on the prompt (system, user turns and the assistant
    marker) and the token ids elsewhere — the answer and its end marker — so only the
    answer is learned. Earlier assistant turns in ``messages`` are context only, unless
    ``learn_history``: then each of them is learned too, exactly as if it were the
    answer to the conversation up to it (a multi-turn example teaches every answer for
    one pass over the images). The prompt part is exactly `build_inference`'s ids.
    Longer than ``max_length``: the answer is cut (its end marker may be lost); a prompt
    that alone fills ``max_length`` is an error, since cutting it would drop image tokens.
    """
    _check_prompt(messages)
    prompt = _chat_ids(tokenizer, messages, add_generation_prompt=True)
    full = _chat_ids(
        tokenizer,
        [*messages, {"role": "assistant", "content": answer}],
        add_generation_prompt=False,
    )
    _check_prefix(prompt, full)
    labels = [IGNORE_INDEX] * len(prompt) + full[len(prompt) :]
    if learn_history:
        for k, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            # the turn's own ids: from its generation prompt to its end marker
            start = _chat_ids(tokenizer, messages[:k], add_generation_prompt=True)
            stop = _chat_ids(tokenizer, messages[: k + 1], add_generation_prompt=False)
            _check_prefix(start, stop)
            _check_prefix(stop, full)
            labels[len(start) : len(stop)] = full[len(start) : len(stop)]
    if max_length is not None:
        if len(prompt) >= max_length:
            raise ValueError(
                f"the prompt alone has {len(prompt)} tokens, max_length is {max_length}"
            )
        full, labels = full[:max_length], labels[:max_length]
    return {"input_ids": full, "attention_mask": [1] * len(full), "labels": labels}


def _check_prefix(prefix: list[int], ids: list[int]) -> None:
    if ids[: len(prefix)] != prefix:
        # A template (or a BPE merge across the marker) that changes the prompt's ids
        # once an answer follows would train on a prefix inference never produces.
        raise ValueError("the chat template's generation prompt is not a prefix of the answer")


# ---- targets --------------------------------------------------------------------------


def region_report_text(report: Mapping[str, Any], region: str, lang: str) -> str:
    """The target of a region report: the region's findings section(s) of ``report``
    (ViMed-PET structure, in ``lang``), each as ``"<heading>: <text>"``, one per line."""
    check_lang(lang)
    if region not in REGION_SECTIONS:
        raise ValueError(f"unknown region {region!r}; choose from {list(REGION_SECTIONS)}")
    findings = report.get(nfc(FINDINGS_KEY[lang]))
    if not isinstance(findings, Mapping):
        raise InputError(f"report has no {FINDINGS_KEY[lang]!r} sections (language {lang!r}?)")
    headings = {key: nfc(vi if lang == "vi" else en) for key, vi, en in SECTIONS}
    lines = []
    for key in REGION_SECTIONS[region]:
        heading = headings[key]
        if heading not in findings:
            raise InputError(f"report has no {heading!r} section under {FINDINGS_KEY[lang]!r}")
        lines.append(f"{heading}: {findings[heading]}")
    return nfc("\n".join(lines))


def merge_region_texts(texts: Mapping[str, str], lang: str) -> str:
    """The findings of a study from its regions' outputs (``{region: text}``, each text
    "<heading>: <sentences>" lines as `vipet.reports.render.render_region_findings`
    writes them): every section's sentences from all regions, in section order, under
    the findings heading. A line without a known heading continues the heading before
    it (the region's own section at first)."""
    check_lang(lang)
    headings = {key: nfc(vi if lang == "vi" else en) for key, vi, en in SECTIONS}
    by_heading: dict[str, list[str]] = {h: [] for h in headings.values()}
    for region in REGIONS:
        if region not in texts:
            continue
        current = headings[region]
        for line in nfc(texts[region]).splitlines():
            head, sep, body = line.partition(":")
            if sep and head.strip() in by_heading:
                current, line = head.strip(), body
            if line.strip():
                by_heading[current].append(line.strip())
    lines = [f"{h}: {' '.join(parts)}" for h, parts in by_heading.items() if parts]
    return nfc("\n".join([f"{FINDINGS_KEY[lang]}:", *lines]))


def whole_report_text(report: Mapping[str, Any]) -> str:
    """The target of a whole-study report: every findings section (musculoskeletal
    included) and the impression, as `report_text` lays them out."""
    return report_text(report)


def target_text(report: Mapping[str, Any], region: str | None, lang: str) -> str:
    """`region_report_text` for a region, `whole_report_text` for None / "whole"."""
    scope = _scope(region)
    return whole_report_text(report) if scope == WHOLE else region_report_text(report, scope, lang)


__all__ = [
    "IGNORE_INDEX",
    "REGION_SECTIONS",
    "REPORT_INSTRUCTIONS",
    "SYSTEM_PROMPTS",
    "build_example",
    "build_inference",
    "merge_region_texts",
    "n_image_tokens",
    "question_prompt",
    "region_report_text",
    "report_prompt",
    "target_text",
    "visual_block",
    "whole_report_text",
]
