"""ViPetModel composed from its parts, with tiny configs (seconds on a CPU)."""

from __future__ import annotations

import pytest
import torch

from vipet.model.attention_map import attention_maps, tokens_to_voxels
from vipet.model.config import ViPetConfig
from vipet.model.diag_head import findings_losses, heat_targets, lesion_table, region_logits
from vipet.model.findings_slots import FINE_NAMES, TEACHER_FIELDS, teacher_detections
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
LINEAR = {"image_size": [8, 32, 32], "patch_size": [4, 8, 8], "width": 32, "depth": 1, "heads": 2}
PYRAMID = {
    **LINEAR,
    "stem": "pyramid",
    "pyramid_channels": [4, 8],
    "pyramid_strides": [[1, 2, 2], [2, 2, 2]],
    "tophat": [3, 5, 5],
}
HEAD_SHAPE = (8, 16, 16)  # the findings head's grid: the pyramid's first level
GRID = (2, 4, 4)


def tiny_config(**overrides) -> ViPetConfig:
    kwargs = {
        "text_config": dict(TEXT),
        "ct_encoder": dict(PYRAMID),
        "fusion": {"heads": 2},
        "projector": {"num_latents": 4, "layers": 1, "heads": 2},
        "diag_head": {"decoder_channels": [4, 8]},
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
    assert out.visual.dense.heat.shape == (6, *HEAD_SHAPE) and model.head_shape == HEAD_SHAPE
    assert out.visual.detections is None  # no slots, no findings token: nothing to detect
    assert torch.isfinite(out.loss) and torch.isfinite(out.diag_logits).all()
    # the region labels are the findings head's, read off its maps
    torch.testing.assert_close(out.diag_logits, region_logits(out.visual.dense).view(2, 3, -1))


def test_linear_stem_has_no_findings_head() -> None:
    m = ViPetModel(tiny_config(ct_encoder=dict(LINEAR))).eval()
    assert m.diag_head is None and "diag_head" not in m.parameter_counts()
    ids, ct, pet = batch(m, b=1, r=1)
    out = m(ids, ct=ct, pet=pet)
    assert out.diag_logits is None and out.visual.dense is None
    with pytest.raises(ValueError, match="no findings head"):
        m.dense_findings(ct[:, :1], pet[:, :1])
    with pytest.raises(ValueError, match="pyramid"):
        tiny_config(ct_encoder=dict(LINEAR), findings_slots=2)
    with pytest.raises(ValueError, match="same pyramid stem"):
        tiny_config(pet_encoder=dict(LINEAR))


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
    torch.testing.assert_close(a.visual.dense.heat, b.visual.dense.heat, rtol=0, atol=1e-6)
    assert loaded.config.fusion == model.config.fusion
    assert loaded.config.ct_encoder_settings == model.config.ct_encoder_settings
    assert loaded.config.diag_head_settings == model.config.diag_head_settings


def test_greedy_generation_is_deterministic_and_reuses_features(model) -> None:
    ids, ct, pet = batch(model, b=1)
    first = model.generate(ids, ct=ct, pet=pet, max_new_tokens=6)
    visual = model.encode_images(ct, pet)
    again = model.generate(ids, visual=visual, max_new_tokens=6)
    assert first.shape == (1, 6)
    assert torch.equal(first, again)


def _grads(module: torch.nn.Module) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


@pytest.mark.parametrize(
    "fusion", ["cross_attention", "bidirectional", "concat", "sum", "ct_only", "pet_only"]
)
def test_every_fusion_trains(fusion) -> None:
    torch.manual_seed(0)
    m = ViPetModel(tiny_config(fusion={"name": fusion, "heads": 2}))
    ids, ct, pet = batch(m, b=1, r=1)
    out = m(ids, ct=ct, pet=pet, labels=ids)
    (out.loss + out.diag_logits.sum()).backward()
    # the findings head reads the pyramids of the modalities the fusion reads, no other
    assert m.config.diag_head_settings.modalities == (1 if fusion.endswith("_only") else 2)
    assert _grads(m.ct_encoder.patch_embed) == (fusion != "pet_only")
    assert _grads(m.pet_encoder.patch_embed) == (fusion != "ct_only")


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
    # the token-grid maps (the alignment loss's) are the same maps before the spreading
    tokens = model.attention_token_maps(out, ids, query)
    grid = out.visual.grid
    assert tokens.shape == (2, 3, grid[0] * grid[1] * grid[2])
    assert torch.equal(tokens_to_voxels(tokens, grid, (8, 32, 32)), maps)


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
        ct_encoder=dict(LINEAR),
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


def slotted(slots: int = 3, threshold: float = 0.01, **kw) -> ViPetModel:
    """A model with a findings token and ``slots`` slots; a low threshold fills them all."""
    torch.manual_seed(0)
    return ViPetModel(
        tiny_config(findings_token=True, findings_slots=slots, slot_threshold=threshold, **kw)
    ).eval()


def test_forward_with_offsets_gives_the_heads_maps_of_crops(model) -> None:
    g = torch.Generator().manual_seed(1)
    ct, pet = torch.rand(3, 1, 8, 32, 32, generator=g), torch.rand(3, 1, 8, 32, 32, generator=g)
    with torch.no_grad():
        full = model.dense_findings(ct, pet)
        same = model(None, ct=ct, pet=pet, offsets=torch.zeros(3, 3, dtype=torch.long))
        regions = model.vision(ct, pet)  # (B=3, R=1) studies: the same volumes
        crop = model(
            None,
            ct=ct[:, :, 4:8, 8:24, 0:16],
            pet=pet[:, :, 4:8, 8:24, 0:16],
            offsets=torch.tensor([[1, 1, 0]] * 3),
        )
    assert full.shape == model.head_shape == HEAD_SHAPE
    assert same.logits is None and same.loss is None and same.visual is None
    torch.testing.assert_close(same.dense.heat, full.heat)
    torch.testing.assert_close(regions.dense.types, full.types)
    assert crop.dense.shape == (4, 8, 8) and crop.dense.fine.shape == (3, 20, 4, 8, 8)
    assert torch.isfinite(crop.dense.heat).all()
    with pytest.raises(ValueError, match="input_ids"):
        model(None, ct=ct, pet=pet)


def test_vision_phase_trains_every_vision_part_on_crops() -> None:
    from vipet.model.vipet import VISION_PARTS

    torch.manual_seed(0)
    m = ViPetModel(tiny_config())
    ct, pet = torch.rand(2, 1, 4, 16, 16), torch.rand(2, 1, 4, 16, 16)
    dense = m(None, ct=ct, pet=pet, offsets=torch.tensor([[1, 0, 2], [0, 2, 0]])).dense
    assert dense.shape == (4, 8, 8)
    labels = torch.zeros(2, *dense.shape, dtype=torch.uint8)
    labels[0, 1:3, 2:5, 3:6] = 1
    node = {"id": 1, "type": "lymph_node", "fdg_avid": True, "location_detail": "axillary"}
    tables = lesion_table([{**node, "laterality": "left", "size_mm": 11.0}]).expand(2, -1, -1)
    heat = heat_targets([[((2, 3, 4), (1.0, 1.0, 1.0))], []], dense.shape)
    sum(findings_losses(dense, labels, tables, heat).values()).backward()
    for name in VISION_PARTS:
        assert _grads(getattr(m, name)), name
    assert not _grads(m.multi_modal_projector) and not _grads(m.language_model)


def test_vision_then_visual_tokens_is_encode_images() -> None:
    m = slotted()
    ids, ct, pet = batch(m)
    with torch.no_grad():
        vision = m.vision(ct, pet)
        visual = m.visual_tokens(vision, 2)
        direct = m.encode_images(ct, pet)
        out, again = m(ids, vision=vision), m(ids, ct=ct, pet=pet)
    assert vision.fused.shape == (6, 32, 32) and vision.grid == GRID
    assert vision.image_shape == (8, 32, 32)
    assert vision.detections.filled.shape == (6, 3) and vision.detections.filled.all()
    torch.testing.assert_close(visual.tokens, direct.tokens)
    assert torch.equal(visual.detections.voxels, direct.detections.voxels)
    assert visual.detections.attributes == direct.detections.attributes
    torch.testing.assert_close(out.logits, again.logits)
    torch.testing.assert_close(out.diag_logits, again.diag_logits)
    part = vision.select([1, 4])
    assert torch.equal(part.fused, vision.fused[[1, 4]])
    assert torch.equal(part.dense.heat, vision.dense.heat[[1, 4]])
    assert torch.equal(part.detections.voxels, vision.detections.voxels[[1, 4]])
    assert part.detections.attributes == [vision.detections.attributes[i] for i in (1, 4)]


def test_findings_token_and_slots_are_tokens_the_lm_reads(tmp_path) -> None:
    m = slotted(slots=2).train()
    assert m.visual_tokens_per_region == ViPetModel(tiny_config()).visual_tokens_per_region + 3
    ids, ct, pet = batch(m)
    out = m(ids, ct=ct, pet=pet, labels=ids, output_attentions=True)
    v = out.visual
    assert v.tokens.shape == (2, 3 * 7, 32)
    assert v.resampler_attention.shape == (2, 3, 7, 32)
    # a filled slot looks at its own token, an empty one nowhere; the findings token
    # where its slots look
    filled = v.detections.filled.view(2, 3, 2)
    torch.testing.assert_close(v.resampler_attention[:, :, -2:].sum(-1), filled.float())
    torch.testing.assert_close(v.resampler_attention[:, :, 4].sum(-1), torch.ones(2, 3))
    maps = m.attention_maps(out, ids, torch.ones_like(ids, dtype=torch.bool))
    assert maps.shape == (2, 3, 8, 32, 32) and float(maps.detach().max()) == pytest.approx(1.0)
    out.loss.backward()
    assert _grads(m.findings_slots) and _grads(m.findings_projector)
    # detections are decisions: the LM loss does not reach the findings head through them
    assert not _grads(m.diag_head)
    m.eval().save_pretrained(tmp_path)
    loaded = ViPetModel.from_pretrained(tmp_path).eval()
    assert loaded.config.findings_slots == 2 and loaded.config.slot_threshold == 0.01
    with torch.no_grad():
        a, b = m(ids, ct=ct, pet=pet), loaded(ids, ct=ct, pet=pet)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-6)
    assert torch.equal(a.visual.detections.voxels, b.visual.detections.voxels)


