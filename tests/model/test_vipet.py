"""ViPetModel composed from its parts, with tiny configs (seconds on a CPU)."""

from __future__ import annotations

import pytest
import torch

from vipet.model.attention_map import attention_maps
from vipet.model.config import ViPetConfig
from vipet.model.vipet import ViPetModel

IMAGE = 5  # <image> id in these tests
TEXT = {
    "model_type": "llama",
    "vocab_size": 300,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}


def tiny_config(**overrides) -> ViPetConfig:
    kwargs = {
        "text_config": dict(TEXT),
        "ct_encoder": {
            "image_size": [8, 32, 32],
            "patch_size": [4, 8, 8],
            "width": 32,
            "depth": 1,
            "heads": 2,
        },
        "fusion": {"heads": 2},
        "projector": {"num_latents": 4, "layers": 1, "heads": 2},
        "diag_head": {"hidden": 16},
        "image_token_id": IMAGE,
    }
    kwargs.update(overrides)
    return ViPetConfig(**kwargs)


def batch(model: ViPetModel, b: int = 2, r: int = 3, text: int = 8):
    g = torch.Generator().manual_seed(0)
    n = r * model.visual_tokens_per_region
    ids = torch.randint(10, 300, (b, n + text), generator=g)
    ids[:, 1 : 1 + n] = IMAGE
    ct = torch.rand(b, r, 8, 32, 32, generator=g)
    pet = torch.rand(b, r, 8, 32, 32, generator=g)
    return ids, ct, pet


@pytest.fixture(scope="module")
def model() -> ViPetModel:
    torch.manual_seed(0)
    return ViPetModel(tiny_config()).eval()


def test_shapes(model) -> None:
    ids, ct, pet = batch(model)
    out = model(ids, ct=ct, pet=pet, labels=ids)
    assert out.logits.shape == (2, ids.shape[1], 300)
    assert out.diag_logits.shape == (2, 3, 29)
    assert out.visual.tokens.shape == (2, 3 * 4, 32)
    assert torch.isfinite(out.loss)


def test_placeholder_count_mismatch_is_clear(model) -> None:
    ids, ct, pet = batch(model)
    ids[:, 1] = 42  # one placeholder short
    with pytest.raises(ValueError, match="<image> placeholders"):
        model(ids, ct=ct, pet=pet)


def test_save_load_round_trip(model, tmp_path) -> None:
    ids, ct, pet = batch(model)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = ViPetModel.from_pretrained(tmp_path).eval()
    a, b = model(ids, ct=ct, pet=pet), loaded(ids, ct=ct, pet=pet)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.diag_logits, b.diag_logits, rtol=0, atol=1e-6)
    assert loaded.config.fusion == model.config.fusion


def test_greedy_generation_is_deterministic_and_reuses_features(model) -> None:
    ids, ct, pet = batch(model, b=1)
    first = model.generate(ids, ct=ct, pet=pet, max_new_tokens=6)
    visual = model.encode_images(ct, pet)
    again = model.generate(ids, visual=visual, max_new_tokens=6)
    assert first.shape == (1, 6)
    assert torch.equal(first, again)


@pytest.mark.parametrize(
    "fusion", ["cross_attention", "bidirectional", "concat", "sum", "ct_only", "pet_only"]
)
def test_every_fusion_trains(fusion) -> None:
    torch.manual_seed(0)
    m = ViPetModel(tiny_config(fusion={"name": fusion, "heads": 2}))
    ids, ct, pet = batch(m, b=1, r=1)
    out = m(ids, ct=ct, pet=pet, labels=ids)
    (out.loss + out.diag_logits.sum()).backward()
    uses_ct = fusion != "pet_only"
    uses_pet = fusion != "ct_only"
    assert (
        m.ct_encoder.patch_embed.weight.grad is not None
        and m.ct_encoder.patch_embed.weight.grad.abs().sum() > 0
    ) == uses_ct
    assert (
        m.pet_encoder.patch_embed.weight.grad is not None
        and m.pet_encoder.patch_embed.weight.grad.abs().sum() > 0
    ) == uses_pet


