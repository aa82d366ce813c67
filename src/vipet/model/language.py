"""The language model: any Hugging Face causal LM, built tiny from a config or loaded
from a local path, optionally wrapped with LoRA through peft."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedConfig, PreTrainedModel

from vipet.errors import InputError


@dataclass(frozen=True)
class LoraSettings:
    """peft LoRA on the language model (the vision side trains in full or stays frozen)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Module names inside the LM to adapt (Llama/Qwen/Mistral naming)."""
    modules_to_save: tuple[str, ...] = ()
    """Modules trained in full beside the adapters, e.g. ("embed_tokens", "lm_head") after
    new tokens were added."""

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1 or not 0.0 <= self.dropout < 1.0:
            raise ValueError("lora needs r >= 1, alpha >= 1 and 0 <= dropout < 1")
        if not self.target_modules:
            raise ValueError("lora.target_modules must name at least one module")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoraSettings:
        valid = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ValueError(f"unknown lora key {unknown[0]!r}; valid keys: {sorted(valid)}")
        d = dict(data)
        for key in ("target_modules", "modules_to_save"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def build_language_model(
    text_config: PreTrainedConfig, attn_implementation: str = "eager"
) -> PreTrainedModel:
    """A randomly initialised causal LM from ``text_config``. "eager" attention returns
    attention weights (needed for attention maps); "sdpa" is faster when they are not."""
    return AutoModelForCausalLM.from_config(text_config, attn_implementation=attn_implementation)


def load_language_model(
    path: str | Path, attn_implementation: str = "eager"
) -> tuple[PreTrainedModel, Any]:
    """A pretrained causal LM and its tokenizer from a local folder (never the hub)."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise InputError("no config.json: not a local Hugging Face model folder", folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder, local_files_only=True, attn_implementation=attn_implementation
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load the language model ({exc})".splitlines()[0], folder) from exc
    return model, tokenizer


def apply_lora(model: PreTrainedModel, settings: LoraSettings) -> Any:
    """``model`` wrapped by peft with LoRA adapters; base weights frozen."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        modules_to_save=list(settings.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
