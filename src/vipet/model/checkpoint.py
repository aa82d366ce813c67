"""Saving and loading a whole ViPET-VLM: weights (safetensors), config and tokenizer in
one folder; a pretrained language model or pretrained encoders from local paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vipet.data.tokenizer import (
    FINDING_TOKEN,
    IMAGE_TOKEN,
    add_vipet_tokens,
    load_tokenizer,
    save_tokenizer,
)
from vipet.errors import InputError
from vipet.model.config import ViPetConfig
from vipet.model.encoder3d import LoadReport, load_encoder_weights
from vipet.model.language import load_language_model
from vipet.model.vipet import ViPetModel


def save_vipet(
    model: ViPetModel,
    tokenizer: Any,
    directory: str | Path,
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """``model.save_pretrained`` plus the tokenizer beside it. ``state_dict``: the full
    weights to write instead of the model's own (a sharded model's, gathered by the
    caller), so the folder always holds an ordinary unsharded model."""
    folder = Path(directory)
    model.save_pretrained(folder, state_dict=state_dict)
    save_tokenizer(tokenizer, folder)
    return folder


def load_vipet(directory: str | Path) -> tuple[ViPetModel, Any]:
    """A model and tokenizer saved by `save_vipet` (local folder only)."""
    folder = Path(directory)
    if not (folder / "config.json").is_file():
        raise InputError("no config.json: not a saved ViPET model", folder)
    tokenizer = load_tokenizer(folder)
    try:
        model = ViPetModel.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load the ViPET model ({exc})".splitlines()[0], folder) from exc
    return model, tokenizer


def with_pretrained_language_model(lm_path: str | Path, **config: Any) -> tuple[ViPetModel, Any]:
    """A ViPET-VLM around a pretrained causal LM from a local folder: ViPET's special
    tokens are added to its tokenizer and its embeddings resized to match."""
    lm, tokenizer = load_language_model(lm_path)
    if add_vipet_tokens(tokenizer):
        lm.resize_token_embeddings(len(tokenizer))
    cfg = ViPetConfig(
        text_config=lm.config,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        finding_token_id=tokenizer.convert_tokens_to_ids(FINDING_TOKEN),
        **config,
    )
    return ViPetModel(cfg, language_model=lm), tokenizer


def load_pretrained_encoders(
    model: ViPetModel,
    ct: str | Path | None = None,
    pet: str | Path | None = None,
    prefix: str | None = None,
) -> dict[str, LoadReport]:
    """Load external encoder weights (``.safetensors`` / ``.pt``) into the CT and/or PET
    encoder; returns the missing/unexpected-key report of each."""
    reports = {}
    for name, path in (("ct_encoder", ct), ("pet_encoder", pet)):
        if path is not None:
            reports[name] = load_encoder_weights(getattr(model, name), path, prefix=prefix)
    return reports
