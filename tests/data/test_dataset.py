"""ViPetDataset on a tiny phantom: items, labels, images, batching, and one model pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import phantom_with_cache
from vipet.data.dataset import DataConfig, RegionCountBatchSampler, ViPetDataset, collate
from vipet.data.prompts import IGNORE_INDEX
from vipet.data.tokenizer import END_TOKEN, IMAGE_TOKEN, WHOLE, synthetic_corpus, train_tokenizer
from vipet.errors import InputError
from vipet.model.diag_head import LABELS_PER_REGION, diag_targets
from vipet.model.presets import build_model
from vipet.reports.schema import REGIONS

GRID = (8, 32, 32)


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(synthetic_corpus(20, 0), vocab_size=600)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return build_model("tiny", tok)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    return phantom_with_cache(tmp_path_factory.mktemp("vipet_data"), 4, GRID)


@pytest.fixture(scope="module")
def ds(data, tok, model) -> ViPetDataset:
    root, cache = data
    cfg = DataConfig(tasks_ratio={"report": 0.5, "vqa": 0.5}, report_scope="both")
    return ViPetDataset(root, cache, "train", tok, model.visual_tokens_per_region, cfg)


def _first(ds: ViPetDataset, **want) -> int:
    for i, ex in enumerate(ds.examples):
        if all(getattr(ex, k) == v for k, v in want.items()):
            return i
    raise AssertionError(f"no example with {want}")


# ---- config ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tasks_ratio": {}},
        {"tasks_ratio": {"caption": 1.0}},
        {"tasks_ratio": {"report": -1.0}},
        {"tasks_ratio": {"report": 0.0, "vqa": 0.0}},
        {"langs": ("fr",)},
        {"langs": ()},
        {"report_scope": "organ"},
        {"max_length": 0},
    ],
)
def test_config_rejects_bad_values(kwargs) -> None:
    with pytest.raises(ValueError):
        DataConfig(**kwargs)


# ---- items ----------------------------------------------------------------------------


def test_item_shapes_and_dtypes(ds, model) -> None:
    n_visual = model.visual_tokens_per_region
    image_id = ds.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    for task in ("report", "vqa"):
        for region in (*REGIONS, WHOLE):
            try:
                i = _first(ds, task=task, region=region)
            except AssertionError:
                continue  # a phantom may ask nothing about one region
            item = ds[i]
            r = 3 if region == WHOLE else 1
            for key in ("input_ids", "attention_mask", "labels"):
                assert item[key].dtype == torch.long and item[key].dim() == 1
                assert item[key].shape == item["input_ids"].shape
            for key in ("ct", "pet"):
                assert item[key].dtype == torch.float32 and item[key].shape == (r, *GRID)
                assert float(item[key].min()) >= 0.0 and float(item[key].max()) <= 1.0
            assert item["roi"].dtype == torch.bool and item["roi"].shape == (r, *GRID)
            assert item["diag_targets"].shape == (r, LABELS_PER_REGION)
            assert int((item["input_ids"] == image_id).sum()) == r * n_visual
            assert (item["task"], item["region"]) == (task, region)


def test_labels_cover_the_answer_only(ds) -> None:
    for task in ("report", "vqa"):
        for region in ("chest", WHOLE):
            i = _first(ds, task=task, region=region)
            item = ds[i]
            _, answer = ds.text(ds.examples[i])
            labels = item["labels"]
            on = labels != IGNORE_INDEX
            # The labelled part is one contiguous tail equal to the input ids there.
            start = int(on.nonzero()[0])
            assert on[start:].all() and not on[:start].any()
            assert torch.equal(labels[on], item["input_ids"][on])
            text = ds.tokenizer.decode(labels[on].tolist(), skip_special_tokens=False)
            assert text == answer + END_TOKEN


def test_diag_targets_and_roi_follow_the_ground_truth(ds) -> None:
    sid = ds.study_ids[0]
    lesions = ds._gt[sid]["lesions"]
    whole = ds[_first(ds, study_id=sid, task="report", region=WHOLE)]
    assert torch.equal(whole["diag_targets"].reshape(-1), diag_targets(lesions, None))
    checked = 0
    for k, region in enumerate(REGIONS):
        item = ds[_first(ds, study_id=sid, task="report", region=region)]
        assert torch.equal(item["diag_targets"][0], diag_targets(lesions, region))
        assert torch.equal(item["roi"][0], whole["roi"][k])
        sample = ds._samples(sid)[region]
        mask = ds.lesion_mask(sid, region)
        if sample.lesion is not None and (sample.lesion > 0).any():
            assert torch.equal(item["roi"][0], torch.from_numpy(sample.lesion > 0))
            assert mask is not None and torch.equal(item["roi"][0], torch.from_numpy(mask))
            checked += 1
        else:
            assert torch.equal(item["roi"][0], torch.from_numpy(sample.roi))
            assert mask is None  # the PET-ROI fallback is no lesion
    assert checked >= 1, "the phantom study should have lesions in some region"


def test_examples_are_enumerated_and_mixed_deterministically(data, tok, model) -> None:
    root, cache = data
    n_visual = model.visual_tokens_per_region
    cfg = DataConfig(tasks_ratio={"report": 3.0, "vqa": 1.0}, langs=("en",), seed=5)
    a = ViPetDataset(root, cache, "train", tok, n_visual, cfg)
    b = ViPetDataset(root, cache, "train", tok, n_visual, cfg)
    assert a.examples == b.examples
    n_report, n_vqa = len(a.tasks["report"]), len(a.tasks["vqa"])
    assert n_report == len(a.study_ids) * len(REGIONS)  # region scope, one language
    assert len(a) == n_report + n_vqa
    assert sum(e.task == "report" for e in a.examples) == round(len(a) * 0.75)
    assert {e.lang for e in a.examples} == {"en"}
    c = ViPetDataset(root, cache, "train", tok, n_visual, DataConfig(langs=("en",), seed=6))
    assert c.examples != a.examples
    only_vqa = ViPetDataset(
        root, cache, "train", tok, n_visual, DataConfig(tasks_ratio={"vqa": 1.0})
    )
    assert {e.task for e in only_vqa.examples} == {"vqa"}


def test_shards_are_kept_in_a_small_lru(data, tok, model) -> None:
    root, cache = data
    ds = ViPetDataset(root, cache, "train", tok, model.visual_tokens_per_region, shard_cache_size=1)
    ds[0]
    for i in range(len(ds)):
        ds[i]
        assert len(ds._shards) == 1


def test_study_missing_from_cache_is_an_input_error(data, tok, tmp_path) -> None:
    root, cache = data
    manifest = json.loads((cache / "manifest.json").read_text())
    gone = manifest["studies"].pop(0)["study"]
    partial = tmp_path / "cache"
    partial.mkdir()
    (partial / "manifest.json").write_text(json.dumps(manifest))
    split = next(
        s["split"]
        for s in json.loads((root / "dataset.json").read_text())["studies"]
        if s["id"] == gone
    )
    with pytest.raises(InputError, match=gone):
        ViPetDataset(root, partial, split, tok, 4)
    with pytest.raises(InputError, match="manifest"):
        ViPetDataset(root, tmp_path / "nowhere", split, tok, 4)


# ---- batching -------------------------------------------------------------------------


def test_collate_pads_on_the_right(ds) -> None:
    i = _first(ds, task="vqa", region="chest")
    j = _first(ds, task="report", region="chest")
    items = [ds[i], ds[j]]
    pad = ds.tokenizer.pad_token_id
    batch = collate(items, pad)
    longest = max(len(x["input_ids"]) for x in items)
    assert batch["input_ids"].shape == (2, longest)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        assert torch.equal(batch["input_ids"][row, :n], item["input_ids"])
        assert (batch["input_ids"][row, n:] == pad).all()
        assert torch.equal(batch["labels"][row, :n], item["labels"])
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all()
        assert batch["attention_mask"][row, :n].all() and not batch["attention_mask"][row, n:].any()
    assert batch["ct"].shape == (2, 1, *GRID) and batch["roi"].dtype == torch.bool
    assert batch["diag_targets"].shape == (2, 1, LABELS_PER_REGION)
    assert batch["region"] == ["chest", "chest"]
    whole = ds[_first(ds, region=WHOLE)]
    with pytest.raises(ValueError, match="RegionCountBatchSampler"):
        collate([items[0], whole], pad)


def test_batch_sampler_groups_by_regions_and_is_deterministic(ds) -> None:
    s = RegionCountBatchSampler(ds, batch_size=4, shuffle=True, seed=1)
    first = list(s)
    assert len(first) == len(s)
    assert sorted(i for b in first for i in b) == list(range(len(ds)))
    for b in first:
        assert len({ds.n_regions(i) for i in b}) == 1 and 1 <= len(b) <= 4
    assert list(RegionCountBatchSampler(ds, batch_size=4, shuffle=True, seed=1)) == first
    s.set_epoch(1)
    second = list(s)
    assert second != first
    s.set_epoch(0)
    assert list(s) == first
    assert list(RegionCountBatchSampler(ds, 4, shuffle=True, seed=2)) != first
    plain = list(RegionCountBatchSampler(ds, 4, shuffle=False))
    assert plain == list(RegionCountBatchSampler(ds, 4, shuffle=False, seed=9))
    dropped = RegionCountBatchSampler(ds, 4, shuffle=True, drop_last=True)
    assert len(list(dropped)) == len(dropped) and all(len(b) == 4 for b in dropped)


def test_a_batch_trains_the_tiny_model(ds, model) -> None:
    loader = torch.utils.data.DataLoader(
        ds,
        batch_sampler=RegionCountBatchSampler(ds, batch_size=2, shuffle=True, seed=0),
        collate_fn=lambda b: collate(b, ds.tokenizer.pad_token_id),
    )
    seen = set()
    model.train()
    for batch in loader:
        r = batch["ct"].shape[1]
        if r in seen:
            continue
        seen.add(r)
        model.zero_grad()
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
            ct=batch["ct"],
            pet=batch["pet"],
        )
        assert torch.isfinite(out.loss)
        assert out.diag_logits.shape == batch["diag_targets"].shape
        out.loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        if seen == {1, 3}:
            break
    assert seen == {1, 3}


def test_lesion_classes_name_each_lesion_by_type_and_avidity(ds) -> None:
    from vipet.model.diag_head import label_index

    checked = 0
    for sid in ds.study_ids:
        by_id = {les["id"]: les for les in ds._gt[sid]["lesions"]}
        item = ds[_first(ds, study_id=sid, task="report", region=WHOLE)]
        assert item["lesion_class"].dtype == torch.uint8
        assert item["lesion_class"].shape == item["lesion"].shape
        # every lesion voxel has a class and only lesion voxels do
        assert torch.equal(item["lesion_class"] > 0, item["lesion"])
        for k, region in enumerate(REGIONS):
            sample = ds._samples(sid)[region]
            if sample.lesion is None:
                continue
            for lesion_id in np.unique(sample.lesion):
                if lesion_id == 0:
                    continue
                les = by_id[int(lesion_id)]
                want = 1 + label_index(les["type"], les["fdg_avid"])
                got = item["lesion_class"][k][torch.from_numpy(sample.lesion == lesion_id)]
                assert bool((got == want).all())
                checked += 1
    assert checked >= 2


def test_filed_lesions_number_the_lesions_each_region_reports(ds) -> None:
    checked = 0
    for sid in ds.study_ids:
        lesions = ds._gt[sid]["lesions"]
        item = ds[_first(ds, study_id=sid, task="report", region=WHOLE)]
        assert item["filed_lesions"].dtype == torch.uint8
        assert item["filed_lesions"].shape == item["lesion"].shape
        for k, region in enumerate(REGIONS):
            sample = ds._samples(sid)[region]
            filed = [les for les in lesions if les["region"] == region]
            for n, les in enumerate(filed, start=1):
                on = (
                    torch.from_numpy(sample.lesion == les["id"])
                    if sample.lesion is not None
                    else None
                )
                if on is None or not bool(on.any()):
                    assert not bool((item["filed_lesions"][k] == n).any())
                    continue
                assert bool((item["filed_lesions"][k][on] == n).all())
                checked += 1
            # nothing else is labelled: a lesion reaching in from another region is not
            assert int(item["filed_lesions"][k].max()) <= len(filed)
            assert bool((item["filed_lesions"][k] > 0).sum() <= item["lesion"][k].sum())
    assert checked >= 2
