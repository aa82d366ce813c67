"""ViPET-VLM, composed from named parts the way transformers' LLaVA is.

```
ct  (B, R, D, H, W) ─ ct_encoder  ─┐ tokens + pyramid
                                    ├─ fusion (PET queries CT) ─ fused (B·R, N, C) ─┬─ multi_modal_projector → R·L latents
pet (B, R, D, H, W) ─ pet_encoder ─┘                                               └─ diag_head (+ pyramids) → voxel maps
                                                                                        → detections → findings token + slots
input_ids with R·(L+1+K) <image> placeholders ─ embed ─ masked_scatter(visual tokens) ─ language_model → logits
```

Regions go through the encoders as one batch of B·R volumes. The work is split in two:
`vision` (encoders, fusion, findings head and its detections — the part the language
phase of training keeps frozen, so its outputs can be reused), and `visual_tokens`
(projector, findings token and slots: what the language model reads). Visual features
are a value of their own (`VisualFeatures`): computed once per study, they are reused
for every question and turn, and generation with a KV cache only runs the language
model.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from vipet.model.attention_map import attention_maps, attention_token_maps
from vipet.model.candidate_scorer import MAX_CANDIDATES, CandidateScorer
from vipet.model.config import ViPetConfig
from vipet.model.diag_head import DenseFindings, FindingsHead, region_logits
from vipet.model.encoder3d import ViT3D
from vipet.model.findings_slots import (
    Detections,
    FindingsSlots,
    FindingsToken,
    detect,
    teacher_detections,
)
from vipet.model.fusion import build_fusion
from vipet.model.language import LoraSettings, apply_lora, build_language_model
from vipet.model.projector import VisualProjector
from vipet.model.yes_no_head import YesNoHead
from vipet.reports.schema import REGIONS

PARTS: tuple[str, ...] = (
    "ct_encoder",
    "pet_encoder",
    "fusion",
    "multi_modal_projector",
    "diag_head",
    "language_model",
    "findings_projector",
    "findings_slots",
)
"""The named parts of `ViPetModel` (``diag_head`` is None unless the encoders have a
pyramid stem, ``findings_projector`` unless ``config.findings_token``,
``findings_slots`` unless ``config.findings_slots``); training stages freeze and
unfreeze by these names."""
VISION_PARTS: tuple[str, ...] = ("ct_encoder", "pet_encoder", "fusion", "diag_head")
"""The parts `ViPetModel.vision` runs."""


@dataclass
class VisionOutput:
    """What `ViPetModel.vision` derives from B·R region volumes."""

    fused: torch.Tensor  # (B·R, N, C) fused encoder tokens
    grid: tuple[int, int, int]  # encoder token grid per region (d, h, w)
    image_shape: tuple[int, int, int]  # (D, H, W) of each region volume
    dense: DenseFindings | None = None  # the findings head's voxel maps (B·R volumes)
    detections: Detections | None = None  # the head's findings (B·R volumes)

    def select(self, index: list[int]) -> VisionOutput:
        """The outputs of some volumes."""
        return VisionOutput(
            self.fused[index],
            self.grid,
            self.image_shape,
            None if self.dense is None else self.dense.map(lambda t: t[index]),
            None if self.detections is None else self.detections.select(index),
        )

    def float(self) -> VisionOutput:
        """The same outputs in float32 (after a `vision_autocast` pass, for the parts
        that run without it)."""
        return VisionOutput(
            self.fused.float(),
            self.grid,
            self.image_shape,
            None if self.dense is None else self.dense.map(lambda t: t.float()),
            self.detections,
        )


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions and matmuls natively (AVX512-BF16 or AMX,
    oneDNN's own test). Without them oneDNN emulates bf16: cpu-small's vision pass on a
    64x96x96 volume took 71 s under bf16 autocast against 0.37 s in fp32 on an AVX2-only
    EPYC (docs/benchmarks.md), so bf16 is used only where it is native."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if probe is not None:
        try:
            return bool(probe())
        except RuntimeError:  # a build without oneDNN
            return False
    return False


def bf16_runs_fast(device: torch.device | str) -> bool:
    """Whether bf16 autocast speeds up ``device`` rather than emulating bf16 on it."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_bf16_supported()
    return kind == "cpu" and cpu_has_native_bf16()


