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

**Region report targets** (``DataConfig.region_target``): "section" — the report's own
section for that region, as written; "findings" — the lesions the region's volume shows
(those the ground truth files under the region, `Lesion.region`), rendered in report
order (`report_order`) with the region's physiology and negatives
(`vipet.reports.render.render_region_findings`). The report's sections are anatomical
(a liver lesion at the dome is written under the abdomen, a rib lesion under the
skeleton), while a region's volume is a slab of the body: on the phantom a third of all
lesions are seen in one volume and written in another section, so a "section" target
asks the model to describe lesions it cannot see, and to leave out ones it sees.
"findings" needs a lesion list (the phantom's ground truth); a study without one falls
back to "section".

**Items** (`__getitem__`): ``input_ids``/``attention_mask``/``labels`` (LongTensor, labels
-100 outside the answer), ``ct``/``pet`` ``(R, D, H, W)`` float32 in [0, 1] and ``roi``
``(R, D, H, W)`` bool — R = 1 for a region example, 3 (in REGIONS order) for a
whole-study one; ``roi`` is the lesion mask (labels > 0) of a region whose volume holds
lesion voxels, else the PET ROI of the region —, ``lesion`` ``(R, D, H, W)`` bool, the
lesion mask itself (all False in a region without lesions), ``lesion_ids`` ``(R, D, H,
W)`` uint8, the mask's lesion ids, with ``lesion_tables`` ``(R, 5, 256)`` their
attributes (`vipet.model.diag_head.lesion_table`: the findings head's voxel targets),
``zones`` ``(R, 2)``, the slices that are each region's own (not an overlap with a
neighbour), ``filed_lesions`` ``(R, D, H, W)`` uint8, the lesions the region's report
describes labelled 1, 2, … in report order (at most ``slots``), with ``filed_attrs``
``(R, slots, 7)`` their ground truth (`vipet.model.findings_slots.TEACHER_FIELDS`) —
what teacher-forced finding slots are built from —, ``diag_targets`` ``(R, 29)``, and
``task``, ``study_id``, ``region`` (a REGIONS name or "whole"). With
``volume_dtype=torch.float16`` ``ct``/``pet`` come as float16, as they are held: for a
consumer that converts only the volumes it uses (the trainer's memo of the frozen
vision side reads each volume once, then the language steps need no volumes at all).

`collate` pads a batch (right padding) and stacks its images; all items of a batch must
have the same R, which `RegionCountBatchSampler` guarantees.
"""

from __future__ import annotations

import json
import math
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
from vipet.model.diag_head import (
    AVIDITY,
    FINE_NAMES,
    LABELS_PER_REGION,
    diag_targets,
    lesion_table,
)
from vipet.model.findings_slots import SECTION_KEYS, TEACHER_FIELDS
from vipet.preprocess.cache import MANIFEST, load_shard
from vipet.preprocess.pipeline import RegionSample
from vipet.reports.render import render_region_findings
from vipet.reports.schema import FINE_LOCATIONS, LATERALITIES, LESION_TYPES, REGIONS, Lesion

TASKS: tuple[str, ...] = ("report", "vqa")
LANGS: tuple[str, ...] = ("vi", "en")
REPORT_SCOPES: tuple[str, ...] = ("region", "study", "both")
REGION_TARGETS: tuple[str, ...] = ("section", "findings")


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
    region_target: str = "section"
    """What a region report says: "section" (the report's section) or "findings" (the
    lesions the region's volume shows, in report order; see the module doc)."""
    max_length: int = 1024
    """Longest example in tokens (the answer is cut beyond it)."""
    seed: int = 0
    """Seed of the task mixing (the fixed epoch order)."""
    vqa_turns: int = 1
    """Questions per vqa example. Above 1, the questions of one study, scope and
    language, in a seeded shuffled order, go in conversations of up to this many turns,
    every answer learned (`build_example`'s ``learn_history``): one pass over the images
    teaches several answers, where one-question examples give the ~3-token answers a
    few percent of the LM loss and see each question less than once in a run
    (docs/training.md, run 20). Evaluation still asks each question on its own."""
    question_slot_drop: dict[str, float] = field(default_factory=dict)
    """Per FDG avidity ("avid", "not_avid"): the chance that a lesion is left out of a
    question example's teacher slots (an example's own seeded draw; the kept ones fill
    the slots from the first). At test time the slots are the findings head's
    detections, which miss lesions — non-avid ones most —, so an LM taught only on
    complete slots never answers about a lesion its slots lack; this teaches the answers
    under the slots it will see. Reports keep every lesion: a report describes its
    slots. Empty: no drop. docs/training.md, run 24: at 0.3 / 0.7 the avidity answers did
    not improve and empty slots stopped meaning "normal", so cpu-small leaves it off."""

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
        if self.region_target not in REGION_TARGETS:
            raise ValueError(
                f"region_target must be one of {list(REGION_TARGETS)}, got {self.region_target!r}"
            )
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int):
            raise ValueError(f"max_length must be an integer, got {self.max_length!r}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {self.max_length}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if isinstance(self.vqa_turns, bool) or not isinstance(self.vqa_turns, int):
            raise ValueError(f"vqa_turns must be an integer, got {self.vqa_turns!r}")
        if self.vqa_turns < 1:
            raise ValueError(f"vqa_turns must be at least 1, got {self.vqa_turns}")
        if not isinstance(self.question_slot_drop, Mapping):
            raise ValueError(
                f"question_slot_drop must be a mapping of {list(AVIDITY)} to a chance, "
                f"got {self.question_slot_drop!r}"
            )
        for key, chance in self.question_slot_drop.items():
            if key not in AVIDITY:
                raise ValueError(
                    f"unknown question_slot_drop key {key!r}; choose from {list(AVIDITY)}"
                )
            if isinstance(chance, bool) or not isinstance(chance, int | float):
                raise ValueError(f"question_slot_drop[{key!r}] must be a number, got {chance!r}")
            if not 0.0 <= chance <= 1.0:
                raise ValueError(f"question_slot_drop[{key!r}] must be in [0, 1], got {chance}")


@dataclass(frozen=True)
class Example:
    """One training example before tokenisation."""

    task: str  # "report" or "vqa"
    study_id: str
    region: str  # a REGIONS name or WHOLE
    lang: str
    question: str | None = None  # vqa only
    answer: str | None = None  # vqa only (a report's target is made from the report)
    history: tuple[tuple[str, str], ...] = ()  # vqa only: earlier (question, answer) turns

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


def report_order(lesion: Mapping[str, Any], mask: np.ndarray) -> tuple[int, float, float]:
    """Where ``lesion`` comes in a region's report: by report section of its fine
    location, then head to foot, then image left to right (patient right to left) by the
    centre of its ``mask`` — the order `vipet.model.findings_slots.detect` gives the
    head's detections, so slot j and sentence j are the same lesion."""
    z, _, x = (float(v.mean()) for v in np.nonzero(mask))
    section = FINE_LOCATIONS[lesion["location_detail"]].section
    return (SECTION_KEYS.index(section), z, x)


def teacher_row(lesion: Mapping[str, Any]) -> list[float]:
    """One lesion as a teacher attribute row (`TEACHER_FIELDS`)."""
    return [
        1.0,
        float(LESION_TYPES.index(lesion["type"])),
        float(bool(lesion["fdg_avid"])),
        float(FINE_NAMES.index(lesion["location_detail"])),
        float(LATERALITIES.index(lesion.get("laterality") or "none")),
        float(lesion.get("suvmax") or 0.0),
        float(lesion.get("size_mm") or 0.0),
    ]


def shard_paths(cache_dir: Path, ids: Sequence[str], split: str) -> dict[str, Path]:
    """The cache shard of every study of ``ids`` (of ``split``), from the cache manifest;
    a clear error for a missing manifest or study (with why preprocessing failed)."""
    path = cache_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"no readable preprocessing cache manifest ({exc})", path) from exc
    entries = {e["study"]: e for e in manifest.get("studies", ())}
    failed = {f["study"]: f.get("error", "") for f in manifest.get("failed", ())}
    out: dict[str, Path] = {}
    for sid in ids:
        if sid not in entries:
            why = f" (preprocessing failed: {failed[sid]})" if sid in failed else ""
            raise InputError(
                f"study {sid!r} of split {split!r} is not in the preprocessing cache"
                f"{why}; rebuild the cache with build_cache",
                path,
            )
        out[sid] = cache_dir / entries[sid]["shard"]
    return out


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
        shard_cache_size: int | None = 4,
        slots: int = 0,
        volume_dtype: torch.dtype = torch.float32,
        finding_marker: str = "",
    ) -> None:
        self.data_root = Path(data_root)
        self.cache_dir = Path(cache_dir)
        self.split = split
        self.tokenizer = tokenizer
        self.n_visual = n_visual
        self.slots = slots
        # Opens each lesion's sentence in a region's findings text (models whose slots
        # point into the text, `ViPetConfig.slot_pointer`).
        self.finding_marker = finding_marker
        if volume_dtype not in (torch.float32, torch.float16):
            raise ValueError(
                f"volume_dtype must be torch.float32 or torch.float16, got {volume_dtype}"
            )
        self._volume_dtype = np.float32 if volume_dtype == torch.float32 else np.float16
        self.config = config or DataConfig()
        if shard_cache_size is not None and shard_cache_size < 1:
            raise ValueError(
                f"shard_cache_size must be at least 1 (or None: keep every study), "
                f"got {shard_cache_size}"
            )
        self._shard_cache_size = shard_cache_size
        # Per (study, region), with every study in memory (shard_cache_size None): the
        # teacher slots' lesion map and rows, and the lesions its text lists — finding
        # and ordering a region's lesion masks again for every item showed in profiles.
        self._teachers: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._listed: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
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
        return shard_paths(self.cache_dir, self.study_ids, self.split)

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
        turns = self.config.vqa_turns
        out = []
        for sid in self.study_ids:
            for lang in self.config.langs:
                asked = [
                    (qa.get("region") if qa.get("region") in REGIONS else WHOLE, qa)
                    for qa in self._gt[sid].get(f"questions_{lang}") or ()
                ]
                if turns == 1:  # one example per question, in the file's order
                    out.extend(
                        Example("vqa", sid, r, lang, qa["question"], qa["answer"])
                        for r, qa in asked
                    )
                    continue
                scoped: dict[str, list[tuple[str, str]]] = {}
                for r, qa in asked:
                    scoped.setdefault(r, []).append((qa["question"], qa["answer"]))
                for region, pairs in scoped.items():
                    # a fixed order per conversation (a seed from its identity), so each
                    # question opens one in ``turns``, not always the same one
                    key = f"{self.config.seed}/{sid}/{region}/{lang}/turns"
                    order = np.random.default_rng(zlib.crc32(key.encode())).permutation(len(pairs))
                    pairs = [pairs[i] for i in order]
                    for i in range(0, len(pairs), turns):
                        *history, (question, answer) = pairs[i : i + turns]
                        out.append(
                            Example("vqa", sid, region, lang, question, answer, tuple(history))
                        )
        return out

    # ---- images ---------------------------------------------------------------------

    def _samples(self, study_id: str) -> dict[str, RegionSample]:
        """The study's region samples by region name, through an LRU cache of
        ``shard_cache_size`` studies (None: every study, kept once read). Volumes are
        held in float16, as cached: a shard read (zip inflate) costs more than a
        language-model step on a CPU, so training keeps its split in memory."""
        if study_id in self._shards:
            self._shards.move_to_end(study_id)
            return self._shards[study_id]
        path = self._shard_paths[study_id]
        samples = {
            s.region: replace(s, ct=s.ct.astype(np.float16), pet=s.pet.astype(np.float16))
            for s in load_shard(path)
        }
        missing = [r for r in REGIONS if r not in samples]
        if missing:
            raise InputError(f"cache shard of study {study_id!r} lacks regions {missing}", path)
        self._shards[study_id] = samples
        limit = self._shard_cache_size
        while limit is not None and len(self._shards) > limit:
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

    def _ordered(
        self, sample: RegionSample, region: str, lesions: Sequence[Mapping[str, Any]]
    ) -> list[tuple[Mapping[str, Any], np.ndarray]]:
        """The lesions filed under ``region`` that its volume shows, with their masks, in
        report order (`report_order`), at most ``slots`` of them when the model has slots
        (a detector with K slots reports K)."""
        if sample.lesion is None:
            return []
        found = []
        for les in lesions:
            if les.get("region") != region or "id" not in les:
                continue
            mask = sample.lesion == int(les["id"])
            if mask.any():
                found.append((les, mask))
        found.sort(key=lambda x: report_order(x[0], x[1]))
        return found[: self.slots] if self.slots else found

    def _teacher(
        self, sample: RegionSample, region: str, lesions: Sequence[Mapping[str, Any]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``filed`` (D, H, W) uint8 (the j-th lesion of `_ordered` labelled j + 1) and its
        ``attrs`` (slots, 7) ground truth (`TEACHER_FIELDS`)."""
        filed = np.zeros(sample.ct.shape, dtype=np.uint8)
        attrs = np.zeros((max(self.slots, 1), len(TEACHER_FIELDS)), dtype=np.float32)
        if not self.slots:
            return filed, attrs[:0]
        for j, (les, mask) in enumerate(self._ordered(sample, region, lesions)):
            filed[mask] = j + 1
            attrs[j] = teacher_row(les)
        return filed, attrs

    def _listed_lesions(self, study_id: str, region: str) -> list[Mapping[str, Any]]:
        """The lesions `_ordered` lists for one region of a study (kept when in memory)."""
        key = (study_id, region)
        if key in self._listed:
            return self._listed[key]
        sample = self._samples(study_id)[region]
        lesions = self._gt[study_id].get("lesions") or []
        out = [les for les, _ in self._ordered(sample, region, lesions)]
        if self._shard_cache_size is None:
            self._listed[key] = out
        return out

    def _drop_slots(
        self, ex: Example, region: str, filed: np.ndarray, attrs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(filed, attrs)`` of one volume of a question example with some lesions left
        out (`DataConfig.question_slot_drop`), the kept ones renumbered in order — the
        head's detections fill the slots from the first, whatever it missed."""
        drop = self.config.question_slot_drop
        key = f"{self.config.seed}/{ex.study_id}/{region}/{ex.lang}/{ex.question}/slots"
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        filled = np.flatnonzero(attrs[:, 0] > 0)
        draws = rng.random(len(filled))  # one draw per lesion, whatever its avidity
        kept = [
            int(j)
            for j, u in zip(filled, draws, strict=True)
            if u >= drop.get(AVIDITY[0 if attrs[j, 2] > 0.5 else 1], 0.0)
        ]
        if len(kept) == len(filled):
            return filed, attrs
        relabel = np.zeros(256, dtype=np.uint8)
        relabel[[j + 1 for j in kept]] = np.arange(1, len(kept) + 1, dtype=np.uint8)
        out = np.zeros_like(attrs)
        out[: len(kept)] = attrs[kept]
        return relabel[filed], out

    def _teacher_of(
        self, study_id: str, region: str, sample: RegionSample
    ) -> tuple[np.ndarray, np.ndarray]:
        """`_teacher` of one region of a study (kept when in memory; callers copy)."""
        key = (study_id, region)
        if key in self._teachers:
            return self._teachers[key]
        out = self._teacher(sample, region, self._gt[study_id].get("lesions") or [])
        if self._shard_cache_size is None:
            self._teachers[key] = out
        return out

    @staticmethod
    def _zones(sample: RegionSample) -> tuple[float, float]:
        """The slices ``[lo, hi)`` that are the region's own (all of them for a cache
        written without ``own_slices``)."""
        lo, hi = sample.meta.get("own_slices", (0.0, float(sample.ct.shape[0])))
        return float(lo), float(hi)

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
            gt = self._gt[example.study_id]
            prompt = report_prompt(example.lang, region, self.n_visual)
            if region is not None and self.config.region_target == "findings" and "lesions" in gt:
                ordered = self._listed_lesions(example.study_id, region)
                # one fixed wording per example (a seed from its identity, not its index)
                key = f"{self.config.seed}/{example.study_id}/{region}/{example.lang}"
                rng = np.random.default_rng(zlib.crc32(key.encode()))
                lesions = [Lesion.from_dict(les) for les in ordered]
                text = render_region_findings(
                    lesions, region, example.lang, rng, gt.get("physiology"), self.finding_marker
                )
                return prompt, text
            report = gt[f"report_{example.lang}"]
            return prompt, target_text(report, region, example.lang)
        assert example.question is not None and example.answer is not None
        messages = question_prompt(
            example.lang, example.question, self.n_visual, region, history=example.history
        )
        return messages, example.answer

    def __getitem__(self, index: int) -> dict[str, Any]:
        ex = self.examples[index]
        messages, answer = self.text(ex)
        enc = build_example(
            self.tokenizer, messages, answer, self.config.max_length, learn_history=True
        )
        samples = self._samples(ex.study_id)
        chosen = [samples[r] for r in ex.regions]
        lesions = self._gt[ex.study_id].get("lesions") or []
        diag = torch.stack([diag_targets(lesions, r) for r in ex.regions])
        roi, lesion = zip(*(self._masks(s) for s in chosen), strict=True)
        teacher = [
            self._teacher_of(ex.study_id, r, s) for s, r in zip(chosen, ex.regions, strict=True)
        ]
        if ex.task == "vqa" and self.config.question_slot_drop:
            teacher = [
                self._drop_slots(ex, r, *t) for r, t in zip(ex.regions, teacher, strict=True)
            ]
        ids = [
            np.zeros(s.ct.shape, np.uint8) if s.lesion is None else s.lesion.astype(np.uint8)
            for s in chosen
        ]
        table = lesion_table(lesions)
        return {
            "input_ids": torch.tensor(enc["input_ids"], dtype=torch.long),
            "attention_mask": torch.tensor(enc["attention_mask"], dtype=torch.long),
            "labels": torch.tensor(enc["labels"], dtype=torch.long),
            "ct": torch.from_numpy(
                np.stack([s.ct for s in chosen]).astype(self._volume_dtype, copy=False)
            ),
            "pet": torch.from_numpy(
                np.stack([s.pet for s in chosen]).astype(self._volume_dtype, copy=False)
            ),
            "roi": torch.from_numpy(np.stack(roi)),
            "lesion": torch.from_numpy(np.stack(lesion)),
            "lesion_ids": torch.from_numpy(np.stack(ids)),
            "lesion_tables": table.expand(len(chosen), *table.shape).clone(),
            "zones": torch.tensor([self._zones(s) for s in chosen], dtype=torch.float32),
            "filed_lesions": torch.from_numpy(np.stack([f for f, _ in teacher])),
            "filed_attrs": torch.from_numpy(np.stack([a for _, a in teacher])),
            "diag_targets": diag.reshape(len(chosen), LABELS_PER_REGION),
            "task": ex.task,
            "study_id": ex.study_id,
            "region": ex.region,
        }


# ---- batching -----------------------------------------------------------------------

_IMAGE_KEYS = (
    "ct",
    "pet",
    "roi",
    "lesion",
    "lesion_ids",
    "lesion_tables",
    "zones",
    "filed_lesions",
    "filed_attrs",
    "diag_targets",
)
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
    "report_order",
    "teacher_row",
]
