"""VisionCrops on a tiny phantom: crop shapes and content, lesion-centred crops,
determinism per (seed, epoch, index), batching, and one pass of the findings head."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.data.conftest import GRID
from vipet.data.vision import CropConfig, VisionCrops, collate_crops
from vipet.errors import InputError
from vipet.io.vipet_dataset import ground_truth, read_dataset
from vipet.model.diag_head import (
    LABELS_PER_REGION,
    NORMAL_INDEX,
    findings_losses,
    label_index,
    lesion_centres,
    lesion_table,
)
from vipet.model.presets import PRESETS, build_model
from vipet.preprocess.cache import load_shard
from vipet.reports.schema import REGIONS

PATCH = (4, 8, 8)  # the tiny preset's encoder patch
STRIDE = (1, 2, 2)  # its findings head's grid: the first pyramid stride
TOKENS = 3  # CropConfig's default crop: 3 x 3 tokens in-plane
SIDE = TOKENS * PATCH[1]  # 24 of the region's 32 voxels


def _crops(data: tuple[Path, Path], split: str = "train", seed: int = 0, **kw) -> VisionCrops:
    return VisionCrops(*data, split, PATCH, STRIDE, CropConfig(**kw), seed=seed, progress=False)


@pytest.fixture(scope="module")
def crops(data) -> VisionCrops:
    return _crops(data)


@pytest.fixture(scope="module")
def samples(data) -> list:
    """The cached region samples of the train split, in VisionCrops' region order."""
    root, cache = data
    manifest = json.loads((cache / "manifest.json").read_text())
    shards = {e["study"]: cache / e["shard"] for e in manifest["studies"]}
    ids = [s["id"] for s in read_dataset(root)["studies"] if s["split"] == "train"]
    return [(sid, s) for sid in ids for s in load_shard(shards[sid])]


def _offsets(ds: VisionCrops) -> list[list[int]]:
    return [ds[i]["offsets"].tolist() for i in range(len(ds))]


# ---- config -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tokens": (0, 3)},
        {"tokens": (3,)},
        {"lesion_share": 1.5},
        {"lesion_share": -0.1},
        {"jitter": -1},
        {"crops_per_region": 0},
        {"balance": -0.5},
    ],
)
def test_crop_config_rejects_bad_values(kwargs) -> None:
    with pytest.raises(ValueError):
        CropConfig(**kwargs)


def test_the_test_geometry_is_the_tiny_presets() -> None:
    enc = PRESETS["tiny"]["ct_encoder"]
    assert tuple(enc["patch_size"]) == PATCH and tuple(enc["pyramid_strides"][0]) == STRIDE
    assert tuple(enc["image_size"]) == GRID


# ---- items ------------------------------------------------------------------------------


def test_every_region_gives_crops_per_region_crops(data, crops, samples) -> None:
    assert [r.region for r in crops.regions] == [s.region for _, s in samples]
    assert {r.region for r in crops.regions} == set(REGIONS)
    assert len(crops) == len(samples) * CropConfig().crops_per_region
    assert len(_crops(data, crops_per_region=2)) == len(samples) * 2
    assert all(crops.n_regions(i) == 1 for i in range(len(crops)))
    # item i is region i mod R (balance 0: every region alike)
    assert crops.order == list(range(len(samples))) * CropConfig().crops_per_region


def test_balance_shows_rare_lesion_classes_more_often(data, crops) -> None:
    def cls(les):
        return les["type"], bool(les.get("fdg_avid"))

    counts: dict = {}
    for r in crops.regions:
        for les in r.lesions:
            if int(les["id"]) in r.centre_ids and les.get("region") == r.region:
                counts[cls(les)] = counts.get(cls(les), 0) + 1
    top = max(counts.values())
    ds = _crops(data, balance=0.5)
    for n, r in enumerate(ds.regions):
        by_id = {int(les["id"]): les for les in r.lesions}
        want = [
            1.0 if by_id[i]["type"] == "other" else (top / counts[cls(by_id[i])]) ** 0.5
            for i in r.centre_ids
        ]
        assert ds.weights[n].tolist() == pytest.approx(want)
        repeats = max(1, round(4 * max(want, default=1.0)))
        assert ds.order.count(n) == repeats
    assert len(ds) > len(crops)  # the tiny phantom has classes rarer than its commonest
    # the lesion-centred crops of a region pick its rarer lesions more often
    spread = [float(w.max() - w.min()) for w in ds.weights if len(w) > 1]
    assert max(spread) > 0
    first = [ds[i]["offsets"].tolist() for i in range(len(ds))]
    assert first == [ds[i]["offsets"].tolist() for i in range(len(ds))]  # still seeded


