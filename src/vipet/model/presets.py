"""Named model sizes. ``tiny`` is for tests; ``cpu-small`` is the default that trains on a
laptop CPU (issue 6); GPU presets with real language models load their LM from a local
path (`vipet.model.language.load_language_model`)."""

from __future__ import annotations

import copy
from typing import Any

from vipet.data.tokenizer import FINDING_TOKEN, IMAGE_TOKEN
from vipet.model.config import ViPetConfig
from vipet.model.vipet import ViPetModel

# CT is preprocessed with the HU window [-1000, 1000] -> [0, 1]: (0.425, 0.65) re-windows
# it to the soft-tissue window [-150, 300] HU (`EncoderConfig.windows`).
_SOFT_TISSUE = [[0.425, 0.65]]


def _pyramid(channels: list[int], **kw: Any) -> dict[str, Any]:
    """Encoder settings with a pyramid stem of ``channels`` (strides (1,2,2), then
    (2,2,2) for every further stage)."""
    strides = [[1, 2, 2]] + [[2, 2, 2]] * (len(channels) - 1)
    return {"stem": "pyramid", "pyramid_channels": channels, "pyramid_strides": strides, **kw}


def _encoders(channels: list[int], tophat: list[int], **kw: Any) -> dict[str, Any]:
    """The CT and PET encoders of a preset: the same pyramid ViT, CT with the extra
    soft-tissue window channel."""
    return {
        "ct_encoder": _pyramid(channels, windows=_SOFT_TISSUE, tophat=tophat, **kw),
        "pet_encoder": _pyramid(channels, tophat=tophat, **kw),
    }


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        **_encoders(
            [8, 16],
            tophat=[3, 5, 5],
            image_size=[8, 32, 32],
            patch_size=[4, 8, 8],
            width=32,
            depth=1,
            heads=2,
        ),
        "fusion": {"name": "cross_attention", "heads": 2},
        "projector": {"kind": "perceiver", "num_latents": 4, "layers": 1, "heads": 2},
        "diag_head": {"decoder_channels": [8, 16]},
        "findings_token": True,
        "findings_slots": 4,
        "text": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
        },
    },
    # The default. 64 x 96 x 96 voxels per region (about 5.5 mm slices, 3.5 mm pixels):
    # on 11 mm slices (32 deep) small non-avid nodes lose their CT contrast.
    "cpu-small": {
        **_encoders(
            [16, 32, 64],
            tophat=[3, 11, 11],
            image_size=[64, 96, 96],
            patch_size=[8, 16, 16],
            width=192,
            depth=2,
            heads=4,
        ),
        "fusion": {"name": "cross_attention", "heads": 4},
        "projector": {"kind": "perceiver", "num_latents": 32, "layers": 2, "heads": 4},
        "diag_head": {"decoder_channels": [16, 32, 64]},
        "findings_token": True,
        "findings_slots": 8,
        "slot_threshold": 0.3,
        "slot_pointer": True,
        "text": {
            "hidden_size": 256,
            "intermediate_size": 768,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
        },
    },
    # GPU presets: the vision side only; the language model is a pretrained one from a
    # local folder (TrainConfig.lm_path), e.g. Qwen2.5-1.5B-Instruct or a 7B model,
    # trained with LoRA. Sized for one 24-80 GB card per process (see configs/gpu-*.yaml).
    "gpu-base": {
        **_encoders(
            [32, 64, 128],
            tophat=[3, 11, 11],
            image_size=[64, 128, 128],
            patch_size=[8, 16, 16],
            width=384,
            depth=8,
            heads=6,
        ),
        "fusion": {"name": "cross_attention", "heads": 6},
        "projector": {"kind": "perceiver", "num_latents": 64, "layers": 2, "heads": 8},
        "diag_head": {"decoder_channels": [32, 64, 128]},
        "findings_token": True,
        "findings_slots": 8,
    },
    "gpu-large": {
        **_encoders(
            [32, 64, 128],
            tophat=[3, 13, 13],
            image_size=[96, 160, 160],
            patch_size=[8, 16, 16],
            width=512,
            depth=12,
            heads=8,
        ),
        "fusion": {"name": "cross_attention", "heads": 8},
        "projector": {"kind": "perceiver", "num_latents": 96, "layers": 3, "heads": 8},
        "diag_head": {"decoder_channels": [32, 64, 128]},
        "findings_token": True,
        "findings_slots": 8,
    },
}


def model_grid(preset: str) -> tuple[int, int, int]:
    """The region grid ``(D, H, W)`` a preset's encoders take: the grid to cache samples on."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose from {sorted(PRESETS)}")
    d, h, w = (int(v) for v in PRESETS[preset]["ct_encoder"]["image_size"])
    return (d, h, w)


def model_config(preset: str, tokenizer: Any, **overrides: Any) -> ViPetConfig:
    """The `ViPetConfig` of a preset, sized to ``tokenizer`` (vocabulary, <image> id)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose from {sorted(PRESETS)}")
    p = PRESETS[preset]
    if "text" not in p:
        raise ValueError(
            f"model preset {preset!r} takes a pretrained language model: set lm_path to its "
            "local folder"
        )
    text = {
        "model_type": "llama",
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        **p["text"],
    }
    kwargs = {
        **{k: copy.deepcopy(v) for k, v in p.items() if k != "text"},
        "text_config": text,
        "image_token_id": tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        # a tokenizer saved before the marker existed has none (-1)
        "finding_token_id": tokenizer.get_vocab().get(FINDING_TOKEN, -1),
        **overrides,
    }
    return ViPetConfig(**kwargs)


def build_model(preset: str, tokenizer: Any, **overrides: Any) -> ViPetModel:
    """A randomly initialised ViPET-VLM of ``preset`` for ``tokenizer``."""
    return ViPetModel(model_config(preset, tokenizer, **overrides))
