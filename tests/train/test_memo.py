"""VisionMemo: each (study, region) volume through the frozen vision side once, the
same outputs as the model's own pass, in the batch's (B, R) order."""

from __future__ import annotations

import contextlib

import pytest
import torch

from vipet.data.dataset import DataConfig, ViPetDataset, collate
from vipet.data.tokenizer import WHOLE
from vipet.model.findings_slots import Detections
from vipet.model.presets import build_model
from vipet.reports.schema import REGIONS
from vipet.train.memo import VisionMemo, slots_by_task


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return build_model("tiny", tok).eval()


@pytest.fixture(scope="module")
def ds(data, tok, model) -> ViPetDataset:
    cfg = DataConfig(tasks_ratio={"report": 1.0}, langs=("en",), report_scope="both")
    k = model.config.findings_slots
    return ViPetDataset(*data, "train", tok, model.visual_tokens_per_region, cfg, slots=k)


def _batch(ds: ViPetDataset, *want: tuple[str, str]) -> dict:
    """A batch of the report examples of these (study, region) pairs, in this order."""
    index = {(e.study_id, e.region): i for i, e in enumerate(ds.examples)}
    return collate([ds[index[w]] for w in want], ds.tokenizer.pad_token_id)


def test_memo_matches_the_model_and_computes_each_volume_once(ds, model, monkeypatch) -> None:
    a, b = ds.study_ids[:2]
    computed: list[int] = []  # volumes per call of model.vision
    inner = model.vision

    def spy(ct, pet, zones=None, regions=None):
        computed.append(ct.shape[0] * ct.shape[1])
        return inner(ct, pet, zones, regions)

    monkeypatch.setattr(model, "vision", spy)
    memo = VisionMemo(chunk=2)
    whole = _batch(ds, (a, WHOLE))
    out = memo.vision(model, whole, contextlib.nullcontext())
    assert computed == [2, 1] and len(memo) == 3  # two volumes at a time
    with torch.no_grad():
        direct = inner(whole["ct"], whole["pet"], whole["zones"])
    # fused tokens kept in bfloat16, returned in the model's dtype; detections as computed
    assert out.fused.dtype == model.dtype and out.fused.shape == direct.fused.shape
    assert torch.allclose(out.fused, direct.fused, atol=2e-2, rtol=1e-2)
    assert out.dense is None  # the voxel maps are not kept
    assert torch.equal(out.detections.filled, direct.detections.filled)
    assert torch.equal(out.detections.voxels, direct.detections.voxels)
    assert torch.allclose(out.detections.features, direct.detections.features)
    assert out.detections.attributes == direct.detections.attributes
    assert (out.grid, out.image_shape) == (direct.grid, direct.image_shape)

    # a's chest is known, b's is new: one volume computed, the order kept
    regions = _batch(ds, (b, "chest"), (a, "chest"))
    again = memo.vision(model, regions, contextlib.nullcontext())
    assert computed == [2, 1, 1] and len(memo) == 4
    chest = REGIONS.index("chest")
    assert torch.equal(again.fused[1], out.fused[chest])
    assert torch.equal(again.detections.filled[1], out.detections.filled[chest])
    with torch.no_grad():
        b_chest = inner(regions["ct"][:1], regions["pet"][:1], regions["zones"][:1])
    assert torch.allclose(again.fused[0], b_chest.fused[0], atol=2e-2, rtol=1e-2)
    memo.vision(model, whole, contextlib.nullcontext())
    assert computed == [2, 1, 1]  # nothing new
    # the chunk size changes how, not what
    one = VisionMemo(chunk=1).vision(model, whole, contextlib.nullcontext())
    assert computed[3:] == [1, 1, 1]
    assert torch.allclose(one.fused, out.fused, atol=2e-2, rtol=1e-2)  # bf16 apart at most
    assert torch.equal(one.detections.filled, out.detections.filled)


