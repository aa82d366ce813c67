"""Finding slots pointed into the text (ViPetConfig.slot_pointer): each <finding>
marker reads or writes beside the slot its sentence describes."""

from __future__ import annotations

import pytest
import torch

from tests.model.test_vipet import IMAGE, batch, tiny_config
from vipet.model.findings_slots import FINE_NAMES, TEACHER_FIELDS
from vipet.model.vipet import ViPetModel

MARKER = 7  # <finding> id in these tests
END = 3


def pointing(slots: int = 3) -> ViPetModel:
    torch.manual_seed(0)
    cfg = tiny_config(
        findings_token=True,
        findings_slots=slots,
        slot_threshold=0.01,
        slot_pointer=True,
        finding_token_id=MARKER,
    )
    return ViPetModel(cfg).eval()


def teacher(b: int = 2, r: int = 3):
    """Study 0: one lesion in region 1; study 1: two in region 2, none elsewhere."""
    filed = torch.zeros(b, r, 8, 32, 32, dtype=torch.uint8)
    filed[0, 1, 4:8, 8:16, 8:16] = 1
    filed[1, 2, 0:4, 24:32, 0:8] = 1
    filed[1, 2, 4:8, 0:8, 24:32] = 2
    attrs = torch.zeros(b, r, 3, len(TEACHER_FIELDS))
    axillary, liver = FINE_NAMES.index("axillary"), FINE_NAMES.index("liver")
    attrs[0, 1, 0] = torch.tensor([1, 0, 1, axillary, 1, 5.2, 12.0])
    attrs[1, 2, 0] = torch.tensor([1, 1, 0, liver, 3, 2.0, 9.0])
    attrs[1, 2, 1] = torch.tensor([1, 0, 1, axillary, 0, 9.9, 21.0])
    return filed, attrs


def test_markers_take_the_filled_slots_in_order() -> None:
    m = pointing()
    ids, ct, pet = batch(m, text=12)
    ids[ids == MARKER] = 11
    n = ids.shape[1] - 12
    ids[0, n + 2] = MARKER  # study 0: one marker for its one lesion, one too many
    ids[0, n + 8] = MARKER
    ids[1, n + 1] = MARKER  # study 1: two markers, two lesions
    ids[1, n + 5] = MARKER
    with torch.no_grad():
        v = m.encode_images(ct, pet, teacher=teacher())
        got = m.embed(ids, v)
        plain = m.get_input_embeddings()(ids).masked_scatter(
            (ids == IMAGE)[..., None].expand(*ids.shape, 32), v.tokens
        )
    slots = v.tokens.view(2, 3, -1, 32)[:, :, -3:]  # (B, R, K, hidden)
    delta = got - plain
    torch.testing.assert_close(delta[0, n + 2], slots[0, 1, 0])
    torch.testing.assert_close(delta[1, n + 1], slots[1, 2, 0])
    torch.testing.assert_close(delta[1, n + 5], slots[1, 2, 1])
    others = torch.ones_like(ids, dtype=torch.bool)
    others[0, n + 2] = others[1, n + 1] = others[1, n + 5] = False
    assert float(delta[others].abs().max()) == 0.0  # a marker past the slots: unchanged


def test_generation_feeds_markers_as_training_does() -> None:
    """Greedy decoding writes what a teacher-forced pass over its own output predicts,
    markers included, and never more markers than filled slots."""
    m = pointing()
    ids, ct, pet = batch(m, text=4)
    ids[ids == MARKER] = 11
    boost = torch.zeros(300)
    boost[MARKER] = 30.0  # a model that would write markers for ever
    hook = m.language_model.lm_head.register_forward_hook(lambda mod, i, out: out + boost)
    try:
        with torch.no_grad():
            v = m.encode_images(ct, pet, teacher=teacher())
            cached = m.generate(ids, visual=v, max_new_tokens=12, eos_token_id=END)
            uncached = m.generate(
                ids, visual=v, max_new_tokens=12, eos_token_id=END, use_cache=False
            )
            full = torch.cat([ids, cached], dim=1)
            logits = m(full, visual=v).logits[:, ids.shape[1] - 1 : -1].float()
    finally:
        hook.remove()
    assert torch.equal(cached, uncached)
    assert (cached == MARKER).sum(dim=1).tolist() == [1, 2]  # the filled slots
    for i, filled in enumerate((1, 2)):
        seen = 0
        for t in range(cached.shape[1]):
            step = logits[i, t].clone()
            if seen >= filled:
                step[MARKER] = float("-inf")
            if int(cached[i, t]) == END:
                break
            assert int(step.argmax()) == int(cached[i, t])
            seen += int(cached[i, t]) == MARKER


def test_min_new_tokens_holds_the_stop_back() -> None:
    """A model that would stop at once writes ``min_new_tokens`` tokens, then stops."""
    m = pointing()
    ids, ct, pet = batch(m, text=4)
    boost = torch.zeros(300)
    boost[END] = 30.0
    hook = m.language_model.lm_head.register_forward_hook(lambda mod, i, out: out + boost)
    try:
        with torch.no_grad():
            v = m.encode_images(ct, pet, teacher=teacher())
            free = m.generate(ids, visual=v, max_new_tokens=12, eos_token_id=END)
            held = m.generate(ids, visual=v, max_new_tokens=12, eos_token_id=END, min_new_tokens=5)
    finally:
        hook.remove()
    assert free.tolist() == [[END], [END]]
    assert held.shape == (2, 6) and (held[:, 5] == END).all() and (held[:, :5] != END).all()


def test_sampling_is_refused() -> None:
    m = pointing()
    ids, ct, pet = batch(m, text=2)
    with torch.no_grad(), pytest.raises(ValueError, match="greedily"):
        m.generate(ids, ct=ct, pet=pet, do_sample=True)


def test_slot_pointer_needs_slots_and_a_marker() -> None:
    with pytest.raises(ValueError, match="slot_pointer"):
        tiny_config(slot_pointer=True, finding_token_id=MARKER)
    with pytest.raises(ValueError, match="slot_pointer"):
        tiny_config(findings_token=True, findings_slots=2, slot_pointer=True)
