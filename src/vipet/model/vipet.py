"""ViPET-VLM, composed from named parts the way transformers' LLaVA is.

```
ct  (B, R, D, H, W) ─ ct_encoder  ─┐
                                    ├─ fusion (PET queries CT) ─ fused (B·R, N, C) ─┬─ diag_head → findings logits
pet (B, R, D, H, W) ─ pet_encoder ─┘                                               └─ multi_modal_projector
                                                                                       (resampler + MLP) → (B, R·L, hidden)
input_ids with R·L <image> placeholders ─ embed ─ masked_scatter(visual tokens) ─ language_model → logits
```

Regions go through the encoders as one batch of B·R volumes. Visual features are a
value of their own (`VisualFeatures`): computed once per study, they are reused for
every question and turn, and generation with a KV cache only runs the language model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from vipet.model.attention_map import attention_maps
from vipet.model.config import ViPetConfig
from vipet.model.dense_head import DenseLesionHead
from vipet.model.diag_head import Findings, FindingsHead
from vipet.model.encoder3d import ViT3D
from vipet.model.findings_slots import FindingsSlots, teacher_slots
from vipet.model.fusion import build_fusion
from vipet.model.language import LoraSettings, apply_lora, build_language_model
from vipet.model.projector import VisualProjector

PARTS: tuple[str, ...] = (
    "ct_encoder",
    "pet_encoder",
    "fusion",
    "multi_modal_projector",
    "diag_head",
    "language_model",
    "findings_projector",
    "findings_slots",
    "dense_head",
)
"""The named parts of `ViPetModel` (``findings_projector`` is None unless
``config.findings_token``, ``findings_slots`` unless ``config.findings_slots``,
``dense_head`` unless ``config.dense_lesion``); training
stages freeze and unfreeze by these names."""


@dataclass
class VisualFeatures:
    """Everything the model derives from the images of one batch of studies."""

    tokens: torch.Tensor  # (B, R·L, hidden) — what replaces the <image> placeholders
    fused: torch.Tensor  # (B, R, N, C) fused encoder tokens (for the findings head)
    resampler_attention: torch.Tensor | None  # (B, R, L, N), when asked for
    grid: tuple[int, int, int]  # encoder token grid per region (d, h, w)
    image_shape: tuple[int, int, int]  # (D, H, W) of each region volume
    diag_logits: torch.Tensor | None = None  # (B, R, labels), once computed
    lesion_scores: torch.Tensor | None = None  # (B, R, N) findings-head token scores
    lesion_classes: torch.Tensor | None = None  # (B, R, N, K) token type x avidity log-probs
    slot_tokens: torch.Tensor | None = None  # (B, R, S) encoder token of each finding slot
    slot_filled: torch.Tensor | None = None  # (B, R, S) bool: the slot shows a detection
    lesion_dense: torch.Tensor | None = None  # (B, R, d, h, w) voxel-level lesion logits


@dataclass
class ViPetOutput:
    loss: torch.Tensor | None = None  # language-model cross-entropy on the labelled tokens
    logits: torch.Tensor | None = None  # (B, T, vocab)
    diag_logits: torch.Tensor | None = None  # (B, R, labels per region)
    attentions: tuple[torch.Tensor, ...] | None = None  # per LM layer (B, heads, T, T)
    cache: object | None = None  # the LM's KV cache
    visual: VisualFeatures | None = None


class ViPetModel(PreTrainedModel):
    config_class = ViPetConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _supports_sdpa = True

    def __init__(self, config: ViPetConfig, language_model: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        self.ct_encoder = ViT3D(config.ct_encoder_settings)
        self.pet_encoder = ViT3D(config.pet_encoder_settings)
        self.fusion = build_fusion(config.fusion_settings)
        self.multi_modal_projector = VisualProjector(config.projector_settings)
        self.diag_head = FindingsHead(config.diag_head_settings)
        self.findings_projector = None
        if config.findings_token:
            hidden = config.projector_settings.out_width
            self.findings_projector = nn.Sequential(
                nn.Linear(self.diag_head.num_labels, hidden), nn.GELU(), nn.Linear(hidden, hidden)
            )
        self.dense_head = None
        if config.dense_lesion:
            self.dense_head = DenseLesionHead(
                config.ct_encoder_settings.dense_channels,
                config.pet_encoder_settings.dense_channels,
            )
        self.findings_slots = None
        if config.findings_slots:
            self.findings_slots = FindingsSlots(
                config.diag_head_settings.width,
                self.diag_head.num_labels - 1,
                config.projector_settings.out_width,
                config.findings_slots,
                config.slot_threshold,
            )
        lm = (
            language_model
            if language_model is not None
            else build_language_model(config.text_config)
        )
        if config.lora:
            lm = apply_lora(lm, LoraSettings.from_dict(config.lora))
        self.language_model = lm
        if config.freeze_encoders:
            for enc in (self.ct_encoder, self.pet_encoder):
                enc.requires_grad_(False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # Each part initialises itself at construction (the LM by its own class); nothing
        # to redo here — and re-initialising would wipe a loaded pretrained LM.
        return

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    # --- vision ---------------------------------------------------------------------

    @property
    def visual_tokens_per_region(self) -> int:
        n = self.multi_modal_projector.num_tokens(self.ct_encoder.grid)
        return n + (1 if self.findings_projector is not None else 0) + self.config.findings_slots

    def encode_images(
        self,
        ct: torch.Tensor,
        pet: torch.Tensor,
        with_attention: bool = False,
        slot_lesions: torch.Tensor | None = None,
    ) -> VisualFeatures:
        """``ct``, ``pet``: ``(B, R, D, H, W)`` in [0, 1] → `VisualFeatures`.
        ``slot_lesions``: ``(B, R, D, H, W)`` maps of the lesions each region's report
        describes (a batch's ``filed_lesions``) to put the finding slots on instead of
        the head's detections — teacher forcing, for training only
        (`vipet.model.findings_slots.teacher_slots`)."""
        if ct.shape != pet.shape or ct.dim() != 5:
            raise ValueError(
                f"ct and pet must both be (B, R, D, H, W), got {tuple(ct.shape)} and {tuple(pet.shape)}"
            )
        b, r = ct.shape[:2]
        flat = lambda x: x.reshape(b * r, 1, *x.shape[2:]).to(self.dtype)  # noqa: E731
        dense = None
        if self.dense_head is not None:
            ct_tok, ct_dense = self.ct_encoder(flat(ct), dense=True)  # (B·R, N, C)
            pet_tok, pet_dense = self.pet_encoder(flat(pet), dense=True)
            dense = self.dense_head(ct_dense, pet_dense)
            dense = dense.reshape(b, r, *dense.shape[1:])
        else:
            ct_tok = self.ct_encoder(flat(ct))  # (B·R, N, C)
            pet_tok = self.pet_encoder(flat(pet))
        fused = self.fusion(pet_tok, ct_tok)  # PET queries CT
        grid = self.ct_encoder.grid
        if with_attention:
            tokens, attn = self.multi_modal_projector(fused, grid, return_attention=True)
        else:
            tokens, attn = self.multi_modal_projector(fused, grid), None
        visual = VisualFeatures(
            tokens=tokens,
            fused=fused.reshape(b, r, *fused.shape[1:]),
            resampler_attention=attn,
            grid=tuple(grid),
            image_shape=tuple(ct.shape[2:]),
            lesion_dense=dense,
        )
        if self.findings_projector is not None or self.findings_slots is not None:
            self._append_findings(visual, fused, slot_lesions)
        tokens, attn = visual.tokens, visual.resampler_attention
        visual.tokens = tokens.reshape(b, r * tokens.shape[1], tokens.shape[2])
        if attn is not None:
            visual.resampler_attention = attn.reshape(b, r, *attn.shape[1:])
        return visual

    def _append_findings(
        self, visual: VisualFeatures, fused: torch.Tensor, slot_lesions: torch.Tensor | None
    ) -> None:
        """Append the findings token and the finding slots to each region's visual tokens
        (``visual.tokens`` still (B·R, L, hidden) here), with their attention rows: the
        findings token "looks" where the head sees lesions (softmax of the token scores),
        a slot at its own token — so attention maps stay complete."""
        found = self.diag_head.findings(fused)
        extra, rows = [], []
        if self.findings_projector is not None:
            extra.append(self.findings_projector(torch.sigmoid(found.logits))[:, None])
            rows.append(torch.softmax(found.scores.float(), dim=-1)[:, None])
        slot_idx = None
        if self.findings_slots is not None:
            forced = None
            if slot_lesions is not None:
                maps = slot_lesions.reshape(-1, *slot_lesions.shape[2:])
                forced = teacher_slots(maps, visual.grid, self.findings_slots.slots)
            slots, slot_idx, filled = self.findings_slots(
                fused, found.scores, found.classes, visual.grid, forced
            )
            extra.append(slots.to(visual.tokens.dtype))
            # an empty slot points nowhere: its attention row is zero
            rows.append(F.one_hot(slot_idx, fused.shape[1]).float() * filled[..., None])
        visual.tokens = torch.cat([visual.tokens, *extra], dim=1)
        if visual.resampler_attention is not None:
            attn = visual.resampler_attention
            visual.resampler_attention = torch.cat([attn, *(x.to(attn.dtype) for x in rows)], 1)
        self._keep_findings(visual, found, slot_idx)
        if slot_idx is not None:
            visual.slot_filled = filled.reshape(*visual.slot_tokens.shape)

    @staticmethod
    def _keep_findings(
        visual: VisualFeatures, found: Findings, slot_idx: torch.Tensor | None
    ) -> None:
        b, r = visual.fused.shape[:2]
        visual.diag_logits = found.logits.reshape(b, r, -1)
        visual.lesion_scores = found.scores.reshape(b, r, -1)
        visual.lesion_classes = found.classes.reshape(b, r, *found.classes.shape[1:])
        if slot_idx is not None:
            visual.slot_tokens = slot_idx.reshape(b, r, -1)

    def diagnose(self, visual: VisualFeatures) -> torch.Tensor:
        """Findings logits ``(B, R, n_labels_per_region)`` from the fused tokens."""
        if visual.diag_logits is not None:
            return visual.diag_logits
        found = self.diag_head.findings(visual.fused.flatten(0, 1))
        # kept on the features: the token-level losses read the same predictions
        self._keep_findings(visual, found, None)
        return visual.diag_logits

    # --- language -------------------------------------------------------------------

    def embed(self, input_ids: torch.Tensor, visual: VisualFeatures | None) -> torch.Tensor:
        """Token embeddings with the visual tokens scattered into the ``<image>`` slots."""
        embeds = self.get_input_embeddings()(input_ids)
        slots = input_ids == self.config.image_token_id
        n_slots = int(slots.sum())
        n_visual = 0 if visual is None else visual.tokens.shape[0] * visual.tokens.shape[1]
        if n_slots != n_visual:
            per_sample = slots.sum(dim=1).tolist()
            want = 0 if visual is None else visual.tokens.shape[1]
            raise ValueError(
                f"the prompt holds {per_sample} <image> placeholders per sample but the images give "
                f"{want} visual tokens per sample ({len(self.config.regions)} regions max, "
                f"{self.visual_tokens_per_region} tokens each): build prompts with the model's "
                "visual_tokens_per_region"
            )
        if n_slots == 0:
            return embeds
        mask = slots.unsqueeze(-1).expand_as(embeds)
        return embeds.masked_scatter(mask, visual.tokens.to(embeds.dtype))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        ct: torch.Tensor | None = None,
        pet: torch.Tensor | None = None,
        visual: VisualFeatures | None = None,
        output_attentions: bool = False,
        with_diag: bool = True,
        with_language: bool = True,
        slot_lesions: torch.Tensor | None = None,
        **lm_kwargs: object,
    ) -> ViPetOutput:
        """Teacher-forced pass. Give images as ``ct``/``pet`` or precomputed ``visual``.
        ``labels``: -100 outside the answer tokens (the LM loss is on answers only).
        ``with_language=False`` stops after the vision side (encoder pretraining).
        ``slot_lesions``: finding slots on these lesions (see `encode_images`)."""
        if visual is None and ct is not None:
            visual = self.encode_images(
                ct, pet, with_attention=output_attentions, slot_lesions=slot_lesions
            )
        if not with_language:
            diag = self.diagnose(visual) if (with_diag and visual is not None) else None
            return ViPetOutput(diag_logits=diag, visual=visual)
        out = self.language_model(
            inputs_embeds=self.embed(input_ids, visual),
            attention_mask=attention_mask,
            labels=labels,
            output_attentions=output_attentions,
            return_dict=True,
            **lm_kwargs,
        )
        diag = self.diagnose(visual) if (with_diag and visual is not None) else None
        return ViPetOutput(
            loss=out.loss,
            logits=out.logits,
            diag_logits=diag,
            attentions=out.attentions,
            cache=getattr(out, "cache", None),
            visual=visual,
        )

    def attention_maps(
        self, output: ViPetOutput, input_ids: torch.Tensor, query_mask: torch.Tensor
    ) -> torch.Tensor:
        """``(B, R, D, H, W)`` maps in [0, 1] from ``query_mask`` tokens to the voxels
        (see `vipet.model.attention_map`); needs a forward with ``output_attentions``."""
        if (
            output.attentions is None
            or output.visual is None
            or output.visual.resampler_attention is None
        ):
            raise ValueError("attention maps need forward(..., output_attentions=True) with images")
        v = output.visual
        return attention_maps(
            output.attentions,
            query_mask,
            input_ids == self.config.image_token_id,
            v.resampler_attention,
            v.grid,
            v.image_shape,
            self.config.attention_top_heads,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        ct: torch.Tensor | None = None,
        pet: torch.Tensor | None = None,
        visual: VisualFeatures | None = None,
        **generate_kwargs: object,
    ) -> torch.Tensor:
        """New token ids after the prompt (greedy unless told otherwise), with a KV cache.
        Pass ``visual`` from `encode_images` to reuse a study's features across questions."""
        if visual is None and ct is not None:
            visual = self.encode_images(ct, pet)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kwargs = {"do_sample": False, "max_new_tokens": 64, "use_cache": True, **generate_kwargs}
        return self.language_model.generate(
            inputs_embeds=self.embed(input_ids, visual), attention_mask=attention_mask, **kwargs
        )

    def parameter_counts(self) -> dict[str, tuple[int, int]]:
        """Per named part that exists: (total, trainable) parameters."""
        parts = {name: getattr(self, name) for name in PARTS if getattr(self, name) is not None}
        return {
            name: (
                sum(p.numel() for p in m.parameters()),
                sum(p.numel() for p in m.parameters() if p.requires_grad),
            )
            for name, m in parts.items()
        }
