"""ViPetDataset on a tiny phantom: items, labels, images, batching, and one model pass."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.data.conftest import GRID
from tests.reports.test_render import match_all, sentences
from vipet.data.dataset import (
    DataConfig,
    RegionCountBatchSampler,
    ViPetDataset,
    collate,
    report_order,
    teacher_row,
)
from vipet.data.prompts import IGNORE_INDEX, target_text
from vipet.data.tokenizer import END_TOKEN, IMAGE_TOKEN, WHOLE, synthetic_corpus, train_tokenizer
from vipet.errors import InputError
from vipet.model.diag_head import LABELS_PER_REGION, diag_targets, lesion_table
from vipet.model.findings_slots import SECTION_KEYS, TEACHER_FIELDS
from vipet.model.presets import build_model
from vipet.reports.schema import FINE_LOCATIONS, LESION_TYPES, REGIONS, SECTIONS, Lesion


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(synthetic_corpus(20, 0), vocab_size=600)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return build_model("tiny", tok)


@pytest.fixture(scope="module")
def ds(data, tok, model) -> ViPetDataset:
    root, cache = data
    cfg = DataConfig(tasks_ratio={"report": 0.5, "vqa": 0.5}, report_scope="both")
    n_visual, k = model.visual_tokens_per_region, model.config.findings_slots
    return ViPetDataset(root, cache, "train", tok, n_visual, cfg, slots=k)


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
        {"region_target": "organ"},
        {"max_length": 0},
        {"vqa_turns": 0},
        {"vqa_turns": 2.5},
        {"question_slot_drop": {"faint": 0.5}},
        {"question_slot_drop": {"avid": 1.5}},
        {"question_slot_drop": {"not_avid": True}},
        {"question_slot_drop": [0.3, 0.7]},
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
            assert item["lesion"].dtype == torch.bool and item["lesion"].shape == (r, *GRID)
            for key in ("lesion_ids", "filed_lesions"):
                assert item[key].dtype == torch.uint8 and item[key].shape == (r, *GRID)
            assert item["lesion_tables"].shape == (r, 5, 256)
            assert item["zones"].dtype == torch.float32 and item["zones"].shape == (r, 2)
            assert item["filed_attrs"].dtype == torch.float32
            assert item["filed_attrs"].shape == (r, ds.slots, len(TEACHER_FIELDS))
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


def test_vqa_turns_group_a_scopes_questions_into_conversations(data, tok, model) -> None:
    root, cache = data
    n_visual = model.visual_tokens_per_region
    one = ViPetDataset(root, cache, "train", tok, n_visual, DataConfig(langs=("en",)))
    cfg = DataConfig(langs=("en",), vqa_turns=3)
    many = ViPetDataset(root, cache, "train", tok, n_visual, cfg)
    assert many.tasks["vqa"] == ViPetDataset(root, cache, "train", tok, n_visual, cfg).tasks["vqa"]
    assert all(not e.history for e in one.tasks["vqa"])
    # every question is asked exactly once, in a conversation about its own scope
    asked = lambda ds: sorted(  # noqa: E731
        (e.study_id, e.region, q, a)
        for e in ds.tasks["vqa"]
        for q, a in (*e.history, (e.question, e.answer))
    )
    assert asked(many) == asked(one)
    assert max(len(e.history) for e in many.tasks["vqa"]) == 2
    scopes = {(e.study_id, e.region) for e in one.tasks["vqa"]}
    per_scope = {k: sum((e.study_id, e.region) == k for e in one.tasks["vqa"]) for k in scopes}
    assert len(many.tasks["vqa"]) == sum(-(-n // 3) for n in per_scope.values())


def test_a_conversation_learns_every_answer(data, tok, model) -> None:
    root, cache = data
    n_visual = model.visual_tokens_per_region
    cfg = DataConfig(tasks_ratio={"vqa": 1.0}, langs=("en",), vqa_turns=4)
    ds = ViPetDataset(root, cache, "train", tok, n_visual, cfg)
    i = next(i for i, e in enumerate(ds.examples) if len(e.history) >= 2)
    ex, item = ds.examples[i], ds[i]
    on = item["labels"] != IGNORE_INDEX
    assert torch.equal(item["labels"][on], item["input_ids"][on])
    learned = tok.decode(item["labels"][on].tolist(), skip_special_tokens=False)
    answers = [a for _, a in ex.history] + [ex.answer]
    assert learned == "".join(a + END_TOKEN for a in answers)  # the questions are context


def test_shards_are_kept_in_a_small_lru(data, tok, model) -> None:
    root, cache = data
    ds = ViPetDataset(root, cache, "train", tok, model.visual_tokens_per_region, shard_cache_size=1)
    ds[0]
    for i in range(len(ds)):
        ds[i]
        assert len(ds._shards) == 1
    every = ViPetDataset(root, cache, "train", tok, 4, shard_cache_size=None)  # keep all
    for i in range(len(every)):
        every[i]
    assert len(every._shards) == len(every.study_ids)
    with pytest.raises(ValueError, match="shard_cache_size"):
        ViPetDataset(root, cache, "train", tok, 4, shard_cache_size=0)


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
    assert batch["lesion_ids"].shape == batch["filed_lesions"].shape == (2, 1, *GRID)
    assert batch["lesion_tables"].shape == (2, 1, 5, 256)
    assert batch["zones"].shape == (2, 1, 2)
    assert batch["filed_attrs"].shape == (2, 1, ds.slots, len(TEACHER_FIELDS))
    for key in ("zones", "filed_lesions", "filed_attrs", "lesion_tables"):
        assert torch.equal(batch[key][1], items[1][key])
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
            zones=batch["zones"],
            teacher=(batch["filed_lesions"], batch["filed_attrs"]),  # slot teacher forcing
        )
        assert torch.isfinite(out.loss)
        assert out.diag_logits.shape == batch["diag_targets"].shape
        out.loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        if seen == {1, 3}:
            break
    assert seen == {1, 3}


# ---- lesion targets -------------------------------------------------------------------


def _shown(sample, region: str, lesions: list[dict]) -> list[tuple[dict, np.ndarray]]:
    """The lesions filed under ``region`` that its volume shows, with their masks."""
    if sample.lesion is None:
        return []
    out = [(les, sample.lesion == les["id"]) for les in lesions if les["region"] == region]
    return [(les, mask) for les, mask in out if mask.any()]


def test_lesion_ids_tables_and_zones_follow_the_cache(ds) -> None:
    for sid in ds.study_ids:
        lesions = ds._gt[sid]["lesions"]
        item = ds[_first(ds, study_id=sid, task="report", region=WHOLE)]
        for k, region in enumerate(REGIONS):
            sample = ds._samples(sid)[region]
            ids = np.zeros(GRID, np.uint8) if sample.lesion is None else sample.lesion
            assert torch.equal(item["lesion_ids"][k], torch.from_numpy(ids.astype(np.uint8)))
            assert torch.equal(item["lesion"][k], item["lesion_ids"][k] > 0)
            assert torch.equal(item["lesion_tables"][k], lesion_table(lesions))
            lo, hi = item["zones"][k].tolist()
            assert (lo, hi) == pytest.approx(tuple(sample.meta["own_slices"]))
        # the overlaps: the first region's own part starts at its top, the last one's ends
        # at its bottom, and each inner boundary cuts both neighbours short
        z = item["zones"]
        assert z[0, 0] == 0 and z[2, 1] == GRID[0]
        assert 0 < z[0, 1] < GRID[0] and 0 < z[1, 0] < z[1, 1] < GRID[0] and z[2, 0] > 0
        region = ds[_first(ds, study_id=sid, task="report", region="chest")]
        for key in ("lesion_ids", "lesion_tables", "zones", "filed_lesions", "filed_attrs"):
            assert torch.equal(region[key][0], item[key][1]), key
    # a cache written before own_slices: every slice is the region's own
    old = replace(ds._samples(ds.study_ids[0])["chest"], meta={})
    assert ViPetDataset._zones(old) == (0.0, float(GRID[0]))


def test_teacher_row_holds_a_lesions_ground_truth() -> None:
    les = {"type": "lymph_node", "fdg_avid": True, "location_detail": "cervical",
           "laterality": "left", "suvmax": 8.1, "size_mm": 12.0}  # fmt: skip
    row = dict(zip(TEACHER_FIELDS, teacher_row(les), strict=True))
    assert row["present"] == 1.0 and row["avid"] == 1.0
    assert row["type"] == LESION_TYPES.index("lymph_node")
    assert row["fine"] == list(FINE_LOCATIONS).index("cervical")
    assert (row["suvmax"], row["size_mm"]) == pytest.approx((8.1, 12.0))
    bare = teacher_row({**les, "laterality": None, "suvmax": None})
    assert bare[5] == 0.0 and bare[4] == teacher_row({**les, "laterality": "none"})[4]


def test_filed_lesions_number_the_lesions_each_region_reports(ds) -> None:
    checked = reaching_in = 0
    for sid in ds.study_ids:
        lesions = ds._gt[sid]["lesions"]
        item = ds[_first(ds, study_id=sid, task="report", region=WHOLE)]
        for k, region in enumerate(REGIONS):
            sample = ds._samples(sid)[region]
            shown = sorted(_shown(sample, region, lesions), key=lambda x: report_order(*x))
            shown = shown[: ds.slots]
            # report order: by report section of the fine location, then head to foot
            keys = [
                (
                    SECTION_KEYS.index(FINE_LOCATIONS[les["location_detail"]].section),
                    m.nonzero()[0].mean(),
                )
                for les, m in shown
            ]
            assert keys == sorted(keys)
            want = np.zeros(GRID, np.uint8)
            for j, (les, mask) in enumerate(shown):
                want[mask] = j + 1
                assert item["filed_attrs"][k, j].tolist() == pytest.approx(teacher_row(les))
            assert torch.equal(item["filed_lesions"][k], torch.from_numpy(want))
            assert not item["filed_attrs"][k, len(shown) :].any()  # empty slots
            checked += len(shown)
            # a lesion filed under a neighbour that reaches into this volume has ids here
            # (the findings head sees it) but no slot (this region's report leaves it out)
            present = set(np.unique(item["lesion_ids"][k].numpy()).tolist())
            reaching_in += len(present & {les["id"] for les in lesions if les["region"] != region})
    assert checked >= 4 and reaching_in >= 1


def test_slots_cap_the_filed_lesions(data, tok, model, ds) -> None:
    root, cache = data
    n_visual = model.visual_tokens_per_region
    none = ViPetDataset(root, cache, "train", tok, n_visual, ds.config)
    one = ViPetDataset(root, cache, "train", tok, n_visual, ds.config, slots=1)
    capped = 0
    for sid in ds.study_ids:
        i = _first(ds, study_id=sid, task="report", region=WHOLE)
        full, a, b = ds[i], none[i], one[i]
        assert not a["filed_lesions"].any() and a["filed_attrs"].shape == (3, 0, 7)
        assert b["filed_attrs"].shape == (3, 1, 7)
        # one slot: the first lesion of the report order, the same as with more slots
        assert torch.equal(
            b["filed_lesions"], torch.where(full["filed_lesions"] == 1, 1, 0).to(torch.uint8)
        )
        assert torch.equal(b["filed_attrs"][:, 0], full["filed_attrs"][:, 0])
        capped += int((full["filed_lesions"].amax(dim=(1, 2, 3)) > 1).sum())
    assert capped >= 1  # some region reports more than one lesion


def test_question_slot_drop_leaves_lesions_out_of_question_slots(data, tok, model, ds) -> None:
    root, cache = data
    n_visual, k = model.visual_tokens_per_region, model.config.findings_slots
    drop = {"avid": 0.0, "not_avid": 1.0}  # every non-avid lesion out, every avid one kept
    cfg = replace(ds.config, question_slot_drop=drop)
    dropped = ViPetDataset(root, cache, "train", tok, n_visual, cfg, slots=k)
    assert [e.question for e in dropped.examples] == [e.question for e in ds.examples]
    seen_out = 0
    for i, ex in enumerate(ds.examples):
        full, less = ds[i], dropped[i]
        if ex.task == "report":  # reports keep every lesion: they describe their slots
            assert torch.equal(full["filed_attrs"], less["filed_attrs"])
            assert torch.equal(full["filed_lesions"], less["filed_lesions"])
            continue
        for v in range(full["filed_attrs"].shape[0]):
            rows = full["filed_attrs"][v]
            avid = [j for j in range(rows.shape[0]) if rows[j, 0] > 0 and rows[j, 2] > 0.5]
            # the avid ones, in order, from the first slot; their voxels renumbered
            assert torch.equal(less["filed_attrs"][v, : len(avid)], rows[avid])
            assert not less["filed_attrs"][v, len(avid) :].any()
            want = torch.zeros_like(full["filed_lesions"][v])
            for new, j in enumerate(avid, 1):
                want[full["filed_lesions"][v] == j + 1] = new
            assert torch.equal(less["filed_lesions"][v], want)
            seen_out += int((rows[:, 0] > 0).sum()) - len(avid)
        again = dropped[i]  # an example's own seeded draw: the same every time
        assert torch.equal(again["filed_attrs"], less["filed_attrs"])
    assert seen_out >= 1  # the tiny phantom asks about some non-avid lesion's volume


def test_question_slot_drop_draws_per_example(data, tok, model, ds) -> None:
    root, cache = data
    n_visual, k = model.visual_tokens_per_region, model.config.findings_slots
    cfg = replace(ds.config, question_slot_drop={"avid": 0.5, "not_avid": 0.5})
    half = ViPetDataset(root, cache, "train", tok, n_visual, cfg, slots=k)
    kept = total = 0
    for i, ex in enumerate(ds.examples):
        if ex.task != "vqa":
            continue
        total += int((ds[i]["filed_attrs"][..., 0] > 0).sum())
        kept += int((half[i]["filed_attrs"][..., 0] > 0).sum())
    assert total >= 20 and 0 < kept < total  # some kept, some left out


# ---- region targets ---------------------------------------------------------------------


def _heading(key: str, lang: str) -> str:
    return next(vi if lang == "vi" else en for k, vi, en in SECTIONS if k == key)


@pytest.fixture(scope="module")
def findings_ds(data, tok, model) -> ViPetDataset:
    root, cache = data
    cfg = DataConfig(
        tasks_ratio={"report": 1.0},
        langs=("vi", "en"),
        report_scope="both",
        region_target="findings",
        max_length=2048,
    )
    n_visual, k = model.visual_tokens_per_region, model.config.findings_slots
    return ViPetDataset(root, cache, "train", tok, n_visual, cfg, slots=k)


def test_findings_targets_describe_what_each_volume_shows(findings_ds) -> None:
    ds = findings_ds
    others = 0
    for ex in ds.tasks["report"]:
        if ex.region == WHOLE:
            continue
        _, text = ds.text(ex)
        sample = ds._samples(ex.study_id)[ex.region]
        shown = _shown(sample, ex.region, ds._gt[ex.study_id]["lesions"])
        shown = sorted(shown, key=lambda x: report_order(*x))[: ds.slots]
        lesions = [Lesion.from_dict(les) for les, _ in shown]
        lines = dict(line.split(": ", 1) for line in text.splitlines())
        # the region's own section always; another section only for a lesion filed in it
        want = {ex.region} | {x.section for x in lesions}
        keys = [k for k, _, _ in SECTIONS if k in want]
        assert list(lines) == [_heading(k, ex.lang) for k in keys]
        for key in keys:
            members = [x for x in lesions if x.section == key]
            found = sentences(lines[_heading(key, ex.lang)])
            matched = match_all(members, found, ex.lang)  # every lesion has its sentence
            if key != ex.region:  # another section's line: its findings only, in order
                assert matched == {i: i for i in range(len(members))} and len(found) == len(members)
                others += 1
    assert others >= 1  # some volume shows a lesion written under another section


def test_findings_targets_are_fixed_per_example_and_seed(data, tok, model, findings_ds) -> None:
    root, cache = data
    n_visual, k = model.visual_tokens_per_region, model.config.findings_slots
    cfg = findings_ds.config
    remixed = ViPetDataset(
        root,
        cache,
        "train",
        tok,
        n_visual,
        replace(cfg, tasks_ratio={"report": 1.0, "vqa": 1.0}),
        slots=k,
    )
    reseeded = ViPetDataset(root, cache, "train", tok, n_visual, replace(cfg, seed=1), slots=k)
    region = [ex for ex in findings_ds.tasks["report"] if ex.region != WHOLE]
    texts = [findings_ds.text(ex)[1] for ex in region]
    # the epoch order differs, each example's wording does not
    assert remixed.examples != findings_ds.examples
    assert [remixed.text(ex)[1] for ex in region] == texts
    assert [findings_ds.text(ex)[1] for ex in region] == texts
    assert [reseeded.text(ex)[1] for ex in region] != texts
    # the item's labels are that text
    i = next(i for i, ex in enumerate(findings_ds.examples) if ex.region == "chest")
    labels = findings_ds[i]["labels"]
    answer = tok.decode(labels[labels != IGNORE_INDEX].tolist(), skip_special_tokens=False)
    assert answer == findings_ds.text(findings_ds.examples[i])[1] + END_TOKEN
    # whole-study examples still target the whole report
    for ex in findings_ds.tasks["report"]:
        if ex.region == WHOLE:
            report = findings_ds._gt[ex.study_id][f"report_{ex.lang}"]
            assert findings_ds.text(ex)[1] == target_text(report, None, ex.lang)


def test_findings_target_falls_back_to_the_section_without_lesions(
    findings_ds, monkeypatch
) -> None:
    ex = next(e for e in findings_ds.tasks["report"] if e.region == "chest")
    gt = {k: v for k, v in findings_ds._gt[ex.study_id].items() if k != "lesions"}
    monkeypatch.setitem(findings_ds._gt, ex.study_id, gt)
    report = gt[f"report_{ex.lang}"]
    assert findings_ds.text(ex)[1] == target_text(report, "chest", ex.lang)


def test_in_memory_items_keep_float16_volumes_and_their_teacher_maps(data, tok, model) -> None:
    root, cache = data
    cfg = DataConfig(tasks_ratio={"report": 1.0}, report_scope="both", region_target="findings")
    k, n_visual = model.config.findings_slots, model.visual_tokens_per_region
    ref = ViPetDataset(root, cache, "train", tok, n_visual, cfg, slots=k)  # LRU of shards
    held = ViPetDataset(
        root,
        cache,
        "train",
        tok,
        n_visual,
        cfg,
        shard_cache_size=None,
        slots=k,
        volume_dtype=torch.float16,
    )
    for i in range(len(ref)):
        a, b = ref[i], held[i]
        assert b["ct"].dtype == b["pet"].dtype == torch.float16
        assert torch.equal(b["ct"].float(), a["ct"]) and torch.equal(b["pet"].float(), a["pet"])
        for key in ("input_ids", "labels", "filed_lesions", "filed_attrs", "lesion_ids"):
            assert torch.equal(a[key], b[key]), key
        again = held[i]  # the second read comes from the per-region cache, unchanged
        assert torch.equal(again["filed_lesions"], a["filed_lesions"])
        assert torch.equal(again["input_ids"], a["input_ids"])
    assert held._teachers and held._listed and not ref._teachers
    with pytest.raises(ValueError, match="volume_dtype"):
        ViPetDataset(root, cache, "train", tok, n_visual, cfg, volume_dtype=torch.int8)