def vision_autocast(device: torch.device | str = "cpu") -> torch.autocast:
    """The precision the vision side runs in outside training: bf16 autocast where the
    device runs bf16 natively (`bf16_runs_fast`), as cpu-small is trained there
    (`TrainConfig.precision`) and as the slot thresholds and the candidate scorer were
    fitted (`vipet.evaluation.detector.candidates`), so a study's detections are the same
    wherever they are computed; fp32 elsewhere (a model trained in bf16 then detects
    from fp32 activations: the same to within bf16's rounding, in a 190th of the time)."""
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=bf16_runs_fast(device))


@dataclass
class VisualFeatures:
    """Everything the model derives from the images of one batch of studies."""

    tokens: torch.Tensor  # (B, R·L', hidden) — what replaces the <image> placeholders
    fused: torch.Tensor  # (B, R, N, C) fused encoder tokens
    resampler_attention: torch.Tensor | None  # (B, R, L', N), when asked for
    grid: tuple[int, int, int]  # encoder token grid per region (d, h, w)
    image_shape: tuple[int, int, int]  # (D, H, W) of each region volume
    diag_logits: torch.Tensor | None = None  # (B, R, labels), once computed
    dense: DenseFindings | None = None  # voxel maps of the B·R volumes
    detections: Detections | None = None  # what the slots show (B·R volumes)


@dataclass
class ViPetOutput:
    loss: torch.Tensor | None = None  # language-model cross-entropy on the labelled tokens
    logits: torch.Tensor | None = None  # (B, T, vocab)
    diag_logits: torch.Tensor | None = None  # (B, R, labels per region)
    attentions: tuple[torch.Tensor, ...] | None = None  # per LM layer (B, heads, T, T)
    cache: object | None = None  # the LM's KV cache
    visual: VisualFeatures | None = None
    dense: DenseFindings | None = None  # the findings head's maps of crops (``offsets``)


