"""Encode once, ask many: reports and answers from a saved ViPET-VLM.

A `Predictor` preprocesses a study onto the model's region grid, runs the encoders once
(`StudyContext` holds the visual features of the three regions), and then every report
and question reuses those features; generation runs only the language model, with its
KV cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vipet.data.prompts import (
    build_inference,
    merge_region_texts,
    question_prompt,
    report_prompt,
)
from vipet.data.tokenizer import stop_token_ids
from vipet.inference.evidence import EVIDENCE_FLOOR, question_evidence
from vipet.io.study import Study
from vipet.model.checkpoint import load_vipet
from vipet.model.vipet import ViPetModel, VisualFeatures, vision_autocast
from vipet.preprocess import PreprocessConfig, RegionSample, preprocess_study


def _own_slices(sample: RegionSample) -> tuple[float, float]:
    """The slices of a region sample that are the region's own (`RegionBox.own_slices`)."""
    lo, hi = sample.meta.get("own_slices", (0.0, float(sample.ct.shape[0])))
    return float(lo), float(hi)


@dataclass
class StudyContext:
    """One study's preprocessed regions and visual features."""

    study_id: str
    regions: list[str]
    samples: list[RegionSample]
    visual: VisualFeatures  # all regions, (1, R·L, hidden)
    candidates: list[dict] | None = None
    """Every finding the detector scores above `EVIDENCE_FLOOR`, in or out of the slots
    (each with its volume's ``region`` and its ``score``): what a closed question's
    evidence is read from (`vipet.inference.evidence`). None: not kept."""

    def region_visual(self, region: str) -> VisualFeatures:
        """The features of one region (its L visual tokens)."""
        i = self.regions.index(region)
        n = self.visual.tokens.shape[1] // len(self.regions)
        v = self.visual
        return replace(
            v,
            tokens=v.tokens[:, i * n : (i + 1) * n],
            fused=v.fused[:, i : i + 1],
            resampler_attention=None
            if v.resampler_attention is None
            else v.resampler_attention[:, i : i + 1],
            diag_logits=None if v.diag_logits is None else v.diag_logits[:, i : i + 1],
            dense=None if v.dense is None else v.dense.map(lambda t: t[i : i + 1]),
            detections=None if v.detections is None else v.detections.select([i]),
        )

    def findings(self, region: str) -> list[dict]:
        """What the findings head detected in one region (type, avidity, fine location,
        laterality, SUVmax, size, score), in report order."""
        v = self.visual
        if v.detections is None or not v.detections.attributes:
            return []
        return list(v.detections.attributes[self.regions.index(region)])


