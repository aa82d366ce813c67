"""A region's report with its evidence: what each stated lesion was written from.

For one region, the language model writes the findings (`Predictor.report`); then one
teacher-forced pass over the prompt and the written text, with attention weights, gives
for every stated lesion (the offline extractor's reading of the text):

- its **attention map**: the attention of the lesion's sentence tokens on the visual
  tokens, carried back to the region's voxels (`vipet.model.attention_map`, the method of
  DOMAIN.md §1), in [0, 1];
- its **attention on each finding slot**: the share of that attention that went to each
  of the head's detections (their slot tokens) — what the consistency guard reads
  (`vipet.inference.guard`): a statement matched to a detection whose slot got little of
  its attention is flagged as looking elsewhere;
- the voxel it points at (the map's peak), for a viewer to jump to.

Sentences are found in the generated token stream by their characters: each token's
span in the decoded text is known, so a sentence's tokens are those whose span overlaps
it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vipet.data.prompts import report_prompt
from vipet.inference.guard import GuardConfig, GuardResult, check_region
from vipet.inference.predictor import Predictor, StudyContext
from vipet.model.attention_map import visual_token_weights
from vipet.reports.extract import extract_findings


@dataclass
class StatedLesion:
    """One lesion the region's text states, with where the model looked writing it."""

    sentence: str
    lesion: dict[str, Any]
    tokens: tuple[int, int]
    """[first, last) positions of its sentence in the generated tokens."""
    slot_attention: list[float]
    """Share of the sentence's visual attention on each filled slot (detection order)."""
    peak_voxel: tuple[int, int, int] | None
    """Where its attention map peaks, on the region grid (None without a map)."""
    attention_map: np.ndarray | None = field(default=None, repr=False)
    """(D, H, W) float32 in [0, 1] on the region grid."""


@dataclass
class RegionReport:
    region: str
    text: str
    findings: list[dict[str, Any]]
    """The head's detections of the region (`Detections.attributes`), slot order."""
    stated: list[StatedLesion]
    guard: GuardResult


def _char_ends(tokenizer: Any, ids: list[int]) -> list[int]:
    """End offset of each token in ``decode(ids, skip_special_tokens=True)``."""
    ends, last = [], 0
    for i in range(len(ids)):
        last = max(last, len(tokenizer.decode(ids[: i + 1], skip_special_tokens=True)))
        ends.append(last)
    return ends


def _sentence_tokens(text: str, sentence: str, ends: list[int], start: int) -> tuple[int, int, int]:
    """Token range [a, b) whose characters overlap ``sentence`` (searched from character
    ``start``) and the character where the search continues."""
    lo = text.find(sentence, start)
    if lo < 0:  # the extractor normalises spacing; fall back to the first words
        lo = text.find(sentence.split(",")[0].strip(), start)
    if lo < 0:
        return 0, 0, start
    hi = lo + len(sentence)
    begins = [0, *ends[:-1]]
    first = next((t for t, e in enumerate(ends) if e > lo), len(ends))
    last = next((t for t in range(len(ends) - 1, -1, -1) if begins[t] < hi), first - 1) + 1
    return first, max(first, last), hi


@torch.no_grad()
def explain_region(
    predictor: Predictor,
    ctx: StudyContext,
    region: str,
    lang: str = "vi",
    max_new_tokens: int = 400,
    guard: GuardConfig | None = None,
) -> RegionReport:
    """Write ``region``'s findings and trace every stated lesion back to the image
    (``ctx`` must be encoded with attention: `Predictor.encode(..., with_attention=True)`)."""
    model, tok = predictor.model, predictor.tokenizer
    visual = ctx.region_visual(region)
    if visual.resampler_attention is None:
        raise ValueError("encode the study with with_attention=True to explain its report")
    messages = report_prompt(lang, region, model.visual_tokens_per_region)
    prompt, new_ids = predictor.generate_ids(messages, visual, max_new_tokens)
    text = tok.decode(new_ids, skip_special_tokens=True)
    findings = ctx.findings(region)
    said = extract_findings(text, lang)
    stated: list[StatedLesion] = []
    if said:
        full = torch.cat([prompt, torch.tensor([new_ids])], dim=1)
        out = model(full, visual=visual, output_attentions=True, with_diag=False)
        ends = _char_ends(tok, new_ids)
        image = full == model.config.image_token_id
        n_slots = model.config.findings_slots
        cursor = 0
        for les in said:
            a, b, cursor = _sentence_tokens(text, les.sentence, ends, cursor)
            query = torch.zeros_like(full, dtype=torch.bool)
            query[0, prompt.shape[1] + a : prompt.shape[1] + b] = True
            shares, peak, amap = [0.0] * len(findings), None, None
            if b > a:
                w = visual_token_weights(
                    out.attentions, query, image, model.config.attention_top_heads
                )[0]
                if n_slots and findings:
                    slot_w = w[-n_slots:][: len(findings)]
                    shares = (slot_w / w.sum().clamp_min(1e-12)).tolist()
                maps = model.attention_maps(out, full, query)[0, 0]
                amap = maps.float().numpy()
                peak = tuple(int(v) for v in np.unravel_index(int(amap.argmax()), amap.shape))
            d = les.to_dict()
            d.pop("sentence", None)
            stated.append(StatedLesion(les.sentence, d, (a, b), shares, peak, amap))
    result = check_region(
        region,
        text,
        findings,
        lang,
        config=guard,
        slot_attention=[s.slot_attention for s in stated] if stated else None,
    )
    return RegionReport(region, text, findings, stated, result)