def _grads(module: torch.nn.Module) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_gradients_reach_trainable_parts_only() -> None:
    torch.manual_seed(0)
    lora = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    m = ViPetModel(tiny_config(lora=lora, freeze_encoders=True))
    ids, ct, pet = batch(m, b=1, r=1)
    out = m(ids, ct=ct, pet=pet, labels=ids)
    (out.loss + out.diag_logits.sum()).backward()
    assert not _grads(m.ct_encoder) and not _grads(m.pet_encoder)  # frozen
    assert _grads(m.fusion) and _grads(m.multi_modal_projector) and _grads(m.diag_head)
    lora_params = [p for n, p in m.language_model.named_parameters() if "lora_" in n]
    base_params = [p for n, p in m.language_model.named_parameters() if "lora_" not in n]
    assert lora_params and all(p.requires_grad for p in lora_params)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_params)
    assert not any(p.requires_grad for p in base_params)


def test_lora_trainable_parameter_count() -> None:
    m = ViPetModel(tiny_config(lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}))
    total, trainable = m.parameter_counts()["language_model"]
    # Per layer: q_proj 32->32 and v_proj 32->16 (2 heads, 1 KV head of width 16):
    # LoRA A (r x in) + B (out x r) = 4*32 + 32*4 + 4*32 + 16*4 = 448; two layers.
    assert trainable == 2 * 448
    assert total > trainable


def test_attention_map_shape_range(model) -> None:
    ids, ct, pet = batch(model)
    out = model(ids, ct=ct, pet=pet, output_attentions=True)
    query = torch.zeros_like(ids, dtype=torch.bool)
    query[:, -3:] = True
    maps = model.attention_maps(out, ids, query)
    assert maps.shape == (2, 3, 8, 32, 32)
    assert maps.min() >= 0 and maps.max() <= 1
    assert torch.allclose(maps.flatten(2).amax(-1), torch.ones(2, 3))


def test_attention_map_follows_forced_attention() -> None:
    # One region, 4 latents over a 2x4x4 token grid of a (8, 32, 32) image (patch 4x8x8).
    grid, latents, t = (2, 4, 4), 4, 10
    visual = torch.zeros(1, t, dtype=torch.bool)
    visual[0, 1:5] = True
    query = torch.zeros(1, t, dtype=torch.bool)
    query[0, 8:] = True
    att = torch.full((1, 2, t, t), 1e-4)
    att[:, :, 8:, 3] = 1.0  # every head of every answer token looks at visual token 2 (latent 2)
    resampler = torch.full((1, 1, latents, 32), 1.0 / 32)
    resampler[0, 0, 2] = 0.0
    resampler[0, 0, 2, 21] = 1.0  # latent 2 reads encoder token 21 = grid (1, 1, 1)
    maps = attention_maps([att, att], query, visual, resampler, grid, (8, 32, 32), top_heads=0.5)
    peak = maps[0, 0]
    assert peak[4:8, 8:16, 8:16].min() == 1.0  # the voxels of token (1, 1, 1)
    assert peak.sum() == pytest.approx(4 * 8 * 8)  # nowhere else


@pytest.fixture(scope="module")
def tokenizer():
    from vipet.data.tokenizer import synthetic_corpus, train_tokenizer

    return train_tokenizer(synthetic_corpus(20, 0), vocab_size=600)