class Predictor:
    def __init__(
        self, model: ViPetModel, tokenizer: Any, preprocess: PreprocessConfig | None = None
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        grid = tuple(model.config.ct_encoder["image_size"])
        self.preprocess = replace(preprocess or PreprocessConfig(), grid=grid)
        self.stop = stop_token_ids(tokenizer)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> Predictor:
        model, tokenizer = load_vipet(path)
        return cls(model, tokenizer)

    @torch.no_grad()
    def encode(self, study: Study, with_attention: bool = False) -> StudyContext:
        """Preprocess ``study`` and run the vision side once. ``with_attention``: keep
        the resampler's attention, which attention maps need (`vipet.inference.explain`)."""
        samples = preprocess_study(study, self.preprocess)
        return self.encode_samples(study.id, samples, with_attention)

    @torch.no_grad()
    def encode_samples(
        self,
        study_id: str,
        samples: Sequence[RegionSample],
        with_attention: bool = False,
        with_candidates: bool | None = None,
    ) -> StudyContext:
        """`encode` from a study's region samples already preprocessed.
        ``with_candidates``: keep the detector's candidates below the slot thresholds
        too (`StudyContext.candidates`); None: when the yes/no head weighs them."""
        by_region = {s.region: s for s in samples}
        regions = [r for r in self.model.config.regions if r in by_region]
        # float16, as the cache stores the volumes the model was trained, calibrated and
        # its scorer fitted on, and the vision side in bf16 as there: a peak near its
        # threshold then lands on the same side here as in `vipet evaluate`'s numbers.
        ct, pet = (
            torch.from_numpy(
                np.stack([getattr(by_region[r], k) for r in regions]).astype(np.float16)
            )[None].float()
            for k in ("ct", "pet")
        )
        zones = torch.tensor([[_own_slices(by_region[r]) for r in regions]])
        with vision_autocast(ct.device):
            vision = self.model.vision(ct, pet, zones, regions)
        visual = self.model.visual_tokens(vision.float(), 1, with_attention)
        if with_candidates is None:
            head = self.model.yes_no_head
            with_candidates = head is not None and bool(head.config.evidence)
        found = None
        if with_candidates and vision.dense is not None:
            with vision_autocast(ct.device):  # as the calibration reads its candidates
                det = self.model.detect(
                    vision.dense,
                    vision.grid,
                    ct[0],
                    pet[0],
                    zones[0],
                    self.model.region_indices(1, regions),
                    floor=EVIDENCE_FLOOR,
                )
            found = [
                {**a, "region": region}
                for region, row in zip(regions, det.attributes, strict=True)
                for a in row
            ]
        return StudyContext(study_id, regions, [by_region[r] for r in regions], visual, found)

    def generate_ids(
        self, messages: list[dict], visual: VisualFeatures, max_new_tokens: int
    ) -> tuple[torch.Tensor, list[int]]:
        """The prompt ids ``(1, T)`` of ``messages`` and the ids the model writes after
        them, stop tokens and padding left out."""
        ids = torch.tensor([build_inference(self.tokenizer, messages)["input_ids"]])
        new = self.model.generate(
            ids, visual=visual, max_new_tokens=max_new_tokens, eos_token_id=self.stop
        )
        out = []
        for t in new[0].tolist():
            if t in self.stop:
                break
            out.append(t)
        return ids, out

    def _generate(self, messages: list[dict], visual: VisualFeatures, max_new_tokens: int) -> str:
        _, new = self.generate_ids(messages, visual, max_new_tokens)
        return self.tokenizer.decode(new, skip_special_tokens=True).strip()

    @torch.no_grad()
    def report(
        self,
        ctx: StudyContext,
        lang: str = "vi",
        region: str | None = None,
        max_new_tokens: int = 400,
        by_region: bool = False,
    ) -> str:
        """The whole-study report (``region`` None) or one region's findings.

        ``by_region``: write the study's report region by region, each from that region's
        visual tokens alone, and merge the regions' lines section by section
        (`merge_region_texts`; no impression: no region prompt asks for one)."""
        n = self.model.visual_tokens_per_region
        if region is None and by_region:
            texts = {r: self.report(ctx, lang, r, max_new_tokens) for r in ctx.regions}
            return merge_region_texts(texts, lang)
        visual = ctx.visual if region is None else ctx.region_visual(region)
        return self._generate(report_prompt(lang, region, n), visual, max_new_tokens)

    @torch.no_grad()
    def ask(
        self,
        ctx: StudyContext,
        question: str,
        lang: str = "vi",
        region: str | None = None,
        history: Sequence[tuple[str, str]] = (),
        max_new_tokens: int = 32,
        yes_no_head: bool = True,
    ) -> str:
        """The model's answer to ``question``. When the LM answers a bare "yes" or "no"
        word of ``lang`` and the model has a fitted yes/no head for it
        (`vipet.model.yes_no_head`), the head decides which — weighed with the
        detector's candidates for what the question asks (`vipet.inference.evidence`)
        when the head has evidence rows and ``ctx`` kept the candidates; ``yes_no_head``
        False: the LM's own word stands."""
        messages, visual = self._question(ctx, question, lang, region, history)
        ids, new = self.generate_ids(messages, visual, max_new_tokens)
        answer = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        head = self.model.yes_no_head if yes_no_head else None
        words = None if head is None else head.words(lang)
        if words is None or answer not in words:
            return answer
        assert head is not None
        logit = float(head.logit(self._answer_state(ids, visual)[0], lang))
        found = None
        if ctx.candidates is not None:
            found = question_evidence(question, lang, ctx.candidates, region)
        if found is not None:
            stacked = head.with_evidence(logit, lang, *found)
            logit = logit if stacked is None else stacked
        return words[0] if logit > 0 else words[1]

    @torch.no_grad()
    def answer_state(
        self,
        ctx: StudyContext,
        question: str,
        lang: str = "vi",
        region: str | None = None,
        history: Sequence[tuple[str, str]] = (),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The LM's last hidden state ``(hidden,)`` where its answer to ``question``
        begins — what the yes/no head reads — and its next-token logits ``(vocab,)``
        there."""
        messages, visual = self._question(ctx, question, lang, region, history)
        ids = torch.tensor([build_inference(self.tokenizer, messages)["input_ids"]])
        return self._answer_state(ids, visual)

    def _question(
        self,
        ctx: StudyContext,
        question: str,
        lang: str,
        region: str | None,
        history: Sequence[tuple[str, str]],
    ) -> tuple[list[dict], VisualFeatures]:
        """The prompt of ``question`` and the visual features it is asked about."""
        n = self.model.visual_tokens_per_region
        visual = ctx.visual if region is None else ctx.region_visual(region)
        return question_prompt(lang, question, n, region=region, history=list(history)), visual

    def _answer_state(
        self, ids: torch.Tensor, visual: VisualFeatures
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model.language_model(
            inputs_embeds=self.model.embed(ids, visual), output_hidden_states=True
        )
        return out.hidden_states[-1][0, -1].float(), out.logits[0, -1].float()


def predict_dataset(
    checkpoint: str | Path,
    data: str | Path,
    split: str,
    lang: str,
    progress: bool = True,
    max_studies: int | None = None,
    report_tokens: int = 400,
    by_region: bool = False,
) -> list[dict[str, Any]]:
    """Predictions (the runner's JSONL rows) for every study of ``split``, or for its
    first ``max_studies`` (in ``split_ids`` order, the subset `evaluate` scores with the
    same ``max_studies``): generation dominates evaluation time, so quick comparisons
    such as ablations predict a subset. ``report_tokens``: the longest report generated
    (per region with ``by_region``, see `Predictor.report`)."""
    from vipet.evaluation.runner import split_ids
    from vipet.io import LoadOptions, load_study
    from vipet.io.vipet_dataset import ground_truth

    ids = split_ids(Path(data), split, max_studies)
    predictor = Predictor.from_checkpoint(checkpoint)
    rows = []
    for sid in tqdm(ids, desc=f"predict {split}", disable=not progress):
        ctx = predictor.encode(load_study(data, LoadOptions(study_id=sid)))
        answers = [
            {
                "question": q["question"],
                "prediction": predictor.ask(ctx, q["question"], lang, region=q.get("region")),
            }
            for q in ground_truth(data, sid).get(f"questions_{lang}", [])
        ]
        rows.append(
            {
                "id": sid,
                "lang": lang,
                "report": predictor.report(
                    ctx, lang, max_new_tokens=report_tokens, by_region=by_region
                ),
                "answers": answers,
            }
        )
    return rows