def test_slots_below_the_threshold_show_the_empty_token() -> None:
    m = slotted()
    _ids, ct, pet = batch(m)
    with torch.no_grad():
        full = m.encode_images(ct, pet, with_attention=True)
        # the threshold is no weight: a model re-calibrates through its config
        top = float(torch.sigmoid(full.dense.heat).max())
        m.config.slot_threshold = (1.0 + top) / 2
        none = m.encode_images(ct, pet, with_attention=True)
    assert full.detections.filled.all() and not none.detections.filled.any()
    assert none.detections.attributes == [[]] * 6
    tokens, empty = none.tokens.view(2, 3, 8, 32), full.tokens.view(2, 3, 8, 32)
    want = (m.findings_slots.empty + m.findings_slots.index).detach()
    torch.testing.assert_close(tokens[:, :, -3:], want.expand(2, 3, 3, 32))
    assert not torch.allclose(empty[:, :, -3:], tokens[:, :, -3:])
    torch.testing.assert_close(empty[:, :, :4], tokens[:, :, :4])  # the latents stay
    assert not torch.allclose(empty[:, :, 4], tokens[:, :, 4])  # the findings token moves
    assert none.resampler_attention[:, :, -3:].abs().sum() == 0
    torch.testing.assert_close(none.resampler_attention[:, :, 4], torch.full((2, 3, 32), 1 / 32))