def test_tiny_preset_with_prompts_save_and_load(tokenizer, tmp_path) -> None:
    from vipet.data.prompts import build_example, build_inference, question_prompt
    from vipet.data.tokenizer import stop_token_ids
    from vipet.model.checkpoint import load_vipet, save_vipet
    from vipet.model.presets import build_model

    torch.manual_seed(0)
    m = build_model("tiny", tokenizer).eval()
    n = m.visual_tokens_per_region
    ex = build_example(
        tokenizer, question_prompt("vi", "Có hạch ở vùng cổ không?", n, region="head_neck"), "Có"
    )
    ids, labels = torch.tensor([ex["input_ids"]]), torch.tensor([ex["labels"]])
    ct, pet = torch.rand(1, 1, 8, 32, 32), torch.rand(1, 1, 8, 32, 32)
    out = m(ids, labels=labels, ct=ct, pet=pet)
    assert torch.isfinite(out.loss)
    save_vipet(m, tokenizer, tmp_path)
    m2, tok2 = load_vipet(tmp_path)
    assert tok2.encode("Hình ảnh hạch") == tokenizer.encode("Hình ảnh hạch")
    # Multi-turn: the study is encoded once and reused for the second question.
    visual = m.encode_images(ct, pet)
    first = build_inference(
        tokenizer, question_prompt("en", "Is the study normal?", n, region="head_neck")
    )
    a1 = m.generate(
        torch.tensor([first["input_ids"]]),
        visual=visual,
        max_new_tokens=4,
        eos_token_id=stop_token_ids(tokenizer),
    )
    second = question_prompt(
        "en",
        "Where is the most avid lesion?",
        n,
        region="head_neck",
        history=[("Is the study normal?", tokenizer.decode(a1[0], skip_special_tokens=True))],
    )
    ids2 = torch.tensor([build_inference(tokenizer, second)["input_ids"]])
    assert int((ids2 == m.config.image_token_id).sum()) == n  # visual block only once
    assert torch.equal(
        m.generate(ids2, visual=visual, max_new_tokens=4),
        m2.eval().generate(ids2, ct=ct, pet=pet, max_new_tokens=4),
    )