def test_memo_builds_each_volumes_teacher_slots_once(ds, model, monkeypatch) -> None:
    from vipet.model import findings_slots
    from vipet.train import memo as memo_module

    a, b = ds.study_ids[:2]
    built: list[int] = []  # volumes per call of teacher_detections
    inner = findings_slots.teacher_detections

    def spy(filed, attrs, grid, head_shape):
        built.append(filed.shape[0])
        return inner(filed, attrs, grid, head_shape)

    monkeypatch.setattr(memo_module, "teacher_detections", spy)
    memo = VisionMemo()
    whole = _batch(ds, (a, WHOLE))
    grid = memo.vision(model, whole, contextlib.nullcontext()).grid
    flat = lambda x: x.flatten(0, 1)  # noqa: E731
    want = inner(flat(whole["filed_lesions"]), flat(whole["filed_attrs"]), grid, model.head_shape)
    got = memo.teacher(model, whole, grid)
    assert built == [3]
    for name in ("features", "filled", "rows", "scores", "voxels"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    assert got.attributes == want.attributes
    # b's chest is new, a's abdomen is known: one volume built, the batch's order kept
    mixed = _batch(ds, (b, "chest"), (a, "abdomen_pelvis"))
    again = memo.teacher(model, mixed, grid)
    assert built == [3, 1]
    abdomen = REGIONS.index("abdomen_pelvis")
    assert torch.equal(again.rows[1], want.rows[abdomen])
    assert again.attributes[1] == want.attributes[abdomen]
    memo.teacher(model, whole, grid)
    assert built == [3, 1]  # nothing new


def test_memo_keys_teacher_slots_by_their_rows(ds, model) -> None:
    # a question example may leave lesions out of a volume's slots
    # (DataConfig.question_slot_drop): the same volume with fewer rows is another entry
    a = ds.study_ids[0]
    memo = VisionMemo()
    whole = _batch(ds, (a, WHOLE))
    grid = memo.vision(model, whole, contextlib.nullcontext()).grid
    full = memo.teacher(model, whole, grid)
    filled = full.filled.sum(dim=1)
    v = int(filled.argmax())
    assert filled[v] >= 1
    fewer = {k: (t.clone() if isinstance(t, torch.Tensor) else t) for k, t in whole.items()}
    fewer["filed_attrs"][0, v] = 0  # every lesion of volume v out
    fewer["filed_lesions"][0, v] = 0
    got = memo.teacher(model, fewer, grid)
    others = [i for i in range(len(REGIONS)) if i != v]
    assert not got.filled[v].any() and torch.equal(got.filled[others], full.filled[others])
    again = memo.teacher(model, whole, grid)  # the full rows still give the full slots
    assert torch.equal(again.filled, full.filled)


def _marked(n: int, value: float, words: bool) -> Detections:
    """``n`` volumes of detections whose every tensor holds ``value`` (one slot)."""
    return Detections(
        torch.full((n, 1, 4), value),
        torch.ones(n, 1, dtype=torch.bool),
        torch.full((n, 1, 2), value),
        torch.full((n, 1), value),
        torch.full((n, 1, 3), int(value), dtype=torch.long),
        [[{"volume": i}] for i in range(n)] if words else [],
    )


def test_slots_by_task_gives_reports_the_teacher_and_questions_the_head() -> None:
    """A whole-study example stands for len(REGIONS) volumes, a region example for one;
    each volume's slots come from the teacher when its example's task is listed."""
    batch = {"task": ["report", "vqa", "vqa"], "region": ["chest", WHOLE, "head_neck"]}
    n = 1 + len(REGIONS) + 1
    teacher, head = _marked(n, 1.0, False), _marked(n, 2.0, True)
    mixed = slots_by_task(batch, teacher, head, ("report",))
    assert mixed.scores[:, 0].tolist() == [1.0] + [2.0] * (n - 1)
    assert mixed.voxels[:, 0, 0].tolist() == [1] + [2] * (n - 1)
    assert mixed.attributes == []  # the teacher's volumes have no words to align with
    assert slots_by_task(batch, teacher, head, ("report", "vqa")) is teacher
    assert slots_by_task(batch, teacher, head, ()) is head
    only_questions = {"task": ["vqa"], "region": [WHOLE]}
    chosen = slots_by_task(
        only_questions, _marked(3, 1.0, True), head.select([0, 1, 2]), ("report",)
    )
    assert chosen.scores[:, 0].tolist() == [2.0] * 3
    with pytest.raises(ValueError):
        slots_by_task({"task": ["vqa"], "region": []}, teacher, head, ("report",))
