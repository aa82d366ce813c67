"""`ViPetConfig`: one transformers config for the whole ViPET-VLM.

The language model's config is a real sub-config (``text_config``, any causal LM type
that `AutoConfig` knows), so `save_pretrained` / `from_pretrained` round-trip it. The
vision parts keep their own typed dataclass configs (`EncoderConfig`, `FusionConfig`,
`ProjectorConfig`, `DiagHeadConfig`); the transformers config stores them as plain
dicts and hands typed objects back through properties, so a typo in a saved config is
an error that lists the valid keys, never a silently ignored field.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from vipet.model.diag_head import DiagHeadConfig
from vipet.model.encoder3d import EncoderConfig
from vipet.model.fusion import FusionConfig
from vipet.model.projector import ProjectorConfig

# A tiny Llama-style decoder: trains on a laptop CPU (see configs/ for real LMs).
TINY_TEXT_CONFIG: dict[str, Any] = {
    "model_type": "llama",
    "vocab_size": 4000,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,  # untied: safetensors save of a composite model stays simple
}


class ViPetConfig(PreTrainedConfig):
    """Configuration of `ViPetModel` (see module doc for how sub-configs are stored)."""

    model_type = "vipet"
    sub_configs_defaults = {  # noqa: RUF012  (transformers reads this class attribute)
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")
    }

    text_config: dict | PreTrainedConfig | None = None
    ct_encoder: dict | None = None
    pet_encoder: dict | None = None
    fusion: dict | None = None
    projector: dict | None = None
    diag_head: dict | None = None
    image_token_id: int = 4
    """Id of the ``<image>`` placeholder token in the tokenizer."""
    regions: list | None = None
    """Body regions the model sees per study, in prompt order."""
    lora: dict | None = None
    """peft LoRA settings (r, alpha, dropout, target_modules) or None for full weights."""
    freeze_encoders: bool = False
    findings_token: bool = False
    """Append one token per region made from the findings head's probabilities to the
    region's visual tokens (diagnosis-driven prompting): the language model then reads
    the head's verdict directly instead of having to rediscover it in the latents."""
    findings_slots: int = 0
    """Append this many finding slots per region (`vipet.model.findings_slots`): the
    findings head's strongest detections, each one token the LM can describe."""
    dense_lesion: bool = False
    """A voxel-level lesion head on the encoders' dense stem features (`dense_stage`):
    supervised by the lesion mask (`vipet.model.dense_head`), it teaches the stems what a
    lesion looks like locally, thousands of labelled voxels per volume instead of a
    handful of labelled tokens."""
    slot_threshold: float = 0.0
    """A slot whose lesion probability is below this shows the LM a learned "empty"
    token instead of its detection, so the number of filled slots is the number of
    findings the head stands behind (0: every slot filled). The threshold is no weight: a
    trained model's can be re-calibrated (its config.json) without retraining."""
    attention_top_heads: float = 0.25
    """Share of (layer, head) pairs, most visually attentive first, kept for attention maps."""
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        if self.text_config is None:
            self.text_config = dict(TINY_TEXT_CONFIG)
        super().__post_init__(**kwargs)
        self.ct_encoder = EncoderConfig.from_dict(self.ct_encoder or {}).to_dict()
        self.pet_encoder = EncoderConfig.from_dict(self.pet_encoder or self.ct_encoder).to_dict()
        width = self.ct_encoder["width"]
        if self.pet_encoder["width"] != width:
            raise ValueError(
                "ct_encoder and pet_encoder must have the same width (fusion mixes them)"
            )
        self.fusion = FusionConfig.from_dict({"width": width, **(self.fusion or {})}).to_dict()
        out_width = self.text_config.hidden_size
        self.projector = ProjectorConfig.from_dict(
            {"width": width, **(self.projector or {}), "out_width": out_width}
        ).to_dict()
        self.diag_head = DiagHeadConfig.from_dict(
            {"width": width, **(self.diag_head or {})}
        ).to_dict()
        if self.regions is None:
            self.regions = ["head_neck", "chest", "abdomen_pelvis"]
        if (
            isinstance(self.findings_slots, bool)
            or not isinstance(self.findings_slots, int)
            or (self.findings_slots < 0)
        ):
            raise ValueError(f"findings_slots must be an integer >= 0, got {self.findings_slots!r}")
        if self.dense_lesion and not (
            self.ct_encoder["dense_stage"] and self.pet_encoder["dense_stage"]
        ):
            raise ValueError("dense_lesion needs dense_stage > 0 in both encoder configs")
        if not 0.0 <= self.slot_threshold < 1.0:
            raise ValueError(f"slot_threshold must be in [0, 1), got {self.slot_threshold!r}")
        if not 0.0 < self.attention_top_heads <= 1.0:
            raise ValueError(
                f"attention_top_heads must be in (0, 1], got {self.attention_top_heads}"
            )

    # Typed views of the stored dicts (not "*_config": transformers reserves fusion_config).
    @property
    def ct_encoder_settings(self) -> EncoderConfig:
        return EncoderConfig.from_dict(self.ct_encoder)

    @property
    def pet_encoder_settings(self) -> EncoderConfig:
        return EncoderConfig.from_dict(self.pet_encoder)

    @property
    def fusion_settings(self) -> FusionConfig:
        return FusionConfig.from_dict(self.fusion)

    @property
    def projector_settings(self) -> ProjectorConfig:
        return ProjectorConfig.from_dict(self.projector)

    @property
    def diag_head_settings(self) -> DiagHeadConfig:
        return DiagHeadConfig.from_dict(self.diag_head)
