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

from vipet.model.candidate_scorer import ScorerConfig
from vipet.model.diag_head import AVIDITY, FINE_NAMES, DiagHeadConfig
from vipet.model.encoder3d import EncoderConfig
from vipet.model.fusion import FUSIONS, FusionConfig
from vipet.model.projector import ProjectorConfig
from vipet.model.yes_no_head import YesNoConfig
from vipet.reports.schema import LESION_TYPES, REGIONS

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
    """Append one token per region that summarises the findings head's detections
    (`vipet.model.findings_slots.FindingsToken`): which types, how many, or none — the
    region's verdict at a glance for the language model."""
    findings_slots: int = 0
    """Append this many finding slots per region (`vipet.model.findings_slots`): the
    findings head's detections, one token per lesion, in report order."""
    slot_pointer: bool = False
    """Point the finding slots into the text as well: each `<finding>` marker the
    language model reads or writes (one opens every lesion sentence of a region's
    findings) gets the next filled slot's token added to its embedding, so the sentence
    after it is written beside the slot it describes, not at a distance of a whole
    prompt (`ViPetModel.embed`, `ViPetModel.generate`; docs/training.md)."""
    finding_token_id: int = -1
    """Id of the `<finding>` marker in the tokenizer (-1: it has none)."""
    slot_threshold: float = 0.3
    """A local maximum of the head's lesion-centre heatmap above this is a detection
    (fills a slot). It is no weight: a trained model's can be re-calibrated (its
    config.json) without retraining."""
    slot_thresholds: dict | None = None
    """Per-class thresholds in place of ``slot_threshold``, keyed ``"<type>/avid"`` or
    ``"<type>/not_avid"`` (the class the head reads at the peak); classes not named keep
    ``slot_threshold``. Set by `vipet calibrate` on the validation split; no weight either."""
    slot_places: dict | None = None
    """Per region volume and lesion type, the fine locations (`FINE_LOCATIONS` names) a
    detection of that type in that region's volume may be placed at: the head's
    likeliest location among them (`vipet.model.findings_slots.detect`), keyed
    ``{region: {type: [location, ...]}}``. The head reads type and place from separate
    maps, so on its own it may pair them as no report does (a node "in the upper lobe",
    a paratracheal node in the abdomen's volume): a slot the language model has never
    seen written, which it rewrites as some other finding. A type not named for a region
    is placed anywhere. Set by `vipet calibrate --fit-places` from the training split's
    lesions (`vipet.inference.places`); no weight."""
    candidate_scorer: dict | None = None
    """Settings of the fitted second look at every heatmap peak
    (`vipet.model.candidate_scorer.ScorerConfig`); None: peaks are ranked by their heat.
    Set by `vipet.inference.rescore` when it fits the scorer on a trained model."""
    yes_no_head: dict | None = None
    """Settings of the fitted yes/no head (`vipet.model.yes_no_head.YesNoConfig`); None:
    the LM's own yes or no stands. Set by `vipet.inference.yes_no` after training."""
    pet_scaling: str = "log"
    """How the preprocessing scaled PET to [0, 1] ("log" or "linear", `pet.scaling`), so
    a detection's SUVmax can be read back from the model's input."""
    pet_vmax: float = 30.0
    """The SUV the preprocessing mapped to 1.0 (`pet.vmax`)."""
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
        ct, pet = self.ct_encoder_settings, self.pet_encoder_settings
        if self.has_findings_head:
            if pet.stem != "pyramid" or tuple(pet.pyramid_channels) != tuple(ct.pyramid_channels):
                raise ValueError(
                    "the findings head reads both encoders' pyramids: give ct_encoder and "
                    "pet_encoder the same pyramid stem"
                )
            self.diag_head = DiagHeadConfig.from_dict(
                {
                    **(self.diag_head or {}),
                    "width": width,
                    "pyramid_channels": list(ct.pyramid_channels),
                    "modalities": len(FUSIONS[self.fusion["name"]].modalities),
                }
            ).to_dict()
        elif self.findings_token or self.findings_slots:
            raise ValueError(
                "findings_token and findings_slots need the findings head, which needs "
                'encoders with stem: "pyramid"'
            )
        else:
            self.diag_head = None
        if self.regions is None:
            self.regions = ["head_neck", "chest", "abdomen_pelvis"]
        if (
            isinstance(self.findings_slots, bool)
            or not isinstance(self.findings_slots, int)
            or (self.findings_slots < 0)
        ):
            raise ValueError(f"findings_slots must be an integer >= 0, got {self.findings_slots!r}")
        if self.findings_token and not self.findings_slots:
            # the token summarises the slots' detections: without slots nothing is detected
            raise ValueError(
                "findings_token summarises the finding slots: it needs findings_slots > 0"
            )
        if self.slot_pointer and (not self.findings_slots or self.finding_token_id < 0):
            raise ValueError(
                "slot_pointer needs finding slots (findings_slots > 0) and a tokenizer with "
                "the <finding> marker (finding_token_id)"
            )
        if not 0.0 < self.slot_threshold < 1.0:
            raise ValueError(f"slot_threshold must be in (0, 1), got {self.slot_threshold!r}")
        self.class_threshold_table()  # refuses unknown classes and values outside (0, 1]
        self.place_table()  # refuses unknown types and locations
        if self.candidate_scorer is not None:
            if not self.findings_slots:
                raise ValueError(
                    "candidate_scorer rescores the finding slots' peaks: set findings_slots"
                )
            self.candidate_scorer = ScorerConfig.from_dict(self.candidate_scorer).to_dict()
        if self.yes_no_head is not None:
            self.yes_no_head = YesNoConfig.from_dict(self.yes_no_head).to_dict()
        if self.pet_scaling not in ("log", "linear") or not self.pet_vmax > 0:
            raise ValueError(
                f"pet_scaling must be 'log' or 'linear' and pet_vmax > 0, got "
                f"{self.pet_scaling!r}, {self.pet_vmax!r}"
            )
        if not 0.0 < self.attention_top_heads <= 1.0:
            raise ValueError(
                f"attention_top_heads must be in (0, 1], got {self.attention_top_heads}"
            )

    def class_threshold_table(self) -> list[list[float]] | None:
        """``slot_thresholds`` as a (len(LESION_TYPES), 2) table (avid, not avid), the
        other classes at ``slot_threshold``; None when there are none."""
        if not self.slot_thresholds:
            return None
        table = [[self.slot_threshold] * len(AVIDITY) for _ in LESION_TYPES]
        for key, value in self.slot_thresholds.items():
            kind, _, avidity = str(key).partition("/")
            if kind not in LESION_TYPES or avidity not in AVIDITY:
                raise ValueError(
                    f"slot_thresholds: unknown class {key!r}; write '<type>/avid' or "
                    f"'<type>/not_avid' with a type from {list(LESION_TYPES)}"
                )
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ValueError(f"slot_thresholds[{key!r}] must be in (0, 1], got {value!r}")
            table[LESION_TYPES.index(kind)][AVIDITY.index(avidity)] = float(value)
        return table

    def place_table(self) -> list[list[list[bool]]] | None:
        """``slot_places`` as a (len(REGIONS), len(LESION_TYPES), len(FINE_NAMES)) table of
        allowed places (a region or type not named: all of them); None when there is none."""
        if not self.slot_places:
            return None
        table = [[[True] * len(FINE_NAMES) for _ in LESION_TYPES] for _ in REGIONS]
        for region, kinds in self.slot_places.items():
            if region not in REGIONS or not isinstance(kinds, dict):
                raise ValueError(
                    f"slot_places: {region!r} is not a region with a table of types; write "
                    f"{{region: {{type: [locations]}}}} with a region from {list(REGIONS)}"
                )
            for kind, places in kinds.items():
                where = f"slot_places[{region!r}][{kind!r}]"
                if kind not in LESION_TYPES:
                    raise ValueError(
                        f"{where}: unknown lesion type; choose from {list(LESION_TYPES)}"
                    )
                if isinstance(places, str) or not isinstance(places, (list, tuple)) or not places:
                    raise ValueError(
                        f"{where} must be a non-empty list of locations, got {places!r}"
                    )
                unknown = [p for p in places if p not in FINE_NAMES]
                if unknown:
                    raise ValueError(
                        f"{where}: unknown locations {unknown}; choose from {list(FINE_NAMES)}"
                    )
                table[REGIONS.index(region)][LESION_TYPES.index(kind)] = [
                    name in places for name in FINE_NAMES
                ]
        return table

    @property
    def yes_no_head_settings(self) -> YesNoConfig | None:
        return None if self.yes_no_head is None else YesNoConfig.from_dict(self.yes_no_head)

    @property
    def candidate_scorer_settings(self) -> ScorerConfig | None:
        return (
            None if self.candidate_scorer is None else ScorerConfig.from_dict(self.candidate_scorer)
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
    def has_findings_head(self) -> bool:
        """Whether the model has the dense findings head (encoders with a pyramid stem)."""
        return self.ct_encoder_settings.stem == "pyramid"

    @property
    def diag_head_settings(self) -> DiagHeadConfig | None:
        return None if self.diag_head is None else DiagHeadConfig.from_dict(self.diag_head)
