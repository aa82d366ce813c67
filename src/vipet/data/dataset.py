"""Training examples from a ViPET dataset and its preprocessing cache.

`ViPetDataset` joins three things for one split:

- the split's study ids and ground truth (``dataset.json`` + ``ground_truth/<id>.json``:
  lesions, ``report_vi``/``report_en``, ``questions_vi``/``questions_en``);
- the cached region samples of each study (``build_cache`` output: ``manifest.json`` +
  ``shards/<key>.npz``, looked up by study name);
- the prompt builders of `vipet.data.prompts`.

**Examples**, enumerated in a fixed order (study order of the split, then):

- *report* — per language in ``DataConfig.langs``: one example per region (target: that
  region's findings section) when ``report_scope`` is "region" or "both", and one
  whole-study example (target: the whole report, images of all three regions) when it
  is "study" or "both". A study without a report in a language gets no report example
  in that language.
- *vqa* — every question of ``questions_<lang>``, scoped to the region the question
  names (its ``region`` field) or to the whole study when it names none.

**Mixing by ``tasks_ratio``.** An epoch has as many items as there are examples in all
tasks with a positive ratio together (``N``). Task ``t`` gets
``round(N · ratio_t / Σ ratio)`` slots (the last task takes the remainder, so the total
is exactly ``N``), filled from a seeded permutation of its examples: *undersampled* (the
first slots of the permutation) when it has more examples than slots, *oversampled*
(the permutation repeated, each repeat freshly permuted) when it has fewer. The slots of
all tasks are then shuffled together with the same seed. The epoch order is thus fixed
by ``DataConfig.seed``; shuffle across epochs with `RegionCountBatchSampler`.

**Items** (`__getitem__`): ``input_ids``/``attention_mask``/``labels`` (LongTensor, labels
-100 outside the answer), ``ct``/``pet`` ``(R, D, H, W)`` float32 in [0, 1] and ``roi``
``(R, D, H, W)`` bool — R = 1 for a region example, 3 (in REGIONS order) for a
whole-study one; ``roi`` is the lesion mask (labels > 0) of a region whose volume holds
lesion voxels, else the PET ROI of the region —, ``lesion`` ``(R, D, H, W)`` bool, the
lesion mask itself (all False in a region without lesions), ``lesion_class``
``(R, D, H, W)`` uint8, each lesion's voxels labelled ``1 +`` its type x avidity label
index (`vipet.model.diag_head.label_index`), ``filed_lesions`` ``(R, D, H, W)`` uint8,
the lesions the report files under that region numbered 1, 2, … in the ground truth's
order (0 elsewhere; what teacher-forced finding slots are built from,
`vipet.model.findings_slots.teacher_slots`), ``diag_targets`` ``(R, 29)``, and
``task``, ``study_id``, ``region`` (a REGIONS name or "whole").

`collate` pads a batch (right padding) and stacks its images; all items of a batch must
have the same R, which `RegionCountBatchSampler` guarantees.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from transformers import PreTrainedTokenizerBase

from vipet.data.prompts import (
    IGNORE_INDEX,
    build_example,
    question_prompt,
    report_prompt,
    target_text,
)
from vipet.data.tokenizer import WHOLE
from vipet.errors import InputError
from vipet.io.vipet_dataset import ground_truth, read_dataset
from vipet.model.diag_head import LABELS_PER_REGION, diag_targets, label_index
from vipet.preprocess.cache import MANIFEST, load_shard
from vipet.preprocess.pipeline import RegionSample
from vipet.reports.schema import REGIONS

TASKS: tuple[str, ...] = ("report", "vqa")
LANGS: tuple[str, ...] = ("vi", "en")
REPORT_SCOPES: tuple[str, ...] = ("region", "study", "both")


@dataclass(frozen=True)
class DataConfig:
    """Which examples a `ViPetDataset` makes and how it mixes them."""

    tasks_ratio: dict[str, float] = field(default_factory=lambda: {"report": 0.5, "vqa": 0.5})
    """Share of each task ("report", "vqa") in an epoch; relative weights, ≥ 0."""
    langs: tuple[str, ...] = ("vi", "en")
    """Languages of the prompts and targets."""
    report_scope: str = "region"
    """"region": one report example per region; "study": one whole-study example;
    "both": both kinds."""
    max_length: int = 1024
    """Longest example in tokens (the answer is cut beyond it)."""
    seed: int = 0
    """Seed of the task mixing (the fixed epoch order)."""

    def __post_init__(self) -> None:
        if not isinstance(self.tasks_ratio, Mapping) or not self.tasks_ratio:
            raise ValueError(f"tasks_ratio must be a non-empty mapping, got {self.tasks_ratio!r}")
        for task, ratio in self.tasks_ratio.items():
            if task not in TASKS:
                raise ValueError(f"unknown task {task!r} in tasks_ratio; choose from {list(TASKS)}")
            if (
                isinstance(ratio, bool)
                or not isinstance(ratio, (int, float))
                or not math.isfinite(ratio)
                or ratio < 0
            ):
                raise ValueError(
                    f"tasks_ratio[{task!r}] must be a finite number ≥ 0, got {ratio!r}"
                )
        if sum(self.tasks_ratio.values()) <= 0:
            raise ValueError("tasks_ratio needs at least one task with a positive ratio")
        langs = tuple(self.langs) if not isinstance(self.langs, str) else (self.langs,)
        object.__setattr__(self, "langs", langs)
        if not langs or any(lang not in LANGS for lang in langs) or len(set(langs)) != len(langs):
            raise ValueError(
                f"langs must be distinct values from {list(LANGS)}, got {self.langs!r}"
            )
        if self.report_scope not in REPORT_SCOPES:
            raise ValueError(
                f"report_scope must be one of {list(REPORT_SCOPES)}, got {self.report_scope!r}"
            )
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int):
            raise ValueError(f"max_length must be an integer, got {self.max_length!r}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {self.max_length}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")


@dataclass(frozen=True)
class Example:
    """One training example before tokenisation."""

    task: str  # "report" or "vqa"
    study_id: str
    region: str  # a REGIONS name or WHOLE
    lang: str
    question: str | None = None  # vqa only
    answer: str | None = None  # vqa only (a report's target is made from the report)

    @property
    def n_regions(self) -> int:
        return len(REGIONS) if self.region == WHOLE else 1

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(REGIONS) if self.region == WHOLE else (self.region,)


def _mix(
    tasks: Mapping[str, list[Example]], ratio: Mapping[str, float], seed: int
) -> list[Example]:
    """The epoch order: each task's examples over/undersampled to its share, shuffled."""
    active = [t for t in TASKS if ratio.get(t, 0) > 0]
    for t in active:
        if not tasks.get(t):
            raise InputError(f"tasks_ratio asks for {t!r} examples but the split has none")
    total = sum(len(tasks[t]) for t in active)
    weight = sum(ratio[t] for t in active)
    rng = np.random.default_rng(seed)
    out: list[Example] = []
    left = total
    for i, t in enumerate(active):
        n = left if i == len(active) - 1 else min(left, round(total * ratio[t] / weight))
        left -= n
        pool = tasks[t]
        picks: list[int] = []
        while len(picks) < n:
            picks.extend(rng.permutation(len(pool)).tolist())
        out.extend(pool[j] for j in picks[:n])
    order = rng.permutation(len(out))
    return [out[j] for j in order]