def test_items_are_whole_depth_crops_on_the_token_grid(crops) -> None:
    head = (GRID[0] // STRIDE[0], SIDE // STRIDE[1], SIDE // STRIDE[2])
    last = GRID[1] // PATCH[1] - TOKENS  # the last token row a crop may start at
    for i in range(len(crops)):
        item = crops[i]
        for key in ("ct", "pet"):
            assert item[key].dtype == torch.float32 and item[key].shape == (1, GRID[0], SIDE, SIDE)
            assert float(item[key].min()) >= 0.0 and float(item[key].max()) <= 1.0
        z, ty, tx = item["offsets"].tolist()
        assert z == 0 and 0 <= ty <= last and 0 <= tx <= last
        assert item["ids"].dtype == torch.uint8 and item["ids"].shape == head
        assert item["heat"].shape == head
        assert float(item["heat"].min()) >= 0.0 and float(item["heat"].max()) <= 1.0
        assert item["tables"].shape == (5, 256)
        assert item["diag_targets"].shape == (LABELS_PER_REGION,)


def test_a_crop_is_its_region_at_its_offsets(data, crops, samples) -> None:
    root, _ = data
    n = len(samples)
    for i in range(len(crops)):
        sid, s = samples[i % n]
        item = crops[i]
        _, ty, tx = item["offsets"].tolist()
        y0, x0 = ty * PATCH[1], tx * PATCH[2]
        window = (slice(None), slice(y0, y0 + SIDE), slice(x0, x0 + SIDE))
        # float16 in memory: [0, 1] values come back within half a float16 step
        assert torch.allclose(item["ct"][0], torch.from_numpy(s.ct[window]), atol=1e-3)
        assert torch.allclose(item["pet"][0], torch.from_numpy(s.pet[window]), atol=1e-3)
        # lesion ids on the head's grid: block maximum, so small lesions survive
        full = torch.zeros(GRID) if s.lesion is None else torch.from_numpy(s.lesion).float()
        head = F.max_pool3d(full[None], STRIDE, STRIDE)[0].to(torch.uint8)
        hy, hx = y0 // STRIDE[1], x0 // STRIDE[2]
        want = head[:, hy : hy + SIDE // STRIDE[1], hx : hx + SIDE // STRIDE[2]]
        assert torch.equal(item["ids"], want)
        lesions = ground_truth(root, sid)["lesions"]
        assert torch.equal(item["tables"], lesion_table(lesions))


def test_labels_and_heat_are_what_the_crop_shows(data, crops, samples) -> None:
    root, _ = data
    n = len(samples)
    with_lesions = empty = 0
    for i in range(len(crops)):
        sid, s = samples[i % n]
        item = crops[i]
        by_id = {les["id"]: les for les in ground_truth(root, sid)["lesions"]}
        shown = [int(v) for v in torch.unique(item["ids"]).tolist() if v]
        diag = item["diag_targets"]
        if not shown:  # nothing in the crop: "normal", whatever the region holds elsewhere
            assert diag[NORMAL_INDEX] == 1 and diag.sum() == 1
            empty += 1
            continue
        want = {label_index(by_id[k]["type"], by_id[k]["fdg_avid"]) for k in shown}
        assert set(diag.nonzero().flatten().tolist()) == want
        with_lesions += 1
        # every lesion centre inside the crop is a heat peak of exactly 1
        _, ty, tx = item["offsets"].tolist()
        hy, hx = ty * PATCH[1] // STRIDE[1], tx * PATCH[2] // STRIDE[2]
        full = F.max_pool3d(torch.from_numpy(s.lesion).float()[None], STRIDE, STRIDE)[0]
        for _, (cz, cy, cx), _ in lesion_centres(full.to(torch.uint8)):
            at = (round(cz), round(cy) - hy, round(cx) - hx)
            if all(0 <= a < m for a, m in zip(at, item["heat"].shape, strict=True)):
                assert item["heat"][at] == 1.0
    assert with_lesions and empty
    # a region without lesions has no heat at all
    for i in range(len(crops)):
        if not crops.regions[i % n].centres:
            assert not crops[i]["heat"].any() and not crops[i]["ids"].any()


def test_lesion_share_centres_crops_on_lesions(data) -> None:
    def peaks(ds: VisionCrops) -> tuple[int, int]:
        """(crops holding a lesion's centre, crops) over the regions with lesions."""
        n = len(ds.regions)
        hits = [
            bool(ds[i]["heat"].max() == 1.0) for i in range(len(ds)) if ds.regions[i % n].centres
        ]
        return sum(hits), len(hits)

    # 2 x 2 tokens: a quarter of the region in-plane, so a crop placed anywhere often
    # misses every lesion, while a crop centred on one (no jitter) always holds its centre
    small = {"tokens": (2, 2), "crops_per_region": 8}
    hit, total = peaks(_crops(data, lesion_share=1.0, jitter=0, **small))
    assert total >= 16 and hit == total
    anywhere, _ = peaks(_crops(data, lesion_share=0.0, **small))
    assert anywhere < total


def test_crops_are_fixed_by_seed_epoch_and_index(data, crops) -> None:
    first = _offsets(crops)
    again = _crops(data)
    assert _offsets(again) == first
    assert torch.equal(crops[5]["ct"], again[5]["ct"])
    # the order of access does not matter (a resumed run starts mid-epoch)
    assert [again[i]["offsets"].tolist() for i in reversed(range(len(again)))] == first[::-1]
    try:
        crops.set_epoch(1)
        second = _offsets(crops)
    finally:
        crops.set_epoch(0)
    assert second != first and _offsets(crops) == first
    assert _offsets(_crops(data, seed=1)) != first


# ---- batching and errors ------------------------------------------------------------------


def test_collate_crops_stacks_a_batch(crops) -> None:
    batch = collate_crops([crops[i] for i in range(3)])
    assert batch["ct"].shape == batch["pet"].shape == (3, 1, GRID[0], SIDE, SIDE)
    assert batch["offsets"].shape == (3, 3)
    assert batch["ids"].shape == batch["heat"].shape == (3, GRID[0], SIDE // 2, SIDE // 2)
    assert batch["tables"].shape == (3, 5, 256)
    assert batch["diag_targets"].shape == (3, LABELS_PER_REGION)
    assert torch.equal(batch["ids"][1], crops[1]["ids"])
    with pytest.raises(ValueError, match="empty"):
        collate_crops([])


def test_a_crop_batch_trains_the_findings_head(crops, tokenizer) -> None:
    torch.manual_seed(0)
    model = build_model("tiny", tokenizer)
    # crops holding lesions, so every loss part has voxels to learn from
    picks = [i for i in range(len(crops)) if crops[i]["ids"].any()][:4]
    batch = collate_crops([crops[i] for i in picks])
    out = model(input_ids=None, ct=batch["ct"], pet=batch["pet"], offsets=batch["offsets"])
    assert out.dense.heat.shape == batch["ids"].shape
    parts = findings_losses(out.dense, batch["ids"], batch["tables"], batch["heat"])
    assert set(parts) == {"heat", "lesion", "attributes"}
    assert all(torch.isfinite(v) and v > 0 for v in parts.values())
    sum(parts.values()).backward()
    grads = [p.grad for p in model.diag_head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in model.language_model.parameters())


def test_crops_that_do_not_fit_and_missing_studies_are_input_errors(data, tmp_path) -> None:
    root, cache = data
    with pytest.raises(InputError, match="do not fit"):
        _crops(data, tokens=(5, 5))
    with pytest.raises(InputError, match="no study"):
        _crops(data, split="holdout")
    manifest = json.loads((cache / "manifest.json").read_text())
    train = [s["id"] for s in read_dataset(root)["studies"] if s["split"] == "train"]
    manifest["studies"] = [e for e in manifest["studies"] if e["study"] != train[0]]
    partial = tmp_path / "cache"
    partial.mkdir()
    (partial / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=train[0]):
        VisionCrops(root, partial, "train", PATCH, STRIDE, progress=False)
    with pytest.raises(InputError, match="manifest"):
        VisionCrops(root, tmp_path / "nowhere", "train", PATCH, STRIDE, progress=False)


def test_crops_from_a_source_dataset_share_its_volumes(data, tokenizer) -> None:
    # The trainer cuts crops from the language dataset's in-memory volumes (one read,
    # one copy): the crops must be the ones read from the shards.
    from vipet.data.dataset import ViPetDataset

    ds = ViPetDataset(*data, "train", tokenizer, n_visual=4, shard_cache_size=None)
    shared = VisionCrops(*data, "train", PATCH, STRIDE, seed=3, progress=False, source=ds)
    own = VisionCrops(*data, "train", PATCH, STRIDE, seed=3, progress=False)
    assert len(shared) == len(own)
    for i in range(len(own)):
        a, b = shared[i], own[i]
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    first = shared.regions[0]
    assert first.ct is ds._samples(ds.study_ids[0])[first.region].ct  # not a copy
    val = ViPetDataset(*data, "val", tokenizer, n_visual=4)
    with pytest.raises(ValueError, match="other studies"):
        VisionCrops(*data, "train", PATCH, STRIDE, progress=False, source=val)