def test_zones_keep_each_finding_to_its_own_region() -> None:
    m = slotted()
    ids, ct, pet = batch(m)
    zones = torch.tensor([0, 8]).expand(2, 3, 2).clone()
    zones[0, 1] = torch.tensor([0, 0])  # region 1 of study 0 owns no slice
    zones[1, 2] = torch.tensor([0, 4])  # region 2 of study 1 its top half
    with torch.no_grad():
        v = m.encode_images(ct, pet, zones=zones)
        free = m.encode_images(ct, pet)
    filled = v.detections.filled.view(2, 3, 3)
    assert not filled[0, 1].any() and filled.sum() == 5 * 3
    voxels = v.detections.voxels.view(2, 3, 3, 3)
    assert bool((voxels[1, 2, :, 0] < 4).all())  # the head's z = the input's (stride 1)
    # owning every slice is the same as no zones
    assert torch.equal(voxels[0, 0], free.detections.voxels.view(2, 3, 3, 3)[0, 0])
    assert torch.equal(
        m.generate(ids, ct=ct, pet=pet, zones=zones, max_new_tokens=3),
        m.generate(ids, visual=v, max_new_tokens=3),
    )


def test_teacher_forced_slots_replace_the_detections() -> None:
    m = slotted()
    ids, ct, pet = batch(m)
    filed = torch.zeros(2, 3, 8, 32, 32, dtype=torch.uint8)
    filed[0, 1, 4:8, 8:16, 8:16] = 1  # token (1, 1, 1) = 21
    filed[1, 2, 0:4, 24:32, 0:8] = 1  # token (0, 3, 0) = 12
    filed[1, 2, 4:8, 0:8, 24:32] = 2  # token (1, 0, 3) = 19
    attrs = torch.zeros(2, 3, 3, len(TEACHER_FIELDS))
    axillary, liver = FINE_NAMES.index("axillary"), FINE_NAMES.index("liver")
    attrs[0, 1, 0] = torch.tensor([1, 0, 1, axillary, 1, 5.2, 12.0])
    attrs[1, 2, 0] = torch.tensor([1, 1, 0, liver, 3, 2.0, 9.0])
    attrs[1, 2, 1] = torch.tensor([1, 0, 1, axillary, 0, 9.9, 21.0])
    with torch.no_grad():
        v = m.encode_images(ct, pet, with_attention=True, teacher=(filed, attrs))
        out = m(ids, ct=ct, pet=pet, teacher=(filed, attrs))
        plain = m.encode_images(ct, pet)
    want = teacher_detections(filed.flatten(0, 1), attrs.flatten(0, 1), GRID, m.head_shape)
    assert torch.equal(v.detections.filled, want.filled) and int(want.filled.sum()) == 3
    torch.testing.assert_close(v.detections.features, want.features)
    assert v.detections.attributes == want.attributes
    assert plain.detections.filled.all()  # without a teacher: the head's own detections
    torch.testing.assert_close(out.visual.tokens, v.tokens)  # forward reads the same slots
    slots = v.tokens.view(2, 3, 8, 32)[:, :, -3:]
    empty = (m.findings_slots.empty + m.findings_slots.index).detach().expand(2, 3, 3, 32)
    filled = v.detections.filled.view(2, 3, 3)
    torch.testing.assert_close(slots[~filled], empty[~filled])
    rows = v.resampler_attention[:, :, -3:]
    assert [int(rows[i, r, j].argmax()) for i, r, j in ((0, 1, 0), (1, 2, 0), (1, 2, 1))] == [
        21,
        12,
        19,
    ]
    torch.testing.assert_close(
        v.dense.heat, plain.dense.heat
    )  # the maps still come from the images


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"findings_slots": -1}, "findings_slots"),
        ({"findings_slots": 2, "slot_threshold": 1.0}, "slot_threshold"),
        ({"pet_scaling": "sqrt"}, "pet_scaling"),
        ({"findings_token": True}, "findings_slots > 0"),
    ],
)
def test_config_validation(overrides, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny_config(**overrides)


@pytest.mark.parametrize("native", [True, False])
def test_vision_autocast_uses_bf16_only_where_the_cpu_runs_it_natively(native, monkeypatch) -> None:
    """Emulated bf16 (an AVX2-only CPU) ran cpu-small's vision 190x slower than fp32."""
    import vipet.model.vipet as vipet_model

    monkeypatch.setattr(vipet_model, "cpu_has_native_bf16", lambda: native)
    ctx = vipet_model.vision_autocast("cpu")
    assert isinstance(ctx, torch.autocast) and ctx._enabled is native
    with ctx:
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == (torch.bfloat16 if native else torch.float32)


def test_the_bf16_probe_answers_on_this_machine() -> None:
    from vipet.model.vipet import bf16_runs_fast, cpu_has_native_bf16

    assert isinstance(cpu_has_native_bf16(), bool)
    assert bf16_runs_fast("cpu") is cpu_has_native_bf16()
    assert bf16_runs_fast("meta") is False
