"""The model of a training run, as its config's stage asks for it.

Three ways in, in priority order:

- ``init_from`` — a model saved by an earlier stage (`save_vipet` folder); its tokenizer
  comes with it, so the stages of one pipeline share a vocabulary;
- ``lm_path`` — a pretrained causal LM from a local folder (GPU presets), wrapped with
  the preset's vision parts (`with_pretrained_language_model`);
- otherwise the preset built from scratch for the run's tokenizer.

Then the stage is applied: the fusion may be swapped (ablations), LoRA adapters added to
the language model, and every part not named in ``trainable`` frozen. The frozen state
is not saved with the weights: each stage's config says what it trains.
"""

from __future__ import annotations

import copy
from typing import Any

from vipet.model.checkpoint import load_vipet, with_pretrained_language_model
from vipet.model.language import apply_lora
from vipet.model.presets import PRESETS, build_model
from vipet.model.vipet import PARTS, ViPetModel
from vipet.train.config import TrainConfig


def _vision_overrides(cfg: TrainConfig) -> dict[str, Any]:
    if cfg.fusion is None:
        return {}
    fusion = dict(PRESETS[cfg.model]["fusion"])
    fusion["name"] = cfg.fusion
    return {"fusion": fusion}


def build_for_training(cfg: TrainConfig, tokenizer: Any) -> tuple[ViPetModel, Any]:
    """The model and tokenizer ``cfg`` trains (see the module docstring)."""
    if cfg.init_from is not None:
        model, tokenizer = load_vipet(cfg.init_from)
        if cfg.fusion is not None and model.config.fusion["name"] != cfg.fusion:
            raise ValueError(
                f"fusion={cfg.fusion!r} differs from the {model.config.fusion['name']!r} "
                f"fusion of init_from {cfg.init_from}"
            )
    elif cfg.lm_path is not None:
        vision = {k: copy.deepcopy(v) for k, v in PRESETS[cfg.model].items() if k != "text"}
        vision.update(_vision_overrides(cfg))
        model, tokenizer = with_pretrained_language_model(cfg.lm_path, **vision)
    else:
        model = build_model(cfg.model, tokenizer, **_vision_overrides(cfg))
    if cfg.lora is not None and not model.config.lora:
        model.language_model = apply_lora(model.language_model, cfg.lora)
        model.config.lora = cfg.lora.to_dict()  # saved models rebuild the adapters
    apply_trainable(model, cfg.trainable)
    return model, tokenizer


def apply_trainable(model: ViPetModel, trainable: tuple[str, ...]) -> None:
    """Freeze every part not in ``trainable`` ("all" keeps everything as built: a LoRA
    language model then trains its adapters only)."""
    if "all" in trainable:
        return
    for name in PARTS:
        part = getattr(model, name)
        if name not in trainable and part is not None:  # findings_projector is optional
            part.requires_grad_(False)


def trainable_summary(model: ViPetModel) -> str:
    """One line: trainable / total parameters per part that trains."""
    counts = model.parameter_counts()
    parts = [f"{k} {t:,}/{n:,}" for k, (n, t) in counts.items() if t]
    total = sum(t for _, t in counts.values())
    return f"training {total:,} parameters: " + ", ".join(parts)