Teacher = tuple[torch.Tensor, torch.Tensor] | Detections
"""Teacher-forced slots: ``filed`` (B, R, D, H, W) and ``attrs`` (B, R, K, 7), see
`vipet.model.findings_slots.teacher_detections`, or the `Detections` that makes of them
for the B·R volumes (built once per volume in training, `vipet.train.memo`)."""


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
        head = config.diag_head_settings
        self.diag_head = None if head is None else FindingsHead(head)
        hidden = config.projector_settings.out_width
        self.findings_projector = FindingsToken(hidden) if config.findings_token else None
        self.findings_slots = (
            FindingsSlots(config.findings_slots, hidden) if config.findings_slots else None
        )
        scorer = config.candidate_scorer_settings
        self.candidate_scorer = None if scorer is None else CandidateScorer(scorer)
        yes_no = config.yes_no_head_settings
        self.yes_no_head = None if yes_no is None else YesNoHead(yes_no)
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

    @property
    def head_shape(self) -> tuple[int, int, int]:
        """``(D0, H0, W0)``: the findings head's voxel grid for a whole region volume."""
        enc = self.config.ct_encoder_settings
        first = enc.pyramid_strides[0] if enc.stem == "pyramid" else (1, 1, 1)
        d, h, w = (i // s for i, s in zip(enc.image_size, first, strict=True))
        return (d, h, w)

    def _encode(
        self, ct: torch.Tensor, pet: torch.Tensor, offsets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[int, int, int], DenseFindings | None]:
        """``(V, 1, D, H, W)`` volumes (or crops at ``offsets``) → fused tokens, grid,
        voxel maps."""
        x_ct = self.ct_encoder.forward_features(ct.to(self.dtype), offsets)
        x_pet = self.pet_encoder.forward_features(pet.to(self.dtype), offsets)
        fused = self.fusion(x_pet.tokens, x_ct.tokens)  # PET queries CT
        dense = None
        if self.diag_head is not None:
            by_name = {"ct": x_ct.pyramid, "pet": x_pet.pyramid}
            pyramids = [by_name[m] for m in ("ct", "pet") if m in self.fusion.modalities]
            dense = self.diag_head(fused, x_ct.grid, pyramids)
        return fused, x_ct.grid, dense

    def dense_findings(
        self, ct: torch.Tensor, pet: torch.Tensor, offsets: torch.Tensor | None = None
    ) -> DenseFindings:
        """The findings head's voxel maps of ``(V, 1, D, H, W)`` volumes, or of crops of
        whole patches at token ``offsets`` (V, 3) — how the vision side trains."""
        if self.diag_head is None:
            raise ValueError("this model has no findings head (its encoders need a pyramid stem)")
        return self._encode(ct, pet, offsets)[2]

    def vision(
        self,
        ct: torch.Tensor,
        pet: torch.Tensor,
        zones: torch.Tensor | None = None,
        regions: Sequence[str] | None = None,
    ) -> VisionOutput:
        """``ct``, ``pet``: ``(B, R, D, H, W)`` in [0, 1] → `VisionOutput` of the B·R
        volumes; ``zones`` ``(B, R, 2)``: each region's own slices (see `detect`);
        ``regions``: the R volumes' regions (default the model's, all of them)."""
        if ct.shape != pet.shape or ct.dim() != 5:
            raise ValueError(
                f"ct and pet must both be (B, R, D, H, W), got {tuple(ct.shape)} and {tuple(pet.shape)}"
            )
        b, r = ct.shape[:2]
        flat = lambda x: x.reshape(b * r, 1, *x.shape[2:])  # noqa: E731
        fused, grid, dense = self._encode(flat(ct), flat(pet))
        detections = None
        if dense is not None and self.findings_slots is not None:
            detections = self.detect(
                dense,
                grid,
                flat(ct)[:, 0],
                flat(pet)[:, 0],
                None if zones is None else zones.reshape(b * r, 2),
                self.region_indices(b, regions),
            )
        return VisionOutput(fused, grid, tuple(ct.shape[2:]), dense, detections)

    def detect(
        self,
        dense: DenseFindings,
        grid: tuple[int, int, int],
        ct: torch.Tensor,
        pet: torch.Tensor,
        zones: torch.Tensor | None,
        regions: Sequence[int],
        floor: float | None = None,
        limit: int = MAX_CANDIDATES,
    ) -> Detections:
        """`detect` on V volumes' maps as this model runs it (its scorer, places and
        thresholds): ``ct``, ``pet`` ``(V, D, H, W)``, ``zones`` ``(V, 2)``, ``regions``
        each volume's index in REGIONS (`region_indices`). ``floor`` None: the slots;
        else every finding scoring above ``floor``, the strongest ``limit`` per volume
        (the candidates the calibration and the yes/no evidence read)."""
        slots = self.config.findings_slots if floor is None else limit
        return detect(
            dense,
            pet,
            grid,
            slots,
            self.config.slot_threshold if floor is None else floor,
            zones,
            self.config.pet_scaling,
            self.config.pet_vmax,
            self._class_thresholds() if floor is None else None,
            ct,
            regions if self._needs_regions() else None,
            self.candidate_scorer,
            self._place_table(),
        )

    def region_indices(self, studies: int = 1, regions: Sequence[str] | None = None) -> list[int]:
        """Each volume's index in REGIONS when ``studies`` studies of ``regions``
        (default the model's) are flattened, study-major (what `detect`'s scorer needs)."""
        names = list(self.config.regions if regions is None else regions)
        unknown = [r for r in names if r not in REGIONS]
        if unknown:
            raise ValueError(f"unknown regions {unknown}; choose from {list(REGIONS)}")
        return [REGIONS.index(r) for _ in range(studies) for r in names]

    def _class_thresholds(self) -> torch.Tensor | None:
        table = self.config.class_threshold_table()
        return None if table is None else torch.tensor(table)

    def _needs_regions(self) -> bool:
        """Whether `detect` needs each volume's region: the scorer and the places read it."""
        return self.candidate_scorer is not None or self.config.slot_places is not None

    def _place_table(self) -> torch.Tensor | None:
        table = self.config.place_table()
        return None if table is None else torch.tensor(table, dtype=torch.bool)

    def visual_tokens(
        self,
        vision: VisionOutput,
        batch: int,
        with_attention: bool = False,
        teacher: Teacher | None = None,
    ) -> VisualFeatures:
        """The language model's visual tokens from `vision` outputs of ``batch`` studies
        of R regions each: per region L latents, the findings token and the K slots.
        ``teacher``: slots on these lesions instead of the detections (training)."""
        fused, grid = vision.fused, vision.grid
        r = fused.shape[0] // batch
        if with_attention:
            tokens, attn = self.multi_modal_projector(fused, grid, return_attention=True)
        else:
            tokens, attn = self.multi_modal_projector(fused, grid), None
        det = vision.detections
        if isinstance(teacher, Detections):
            det = teacher
        elif teacher is not None and self.findings_slots is not None:
            filed, attrs = teacher
            filed = filed.reshape(-1, *filed.shape[2:])
            det = teacher_detections(
                filed, attrs.reshape(-1, *attrs.shape[2:]), grid, self.head_shape
            )
        extra, rows = [], []
        if det is not None:
            if self.findings_projector is not None:
                extra.append(self.findings_projector(det))
                rows.append(FindingsToken.rows(det))
            if self.findings_slots is not None:
                extra.append(self.findings_slots(det))
                rows.append(det.rows)
        elif self.findings_projector is not None or self.findings_slots is not None:
            raise ValueError("finding slots need the head's detections or teacher slots")
        tokens = torch.cat([tokens, *(x.to(tokens.dtype) for x in extra)], dim=1)
        if attn is not None:
            attn = torch.cat([attn, *(x.to(attn.dtype) for x in rows)], dim=1)
            attn = attn.reshape(batch, r, *attn.shape[1:])
        visual = VisualFeatures(
            tokens=tokens.reshape(batch, r * tokens.shape[1], tokens.shape[2]),
            fused=fused.reshape(batch, r, *fused.shape[1:]),
            resampler_attention=attn,
            grid=tuple(grid),
            image_shape=tuple(vision.image_shape),
            dense=vision.dense,
            detections=det,
        )
        return visual

    def encode_images(
        self,
        ct: torch.Tensor,
        pet: torch.Tensor,
        with_attention: bool = False,
        zones: torch.Tensor | None = None,
        teacher: Teacher | None = None,
        regions: Sequence[str] | None = None,
    ) -> VisualFeatures:
        """``ct``, ``pet``: ``(B, R, D, H, W)`` in [0, 1] → `VisualFeatures`
        (`vision`, then `visual_tokens`)."""
        vision = self.vision(ct, pet, zones, regions)
        return self.visual_tokens(vision, ct.shape[0], with_attention, teacher)

    def diagnose(self, visual: VisualFeatures) -> torch.Tensor | None:
        """Region labels ``(B, R, 29)`` from the findings head's maps (None without a
        findings head)."""
        if visual.diag_logits is None and visual.dense is not None:
            b, r = visual.fused.shape[:2]
            visual.diag_logits = region_logits(visual.dense).reshape(b, r, -1)
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
        embeds = embeds.masked_scatter(mask, visual.tokens.to(embeds.dtype))
        if self.config.slot_pointer:
            embeds = self.point_slots(embeds, input_ids == self.config.finding_token_id, visual)
        return embeds

    def filled_slot_tokens(self, visual: VisualFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """Per study, the tokens of its filled finding slots, regions in prompt order and
        slots in report order, packed to the front: ``(B, R·K, hidden)`` and how many
        are filled ``(B,)``."""
        k = self.config.findings_slots
        b, r = visual.fused.shape[:2]
        if visual.detections is None:
            raise ValueError("slot_pointer needs the finding slots' detections")
        tokens = visual.tokens.reshape(b, r, -1, visual.tokens.shape[-1])[:, :, -k:]
        tokens = tokens.reshape(b, r * k, -1)
        filled = visual.detections.filled.reshape(b, r * k)
        # a stable sort puts the filled slots first, each region's in report order
        order = torch.sort((~filled).to(torch.uint8), dim=1, stable=True).indices
        packed = torch.gather(tokens, 1, order[..., None].expand_as(tokens))
        return packed, filled.sum(dim=1)

    def point_slots(
        self,
        embeds: torch.Tensor,
        markers: torch.Tensor,
        visual: VisualFeatures,
        start: torch.Tensor | None = None,
        packed: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``embeds`` with the j-th ``markers`` position of each sample (counting from
        ``start`` (B,), markers already read) given the j-th filled slot's token
        (`filled_slot_tokens`, or ``packed`` when already taken); a marker past the
        filled slots keeps its own embedding."""
        if not bool(markers.any()):
            return embeds
        packed, n_filled = packed or self.filled_slot_tokens(visual)
        rank = torch.cumsum(markers.long(), dim=1) - 1
        if start is not None:
            rank = rank + start[:, None]
        valid = markers & (rank < n_filled[:, None])
        index = rank.clamp(0, packed.shape[1] - 1)
        add = torch.gather(packed, 1, index[..., None].expand(*index.shape, packed.shape[-1]))
        return embeds + add.to(embeds.dtype) * valid[..., None].to(embeds.dtype)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        ct: torch.Tensor | None = None,
        pet: torch.Tensor | None = None,
        visual: VisualFeatures | None = None,
        output_attentions: bool = False,
        with_diag: bool = True,
        with_language: bool = True,
        zones: torch.Tensor | None = None,
        teacher: Teacher | None = None,
        vision: VisionOutput | None = None,
        offsets: torch.Tensor | None = None,
        **lm_kwargs: object,
    ) -> ViPetOutput:
        """Teacher-forced pass. Give images as ``ct``/``pet``, their `vision` outputs, or
        precomputed ``visual``. ``labels``: -100 outside the answer tokens (the LM loss
        is on answers only). ``with_language=False`` stops after the vision side
        (encoder pretraining). ``zones``, ``teacher``: see `vision`, `visual_tokens`.
        ``offsets`` (V, 3): ``ct``/``pet`` are ``(V, 1, D, h, w)`` crops at these token
        offsets, and only the findings head's maps come back (`dense_findings`; the
        vision phase of training goes through here so DDP sees its forward)."""
        if offsets is not None:
            return ViPetOutput(dense=self.dense_findings(ct, pet, offsets))
        if input_ids is None:
            raise ValueError("input_ids are needed unless offsets ask for the findings maps only")
        if visual is None and vision is None and ct is not None:
            vision = self.vision(ct, pet, zones)
        if visual is None and vision is not None:
            visual = self.visual_tokens(
                vision, input_ids.shape[0], with_attention=output_attentions, teacher=teacher
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

    def attention_token_maps(
        self, output: ViPetOutput, input_ids: torch.Tensor, query_mask: torch.Tensor
    ) -> torch.Tensor:
        """`attention_maps` on the encoder's token grid: ``(B, R, N)`` in [0, 1]."""
        if (
            output.attentions is None
            or output.visual is None
            or output.visual.resampler_attention is None
        ):
            raise ValueError("attention maps need forward(..., output_attentions=True) with images")
        return attention_token_maps(
            output.attentions,
            query_mask,
            input_ids == self.config.image_token_id,
            output.visual.resampler_attention,
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
            visual = self.encode_images(ct, pet, zones=generate_kwargs.pop("zones", None))
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kwargs = {"do_sample": False, "max_new_tokens": 64, "use_cache": True, **generate_kwargs}
        if self.config.slot_pointer and visual is not None:
            return self._generate_pointing(input_ids, attention_mask, visual, **kwargs)
        return self.language_model.generate(
            inputs_embeds=self.embed(input_ids, visual), attention_mask=attention_mask, **kwargs
        )

    def _generate_pointing(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        visual: VisualFeatures,
        max_new_tokens: int = 64,
        eos_token_id: int | list[int] | None = None,
        use_cache: bool = True,
        do_sample: bool = False,
        pad_token_id: int | None = None,
        min_new_tokens: int = 0,
    ) -> torch.Tensor:
        """Greedy decoding that feeds every `<finding>` marker it writes back with the
        next filled slot's token (`point_slots`), as in training. A marker past the last
        filled slot is not allowed: a lesion sentence needs a finding behind it. The
        stop tokens are not allowed before ``min_new_tokens`` (benchmarks fix the length).
        Returns the new ids ``(B, n)``, pad after a sample has stopped."""
        if do_sample:
            raise ValueError("slot_pointer models decode greedily (do_sample=False)")
        stops = torch.tensor(
            []
            if eos_token_id is None
            else [eos_token_id]
            if isinstance(eos_token_id, int)
            else list(eos_token_id),
            dtype=torch.long,
        )
        pad = self.config.text_config.pad_token_id if pad_token_id is None else pad_token_id
        pad = 0 if pad is None else int(pad)
        marker = self.config.finding_token_id
        embed_tokens = self.get_input_embeddings()
        b = input_ids.shape[0]
        slots = self.filled_slot_tokens(visual)  # taken once for the whole decoding
        n_filled = slots[1]
        embeds = self.embed(input_ids, visual)
        written = (input_ids == marker).sum(dim=1)  # markers in the prompt (a chat history)
        position = attention_mask.long().cumsum(-1) - 1
        position = position.clamp_min(0)
        done = torch.zeros(b, dtype=torch.bool)
        new: list[torch.Tensor] = []
        past = None
        step_embeds, step_pos, mask = embeds, position, attention_mask
        all_embeds = embeds
        for step in range(int(max_new_tokens)):
            if use_cache:
                out = self.language_model(
                    inputs_embeds=step_embeds,
                    attention_mask=mask,
                    position_ids=step_pos,
                    cache=past,
                    use_cache=True,
                )
                past = getattr(out, "cache", None) or out.past_key_values
            else:
                out = self.language_model(
                    inputs_embeds=all_embeds,
                    attention_mask=mask,
                    position_ids=position,
                    use_cache=False,
                )
            logits = out.logits[:, -1].float()
            logits[written >= n_filled, marker] = float("-inf")
            if step < min_new_tokens:
                logits[:, stops] = float("-inf")
            token = torch.where(
                done, torch.full_like(done, pad, dtype=torch.long), logits.argmax(-1)
            )
            new.append(token)
            done = done | torch.isin(token, stops)
            if bool(done.all()):
                break
            is_marker = (token == marker) & ~done
            e = self.point_slots(
                embed_tokens(token[:, None]), is_marker[:, None], visual, written, slots
            )
            written = written + is_marker.long()
            next_pos = position[:, -1:] + 1
            step_embeds, step_pos = e, next_pos
            position = torch.cat([position, next_pos], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            if not use_cache:  # only a decoding without cache reads the whole sequence
                all_embeds = torch.cat([all_embeds, e], dim=1)
        return torch.stack(new, dim=1) if new else input_ids.new_zeros(b, 0)

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