class ViPetDataset(Dataset):
    """Report and question examples of one split, with their cached images."""

    def __init__(
        self,
        data_root: str | Path,
        cache_dir: str | Path,
        split: str,
        tokenizer: PreTrainedTokenizerBase,
        n_visual: int,
        config: DataConfig | None = None,
        shard_cache_size: int = 4,
    ) -> None:
        self.data_root = Path(data_root)
        self.cache_dir = Path(cache_dir)
        self.split = split
        self.tokenizer = tokenizer
        self.n_visual = n_visual
        self.config = config or DataConfig()
        if shard_cache_size < 1:
            raise ValueError(f"shard_cache_size must be at least 1, got {shard_cache_size}")
        self._shard_cache_size = shard_cache_size
        self._shards: OrderedDict[str, dict[str, RegionSample]] = OrderedDict()

        desc = read_dataset(self.data_root)
        self.study_ids: list[str] = [s["id"] for s in desc["studies"] if s.get("split") == split]
        if not self.study_ids:
            raise InputError(f"no study in split {split!r}", self.data_root / "dataset.json")
        self._shard_paths = self._find_shards()
        self._gt: dict[str, dict[str, Any]] = {
            sid: ground_truth(self.data_root, sid) for sid in self.study_ids
        }
        self.tasks: dict[str, list[Example]] = {
            "report": self._report_examples(),
            "vqa": self._vqa_examples(),
        }
        self.examples: list[Example] = _mix(self.tasks, self.config.tasks_ratio, self.config.seed)

    # ---- enumeration ----------------------------------------------------------------

    def _find_shards(self) -> dict[str, Path]:
        path = self.cache_dir / MANIFEST
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"no readable preprocessing cache manifest ({exc})", path) from exc
        entries = {e["study"]: e for e in manifest.get("studies", ())}
        failed = {f["study"]: f.get("error", "") for f in manifest.get("failed", ())}
        out: dict[str, Path] = {}
        for sid in self.study_ids:
            if sid not in entries:
                why = f" (preprocessing failed: {failed[sid]})" if sid in failed else ""
                raise InputError(
                    f"study {sid!r} of split {self.split!r} is not in the preprocessing cache"
                    f"{why}; rebuild the cache with build_cache",
                    path,
                )
            out[sid] = self.cache_dir / entries[sid]["shard"]
        return out

    def _report_examples(self) -> list[Example]:
        scope = self.config.report_scope
        regions: list[str] = []
        if scope in ("region", "both"):
            regions.extend(REGIONS)
        if scope in ("study", "both"):
            regions.append(WHOLE)
        out = []
        for sid in self.study_ids:
            for lang in self.config.langs:
                if not self._gt[sid].get(f"report_{lang}"):
                    continue
                out.extend(Example("report", sid, r, lang) for r in regions)
        return out

    def _vqa_examples(self) -> list[Example]:
        out = []
        for sid in self.study_ids:
            for lang in self.config.langs:
                for qa in self._gt[sid].get(f"questions_{lang}") or ():
                    region = qa.get("region")
                    region = region if region in REGIONS else WHOLE
                    out.append(Example("vqa", sid, region, lang, qa["question"], qa["answer"]))
        return out

    # ---- images ---------------------------------------------------------------------

    def _samples(self, study_id: str) -> dict[str, RegionSample]:
        """The study's region samples by region name, through a small LRU cache."""
        if study_id in self._shards:
            self._shards.move_to_end(study_id)
            return self._shards[study_id]
        path = self._shard_paths[study_id]
        samples = {s.region: s for s in load_shard(path)}
        missing = [r for r in REGIONS if r not in samples]
        if missing:
            raise InputError(f"cache shard of study {study_id!r} lacks regions {missing}", path)
        self._shards[study_id] = samples
        while len(self._shards) > self._shard_cache_size:
            self._shards.popitem(last=False)
        return samples

    @staticmethod
    def _lesion(sample: RegionSample) -> np.ndarray | None:
        if sample.lesion is not None:
            lesion = sample.lesion > 0
            if lesion.any():
                return lesion
        return None

    @classmethod
    def _masks(cls, sample: RegionSample) -> tuple[np.ndarray, np.ndarray]:
        """``(roi, lesion)`` of one region: the lesion mask (all False without lesions)
        and the alignment target (that mask, else the PET ROI)."""
        lesion = cls._lesion(sample)
        if lesion is None:
            return sample.roi.astype(bool), np.zeros(sample.ct.shape, dtype=bool)
        return lesion, lesion

    @staticmethod
    def _lesion_classes(sample: RegionSample, lesions: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """``(D, H, W)`` uint8 class map: ``1 + label_index(type, avidity)`` on each lesion's
        voxels (the mask's label is the lesion's ``id``), 0 elsewhere. Every lesion the
        volume shows is labelled, also one the report files under a neighbouring region:
        the token classes describe what is in the patch."""
        out = np.zeros(sample.ct.shape, dtype=np.uint8)
        if sample.lesion is None:
            return out
        by_id = {int(les["id"]): les for les in lesions if "id" in les}
        for label in np.unique(sample.lesion):
            les = by_id.get(int(label))
            if label == 0 or les is None:
                continue
            out[sample.lesion == label] = 1 + label_index(les["type"], bool(les["fdg_avid"]))
        return out

    @staticmethod
    def _filed_lesions(
        sample: RegionSample, region: str, lesions: Sequence[Mapping[str, Any]]
    ) -> np.ndarray:
        """``(D, H, W)`` uint8: the voxels of the n-th lesion the report files under
        ``region`` (in ground-truth order) labelled n. Unlike `_lesion_classes`, a lesion
        that only reaches into this volume from a neighbouring region is left out: these
        are the lesions the region's report describes."""
        out = np.zeros(sample.ct.shape, dtype=np.uint8)
        if sample.lesion is None:
            return out
        filed = [int(les["id"]) for les in lesions if les.get("region") == region and "id" in les]
        if len(filed) > 255:
            raise ValueError(f"{len(filed)} lesions filed under {region}: at most 255 fit uint8")
        for n, lesion_id in enumerate(filed, start=1):
            out[sample.lesion == lesion_id] = n
        return out

    def lesion_mask(self, study_id: str, region: str) -> np.ndarray | None:
        """The ``(D, H, W)`` bool lesion mask of one region, or None when the region holds
        no lesion voxels — the case where an item's ``roi`` falls back to the PET ROI, which
        evaluations of "did the model look at the lesion" must leave out."""
        return self._lesion(self._samples(study_id)[region])

    # ---- items ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.examples)

    def n_regions(self, index: int) -> int:
        """R of item ``index`` (1 or 3), without loading anything."""
        return self.examples[index].n_regions

    def text(self, example: Example) -> tuple[list[dict[str, str]], str]:
        """The prompt messages and the answer of ``example``."""
        region = None if example.region == WHOLE else example.region
        if example.task == "report":
            report = self._gt[example.study_id][f"report_{example.lang}"]
            return (
                report_prompt(example.lang, region, self.n_visual),
                target_text(report, region, example.lang),
            )
        assert example.question is not None and example.answer is not None
        messages = question_prompt(example.lang, example.question, self.n_visual, region)
        return messages, example.answer

    def __getitem__(self, index: int) -> dict[str, Any]:
        ex = self.examples[index]
        messages, answer = self.text(ex)
        enc = build_example(self.tokenizer, messages, answer, self.config.max_length)
        samples = self._samples(ex.study_id)
        chosen = [samples[r] for r in ex.regions]
        lesions = self._gt[ex.study_id].get("lesions") or []
        diag = torch.stack([diag_targets(lesions, r) for r in ex.regions])
        roi, lesion = zip(*(self._masks(s) for s in chosen), strict=True)
        classes = [self._lesion_classes(s, lesions) for s in chosen]
        filed = [
            self._filed_lesions(s, r, lesions) for s, r in zip(chosen, ex.regions, strict=True)
        ]
        return {
            "input_ids": torch.tensor(enc["input_ids"], dtype=torch.long),
            "attention_mask": torch.tensor(enc["attention_mask"], dtype=torch.long),
            "labels": torch.tensor(enc["labels"], dtype=torch.long),
            "ct": torch.from_numpy(np.stack([s.ct for s in chosen]).astype(np.float32)),
            "pet": torch.from_numpy(np.stack([s.pet for s in chosen]).astype(np.float32)),
            "roi": torch.from_numpy(np.stack(roi)),
            "lesion": torch.from_numpy(np.stack(lesion)),
            "lesion_class": torch.from_numpy(np.stack(classes)),
            "filed_lesions": torch.from_numpy(np.stack(filed)),
            "diag_targets": diag.reshape(len(chosen), LABELS_PER_REGION),
            "task": ex.task,
            "study_id": ex.study_id,
            "region": ex.region,
        }


# ---- batching -----------------------------------------------------------------------

_IMAGE_KEYS = ("ct", "pet", "roi", "lesion", "lesion_class", "filed_lesions", "diag_targets")
_TEXT_PADS = (("input_ids", None), ("attention_mask", 0), ("labels", IGNORE_INDEX))


def collate(batch: Sequence[Mapping[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-pad the token tensors of ``batch`` to its longest item (input_ids with
    ``pad_id``, attention_mask with 0, labels with -100) and stack its images; all items
    must have the same number of regions R."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    counts = sorted({int(item["ct"].shape[0]) for item in batch})
    if len(counts) > 1:
        raise ValueError(
            f"batch mixes items with {counts} regions; images stack only for equal R — "
            "batch with RegionCountBatchSampler (group_by_regions=True)"
        )
    longest = max(int(item["input_ids"].shape[0]) for item in batch)
    out: dict[str, Any] = {}
    for key, pad in _TEXT_PADS:
        value = pad_id if pad is None else pad
        rows = torch.full((len(batch), longest), value, dtype=torch.long)
        for i, item in enumerate(batch):
            seq = item[key]
            rows[i, : seq.shape[0]] = seq
        out[key] = rows
    for key in _IMAGE_KEYS:
        out[key] = torch.stack([item[key] for item in batch])
    for key in ("task", "study_id", "region"):
        out[key] = [item[key] for item in batch]
    return out


class RegionCountBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices whose items all have the same number of regions R.

    Indices are grouped by R (``dataset.n_regions(i)``) and cut into batches of
    ``batch_size`` (the last batch of a group may be smaller unless ``drop_last``).
    With ``shuffle`` the indices inside each group and the order of the batches are
    permuted by a generator seeded with ``(seed, epoch)``: the same seed and epoch give
    the same batches; call `set_epoch` before each epoch for a new order. Without
    ``shuffle`` the batches follow the dataset order.
    """

    group_by_regions = True

    def __init__(
        self,
        dataset: ViPetDataset,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        groups: dict[int, list[int]] = {}
        for i in range(len(dataset)):
            groups.setdefault(dataset.n_regions(i), []).append(i)
        self.groups = dict(sorted(groups.items()))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch)) if self.shuffle else None
        batches: list[list[int]] = []
        for idx in self.groups.values():
            order = [idx[j] for j in rng.permutation(len(idx))] if rng is not None else idx
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                if len(chunk) < self.batch_size and self.drop_last:
                    continue
                batches.append(chunk)
        if rng is not None:
            batches = [batches[j] for j in rng.permutation(len(batches))]
        else:
            batches.sort(key=lambda b: b[0])
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        if self.drop_last:
            return sum(len(v) // self.batch_size for v in self.groups.values())
        return sum(math.ceil(len(v) / self.batch_size) for v in self.groups.values())


__all__ = [
    "DataConfig",
    "Example",
    "RegionCountBatchSampler",
    "ViPetDataset",
    "collate",
]
