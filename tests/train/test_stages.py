"""The three training stages of configs/stages chained on the tiny preset: what each
stage trains, what it leaves untouched, and the contrastive loss path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vipet.config import load_config
from vipet.data.tokenizer import synthetic_corpus
from vipet.errors import ConfigError
from vipet.model.checkpoint import load_vipet
from vipet.train.build import build_for_training
from vipet.train.config import TrainConfig
from vipet.train.trainer import fit

STAGES = Path(__file__).parents[2] / "configs" / "stages"


def _stage(name: str, out: Path, *extra: str) -> TrainConfig:
    tiny = [
        "model=tiny",
        f"out_dir={out}",
        "optim.max_steps=3",
        "optim.warmup_steps=1",
        "optim.batch_size=2",
        "optim.grad_accum=1",
        "data.langs=[en]",
        "data.max_length=256",
        "eval_every=0",
        "checkpoint_every=0",
        "log_every=1",
    ]
    return load_config(TrainConfig, STAGES / name, [*tiny, *extra])


def _params(folder: Path) -> dict[str, torch.Tensor]:
    model, _ = load_vipet(folder)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _changed(before: dict, after: dict, prefix: str) -> bool:
    keys = [k for k in before if k.startswith(prefix)]
    assert keys, prefix
    return any(not torch.equal(before[k], after[k]) for k in keys)


def test_three_stages_chain_and_train_only_their_parts(tok, data, tmp_path) -> None:
    s1, s2, s3 = tmp_path / "s1", tmp_path / "s2", tmp_path / "s3"
    first = fit(_stage("1-encoders.yaml", s1), tok, *data)
    assert "loss/contrastive" in first["train"] and "loss/lm" not in first["train"]
    w1 = _params(s1 / "model")

    fit(_stage("2-align.yaml", s2, f"init_from={s1 / 'model'}"), None, *data)
    w2 = _params(s2 / "model")
    assert _changed(w1, w2, "multi_modal_projector.")
    for frozen in ("ct_encoder.", "pet_encoder.", "fusion.", "diag_head.", "language_model."):
        assert not _changed(w1, w2, frozen), frozen

    third = fit(_stage("3-instruct.yaml", s3, f"init_from={s2 / 'model'}"), None, *data)
    assert {"loss/lm", "loss/diag", "loss/align"} <= set(third["train"])
    model, _ = load_vipet(s3 / "model")
    assert model.config.lora is not None  # the adapters are rebuilt on load
    w3 = {k: v for k, v in model.state_dict().items()}
    lora = [k for k in w3 if "lora_" in k]
    assert lora and any(w3[k].abs().sum() > 0 for k in lora if "lora_B" in k)
    for frozen in ("ct_encoder.", "pet_encoder."):
        assert not _changed(w2, w3, frozen), frozen
    assert _changed(w2, w3, "fusion.") and _changed(w2, w3, "diag_head.")
    # the base weights of the language model stay as stage 2 left them
    base = [k for k in w2 if k.startswith("language_model.") and "embed_tokens" in k]
    assert base
    for k in base:
        k3 = next(x for x in w3 if x.endswith(k.split("language_model.")[1]) and "lora" not in x)
        assert torch.equal(w2[k], w3[k3])


def test_stage_freezes_everything_but_trainable(tok) -> None:
    cfg = TrainConfig(model="tiny", trainable=("multi_modal_projector",))
    model, _ = build_for_training(cfg, tok)
    counts = model.parameter_counts()
    assert counts["multi_modal_projector"][1] == counts["multi_modal_projector"][0] > 0
    assert all(t == 0 for k, (_, t) in counts.items() if k != "multi_modal_projector")


def test_fusion_override_builds_that_fusion(tok) -> None:
    model, _ = build_for_training(TrainConfig(model="tiny", fusion="concat"), tok)
    assert model.config.fusion["name"] == "concat"


@pytest.mark.parametrize(
    "override", ["trainable=[eyes]", "trainable=[]", "fusion=nope", "lora.rank=4"]
)
def test_bad_stage_settings_are_config_errors(override) -> None:
    with pytest.raises(ConfigError):
        load_config(TrainConfig, STAGES / "3-instruct.yaml", [override])


@pytest.fixture(scope="module")
def local_lm(tmp_path_factory) -> Path:
    """A stand-in pretrained causal LM (Qwen2 architecture) with its own tokenizer and no
    ViPET tokens, saved in a local folder as a downloaded model would be."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config

    folder = tmp_path_factory.mktemp("qwen_like")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        list(synthetic_corpus(10, 1)),
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    lm = AutoModelForCausalLM.from_config(
        Qwen2Config(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    lm.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_gpu_preset_yaml_builds_around_a_local_pretrained_lm(local_lm) -> None:
    root = STAGES.parent
    cfg = load_config(TrainConfig, root / "gpu-qwen2.5-1.5b.yaml", [f"lm_path={local_lm}"])
    model, tok = build_for_training(cfg, None)
    assert "<image>" in tok.get_vocab() and tok.pad_token_id is not None
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert model.config.lora is not None and model.config.fusion["width"] == 384
    lm = dict(model.language_model.named_parameters())
    assert all(p.requires_grad for n, p in lm.items() if "lora_" in n)
    assert not any(p.requires_grad for n, p in lm.items() if "layers.0.mlp.up_proj.base" in n)
    assert model.parameter_counts()["ct_encoder"][1] > 0
    seven = load_config(TrainConfig, root / "gpu-qwen2.5-7b.yaml", [f"lm_path={local_lm}"])
    assert seven.strategy == "fsdp" and seven.precision == "bf16"


def test_gpu_preset_without_lm_path_says_so(tok) -> None:
    with pytest.raises(ValueError, match="lm_path"):
        build_for_training(TrainConfig(model="gpu-base"), tok)