def test_pretrained_language_model_from_local_folder(tokenizer, tmp_path) -> None:
    # A stand-in "pretrained" LM and a plain byte-level BPE tokenizer without ViPET's
    # tokens (as a real LLM's would be), saved locally.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    from vipet.model.checkpoint import with_pretrained_language_model

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(["Hình ảnh hạch cổ trái", "SUVmax 8,1"] * 50, trainer)
    plain = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    assert "<image>" not in plain.get_vocab()
    plain_vocab = len(plain)
    lm = AutoModelForCausalLM.from_config(
        LlamaConfig(
            vocab_size=plain_vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    lm.save_pretrained(tmp_path / "lm")
    plain.save_pretrained(tmp_path / "lm")
    model, tok = with_pretrained_language_model(
        tmp_path / "lm",
        ct_encoder={
            "image_size": [8, 32, 32],
            "patch_size": [4, 8, 8],
            "width": 32,
            "depth": 1,
            "heads": 2,
        },
        projector={"num_latents": 4, "layers": 1, "heads": 2},
        fusion={"heads": 2},
    )
    assert len(tok) > plain_vocab and model.get_input_embeddings().weight.shape[0] == len(tok)
    n = model.visual_tokens_per_region
    ids = torch.tensor([[tok.bos_token_id or 1] + [model.config.image_token_id] * n + [7, 8]])
    out = model(ids, ct=torch.rand(1, 1, 8, 32, 32), pet=torch.rand(1, 1, 8, 32, 32))
    assert out.logits.shape[-1] == len(tok)


def test_encoder_weights_load_with_report(tmp_path) -> None:
    from safetensors.torch import save_file

    from vipet.model.checkpoint import load_pretrained_encoders

    torch.manual_seed(0)
    src = ViPetModel(tiny_config())
    state = {f"encoder.{k}": v.contiguous() for k, v in src.ct_encoder.state_dict().items()}
    state["encoder.extra.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "enc.safetensors"))
    dst = ViPetModel(tiny_config())
    reports = load_pretrained_encoders(dst, ct=tmp_path / "enc.safetensors", prefix="encoder.")
    assert (
        reports["ct_encoder"].unexpected == ("extra.weight",) and not reports["ct_encoder"].missing
    )
    x = torch.rand(1, 1, 8, 32, 32)
    torch.testing.assert_close(dst.ct_encoder(x), src.ct_encoder(x))


def test_findings_token_carries_the_head_verdict_and_round_trips(tmp_path) -> None:
    torch.manual_seed(0)
    plain = ViPetModel(tiny_config())
    m = ViPetModel(tiny_config(findings_token=True)).eval()
    assert m.visual_tokens_per_region == plain.visual_tokens_per_region + 1
    ids, ct, pet = batch(m)
    out = m(ids, ct=ct, pet=pet, labels=ids, output_attentions=True)
    assert out.visual.tokens.shape == (2, 3 * 5, 32)
    # the diagnosis the LM reads is the one the findings loss trains
    torch.testing.assert_close(
        out.diag_logits, m.diag_head(out.visual.fused.flatten(0, 1)).view(2, 3, -1)
    )
    maps = m.attention_maps(out, ids, torch.ones_like(ids, dtype=torch.bool))
    assert maps.shape == (2, 3, 8, 32, 32) and float(maps.max()) == pytest.approx(1.0)
    # the last token of each region moves with the head's probabilities, nothing else
    v = m.encode_images(ct, pet)
    with torch.no_grad():
        m.diag_head.mlp[-1].bias += 3.0
    w = m.encode_images(ct, pet)
    per_region = v.tokens.view(2, 3, 5, 32), w.tokens.view(2, 3, 5, 32)
    assert torch.equal(per_region[0][:, :, :4], per_region[1][:, :, :4])
    assert not torch.allclose(per_region[0][:, :, 4], per_region[1][:, :, 4])
    m.save_pretrained(tmp_path)
    again = ViPetModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(again(ids, ct=ct, pet=pet).logits, m(ids, ct=ct, pet=pet).logits)


def test_select_slots_takes_local_maxima_first() -> None:
    from vipet.model.findings_slots import grid_positions, select_slots

    scores = torch.full((1, 2 * 4 * 4), -5.0)
    s = scores.view(1, 2, 4, 4)
    s[0, 0, 0, 0], s[0, 0, 0, 1] = 3.0, 2.5  # one lesion over two neighbouring tokens
    s[0, 1, 3, 3] = 1.0  # a weaker lesion far away
    idx = select_slots(scores, (2, 4, 4), 3)
    # the neighbour of the strongest peak ranks below the weaker, separate peak
    assert idx[0, :2].tolist() == [0, 1 * 16 + 3 * 4 + 3]
    pos = grid_positions((2, 4, 4))
    assert pos.shape == (32, 3) and torch.allclose(pos[0], torch.tensor([0.25, 0.125, 0.125]))
    with pytest.raises(ValueError, match="slots"):
        select_slots(scores, (2, 4, 4), 33)


def test_finding_slots_are_tokens_the_lm_reads() -> None:
    torch.manual_seed(0)
    m = ViPetModel(tiny_config(findings_slots=2, findings_token=True)).eval()
    plain = ViPetModel(tiny_config())
    assert m.visual_tokens_per_region == plain.visual_tokens_per_region + 3
    ids, ct, pet = batch(m)
    out = m(ids, ct=ct, pet=pet, labels=ids, output_attentions=True)
    v = out.visual
    assert v.tokens.shape == (2, 3 * 7, 32) and v.slot_tokens.shape == (2, 3, 2)
    assert v.lesion_classes.shape == (2, 3, 32, 28)
    # a slot's attention row is its own encoder token
    rows = v.resampler_attention[:, :, -2:]  # (B, R, 2, N)
    assert torch.equal(rows.argmax(-1), v.slot_tokens) and torch.all(rows.sum(-1) == 1)
    maps = m.attention_maps(out, ids, torch.ones_like(ids, dtype=torch.bool))
    assert maps.shape == (2, 3, 8, 32, 32)
    # the LM loss reaches the findings head through the slots
    out.loss.backward()
    assert m.findings_slots.mlp[1].weight.grad is not None
    assert m.diag_head.mlp[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="findings_slots"):
        tiny_config(findings_slots=-1)


def test_slots_below_the_threshold_show_the_empty_token() -> None:
    torch.manual_seed(0)
    m = ViPetModel(tiny_config(findings_slots=3, slot_threshold=0.5)).eval()
    _ids, ct, pet = batch(m)
    with torch.no_grad():
        v = m.encode_images(ct, pet)
        prob = torch.sigmoid(torch.gather(v.lesion_scores, 2, v.slot_tokens))
        # a threshold that cuts this random head's slot probabilities in half
        m.findings_slots.threshold = float(prob.median())
        v = m.encode_images(ct, pet, with_attention=True)
    assert torch.equal(v.slot_filled, prob >= prob.median())
    assert v.slot_filled.any() and not v.slot_filled.all()
    slots = v.tokens.reshape(2, 3, -1, 32)[:, :, -3:]  # (B, R, S, hidden)
    empty = m.findings_slots.empty.detach()
    assert torch.allclose(slots[~v.slot_filled], empty.expand(int((~v.slot_filled).sum()), -1))
    assert not torch.isclose(slots[v.slot_filled], empty).all(-1).any()
    # an empty slot's attention row points nowhere; a filled one at its own token
    rows = v.resampler_attention[:, :, -3:]
    assert torch.equal(rows.sum(-1) > 0, v.slot_filled)
    # the threshold is no weight: a saved model can be re-calibrated through its config
    m.findings_slots.threshold = 0.0
    with torch.no_grad():
        assert m.encode_images(ct, pet).slot_filled.all()
    with pytest.raises(ValueError, match="slot_threshold"):
        tiny_config(findings_slots=3, slot_threshold=1.0)


def test_dense_lesion_head_reads_both_stems() -> None:
    enc = {
        "image_size": [8, 32, 32],
        "patch_size": [4, 8, 8],
        "width": 32,
        "depth": 1,
        "heads": 2,
        "stem": "conv",
        "dense_stage": 1,
    }
    m = ViPetModel(tiny_config(ct_encoder=enc, dense_lesion=True))
    _ids, ct, pet = batch(m)
    v = m.encode_images(ct, pet)
    assert v.lesion_dense.shape == (2, 3, 4, 16, 16)
    v.lesion_dense.sum().backward()
    for enc_ in (m.ct_encoder, m.pet_encoder):
        assert enc_.patch_embed[0].weight.grad.abs().sum() > 0
    assert ViPetModel(tiny_config()).encode_images(ct, pet).lesion_dense is None
    with pytest.raises(ValueError, match="dense_lesion"):
        tiny_config(dense_lesion=True)


def test_teacher_slots_sit_on_the_described_lesions() -> None:
    from vipet.model.findings_slots import teacher_slots

    filed = torch.zeros(2, 8, 32, 32, dtype=torch.uint8)
    filed[0, 0:2, 0:3, 6:9] = 1  # x 6, 7 in token (0, 0, 0), x 8 in (0, 0, 1): the first
    filed[0, 5:8, 17:24, 9:12] = 2  # token (1, 2, 1) = 16 + 8 + 1
    filed[0, 4:6, 30:32, 30:32] = 3  # beyond k = 2: dropped
    idx, filled = teacher_slots(filed, (2, 4, 4), k=2)
    assert idx[0].tolist() == [0, 25] and filled.tolist() == [[True, True], [False, False]]
    with pytest.raises(ValueError, match="tile"):
        teacher_slots(filed[:, :, :30], (2, 4, 4), k=2)


def test_teacher_forced_slots_replace_the_detections() -> None:
    from vipet.model.findings_slots import teacher_slots

    torch.manual_seed(0)
    m = ViPetModel(tiny_config(findings_slots=3, slot_threshold=0.5)).eval()
    ids, ct, pet = batch(m)
    filed = torch.zeros(2, 3, 8, 32, 32, dtype=torch.uint8)
    filed[0, 1, 4:8, 8:16, 8:16] = 1
    filed[1, 2, 0:4, 24:32, 0:8] = 1
    filed[1, 2, 4:8, 0:8, 24:32] = 2
    with torch.no_grad():
        v = m.encode_images(ct, pet, with_attention=True, slot_lesions=filed)
        out = m(input_ids=ids, ct=ct, pet=pet, slot_lesions=filed)
    want_idx, want_filled = teacher_slots(filed.flatten(0, 1), (2, 4, 4), 3)
    assert torch.equal(v.slot_filled.flatten(0, 1), want_filled)
    assert torch.equal(v.slot_tokens.flatten(0, 1)[want_filled], want_idx[want_filled])
    assert v.slot_filled.sum() == 3 and v.slot_filled[1, 2, :2].all()
    # the forward pass reads the same slots; empty ones show the empty token
    assert torch.equal(out.visual.slot_filled, v.slot_filled)
    slots = v.tokens.reshape(2, 3, -1, 32)[:, :, -3:]
    empty = m.findings_slots.empty.detach()
    assert torch.allclose(slots[~v.slot_filled], empty.expand(int((~v.slot_filled).sum()), -1))
    # a forced slot's attention row points at its lesion's token
    rows = v.resampler_attention[:, :, -3:]
    assert int(rows[1, 2, 0].argmax()) == int(want_idx[5, 0])
