"""Crops of region volumes for training the vision side (encoders, fusion, findings head).

The findings head learns from voxels, and most voxels of a region are not lesions: a
region volume of 64 x 96 x 96 holds one or two lesions of a few dozen voxels each. Cut
into crops the size of a few encoder tokens — two in three centred near a lesion — the
same CPU second shows the detector several times more lesions (docs/training.md).

`VisionCrops` holds a split's region volumes in memory (float16; for the 420 training
studies of a 600-study phantom at 64 x 96 x 96, about 3 GB — the ``source`` dataset's
own arrays when one is given, as the trainer does) with what their targets need:
the lesion-id map on the head's grid, each lesion's attributes (`lesion_table`) and its
centre and spread (for the heatmap). An item is one crop: the whole depth of its region
and ``CropConfig.tokens`` encoder tokens in-plane, aligned to the token grid so the
encoders can take the crop's tokens' positions (`ViT3D.forward_features`). Which region
and where is a function of (seed, epoch, index) only, so a resumed run sees the same
crops. Every region appears ``crops_per_region`` times an epoch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from vipet.data.dataset import ViPetDataset, shard_paths
from vipet.errors import InputError
from vipet.io.vipet_dataset import ground_truth, read_dataset
from vipet.model.diag_head import (
    LABELS_PER_REGION,
    diag_targets,
    heat_targets,
    lesion_centres,
    lesion_table,
)
from vipet.preprocess.cache import load_shard


@dataclass(frozen=True)
class CropConfig:
    """How `VisionCrops` cuts region volumes."""

    tokens: tuple[int, int] = (3, 3)
    """Crop size in encoder tokens, in-plane (H, W); the crop takes the whole depth."""
    lesion_share: float = 0.67
    """Share of crops centred near a lesion (when the region has one)."""
    jitter: int = 20
    """How far (input voxels, in-plane) a lesion-centred crop's centre may miss the
    lesion, so the lesion is not always in the middle."""
    crops_per_region: int = 4
    """Crops of each region per epoch (of a region without lesions; see ``balance``)."""
    balance: float = 0.0
    """Long-tail sampling: a lesion of a (type, avidity) class seen ``n`` times in the
    split weighs ``(n_max / n) ** balance`` — 0 weighs all alike, 0.5 is the usual
    square-root rebalancing. A region gets ``crops_per_region`` crops an epoch times the
    weight of its rarest lesion, and its lesion-centred crops pick lesions by weight, so
    the few ground-glass opacities, calcified nodules and effusions of a phantom are seen
    more than once or twice a run (docs/training.md)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(self.tokens))
        if len(self.tokens) != 2 or min(self.tokens) < 1:
            raise ValueError(f"tokens must be two sizes >= 1 (H, W), got {self.tokens}")
        if not 0.0 <= self.lesion_share <= 1.0:
            raise ValueError(f"lesion_share must be in [0, 1], got {self.lesion_share}")
        if self.jitter < 0 or self.crops_per_region < 1:
            raise ValueError("jitter must be >= 0 and crops_per_region >= 1")
        if self.balance < 0:
            raise ValueError(f"balance must be >= 0, got {self.balance}")


@dataclass
class _Region:
    ct: np.ndarray  # (D, H, W) float16
    pet: np.ndarray  # (D, H, W) float16
    ids: torch.Tensor  # (D0, H0, W0) uint8 lesion ids on the head's grid
    table: torch.Tensor  # (5, 256)
    centres: list[tuple[tuple[float, float, float], tuple[float, float, float]]]  # head grid
    region: str
    lesions: list[dict[str, Any]]
    centre_ids: list[int]  # the lesion id of each entry of ``centres``


class VisionCrops(Dataset):
    """Lesion-centred crops of one split's region volumes (see the module doc)."""

    def __init__(
        self,
        data_root: str | Path,
        cache_dir: str | Path,
        split: str,
        patch_size: Sequence[int],
        head_stride: Sequence[int],
        config: CropConfig | None = None,
        seed: int = 0,
        progress: bool = True,
        source: ViPetDataset | None = None,
    ) -> None:
        self.config = config or CropConfig()
        self.patch = tuple(int(p) for p in patch_size)
        self.stride = tuple(int(s) for s in head_stride)
        self.seed = seed
        self.epoch = 0
        data_root, cache_dir = Path(data_root), Path(cache_dir)
        ids = [s["id"] for s in read_dataset(data_root)["studies"] if s.get("split") == split]
        if not ids:
            raise InputError(f"no study in split {split!r}", data_root / "dataset.json")
        if source is not None and list(source.study_ids) != ids:
            raise ValueError(f"source holds other studies than split {split!r}")
        shards = shard_paths(cache_dir, ids, split)
        with ThreadPoolExecutor(2) as pool:
            loaded = list(
                tqdm(
                    pool.map(lambda sid: self._load(data_root, sid, shards[sid], source), ids),
                    total=len(ids),
                    desc=f"load {split} volumes",
                    disable=not progress,
                    leave=False,
                )
            )
        self.regions: list[_Region] = [r for study in loaded for r in study]
        self._weigh()
        shape = self.regions[0].ct.shape
        th, tw = self.config.tokens
        if th * self.patch[1] > shape[1] or tw * self.patch[2] > shape[2]:
            raise InputError(
                f"crops of {self.config.tokens} tokens do not fit regions of {shape}", cache_dir
            )

    def _load(
        self, data_root: Path, study_id: str, shard: Path, source: ViPetDataset | None
    ) -> list[_Region]:
        # With a ``source`` dataset the volumes are its in-memory ones (read once, held
        # once, for both training phases); else they are read from the shard here.
        if source is not None:
            gt, samples = source._gt[study_id], list(source._samples(study_id).values())
        else:
            gt, samples = ground_truth(data_root, study_id), load_shard(shard)
        lesions = list(gt.get("lesions") or [])
        table = lesion_table(lesions)
        out = []
        for s in samples:
            ids = torch.zeros(s.ct.shape, dtype=torch.uint8)
            if s.lesion is not None:
                ids = torch.from_numpy(s.lesion.astype(np.uint8))
            # the head's grid: block maximum, so a lesion smaller than a head voxel stays
            head = F.max_pool3d(ids[None].float(), self.stride, self.stride)[0].to(torch.uint8)
            found = lesion_centres(head)
            centres = [(c, sg) for _, c, sg in found]
            out.append(
                _Region(
                    s.ct.astype(np.float16, copy=False),
                    s.pet.astype(np.float16, copy=False),
                    head,
                    table,
                    centres,
                    s.region,
                    lesions,
                    [int(i) for i, _, _ in found],
                )
            )
        return out

    def _weigh(self) -> None:
        """Per region, the weight of each lesion centre and the regions' order of an
        epoch (``CropConfig.balance``)."""

        def key(les: Mapping[str, Any]) -> tuple[str, bool]:
            return str(les.get("type")), bool(les.get("fdg_avid"))

        counts: dict[tuple[str, bool], int] = {}
        for r in self.regions:
            for les in r.lesions:
                if int(les.get("id", -1)) in r.centre_ids and les.get("region") == r.region:
                    counts[key(les)] = counts.get(key(les), 0) + 1
        top = max(counts.values(), default=1)
        self.weights: list[np.ndarray] = []
        repeats = []
        for r in self.regions:
            by_id = {int(les["id"]): les for les in r.lesions if "id" in les}
            w = np.array(
                [
                    (top / counts.get(key(by_id[i]), top)) ** self.config.balance
                    # "other" (a non-avid bone lesion) is no class a reader can score
                    if i in by_id and by_id[i].get("type") != "other"
                    else 1.0
                    for i in r.centre_ids
                ]
            )
            self.weights.append(w)
            repeats.append(max(1, round(self.config.crops_per_region * (w.max() if len(w) else 1))))
        # Round robin over the regions, so at balance 0 item i is region i mod R as ever.
        self.order: list[int] = [
            n for rep in range(max(repeats)) for n, k in enumerate(repeats) if k > rep
        ]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.order)

    def n_regions(self, index: int) -> int:
        """Every item is one volume (the batch samplers group by this)."""
        return 1

    def __getitem__(self, index: int) -> dict[str, Any]:
        cfg = self.config
        n = self.order[index]
        r, weights = self.regions[n], self.weights[n]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        _, h, w = r.ct.shape
        size = (cfg.tokens[0] * self.patch[1], cfg.tokens[1] * self.patch[2])
        if r.centres and rng.random() < cfg.lesion_share:
            if self.config.balance:
                c, _ = r.centres[int(rng.choice(len(r.centres), p=weights / weights.sum()))]
            else:  # the draw of balance 0 as it always was (same crops, same runs)
                c, _ = r.centres[int(rng.integers(len(r.centres)))]
            cy = c[1] * self.stride[1] + int(rng.integers(-cfg.jitter, cfg.jitter + 1))
            cx = c[2] * self.stride[2] + int(rng.integers(-cfg.jitter, cfg.jitter + 1))
        else:
            cy, cx = int(rng.integers(h)), int(rng.integers(w))
        ty = int(
            np.clip(
                round((cy - size[0] / 2) / self.patch[1]), 0, h // self.patch[1] - cfg.tokens[0]
            )
        )
        tx = int(
            np.clip(
                round((cx - size[1] / 2) / self.patch[2]), 0, w // self.patch[2] - cfg.tokens[1]
            )
        )
        y0, x0 = ty * self.patch[1], tx * self.patch[2]
        crop = (slice(None), slice(y0, y0 + size[0]), slice(x0, x0 + size[1]))
        hy0, hx0 = y0 // self.stride[1], x0 // self.stride[2]
        hsize = (r.ids.shape[0], size[0] // self.stride[1], size[1] // self.stride[2])
        ids = r.ids[:, hy0 : hy0 + hsize[1], hx0 : hx0 + hsize[2]]
        heat = heat_targets([r.centres], hsize, torch.tensor([[0.0, hy0, hx0]]))[0]
        present = {int(i) for i in torch.unique(ids).tolist() if i}
        shown = [les for les in r.lesions if int(les["id"]) in present]
        diag = diag_targets([{**les, "region": r.region} for les in shown], r.region)
        return {
            "ct": torch.from_numpy(r.ct[crop].astype(np.float32))[None],
            "pet": torch.from_numpy(r.pet[crop].astype(np.float32))[None],
            "offsets": torch.tensor([0, ty, tx]),
            "ids": ids.clone(),
            "tables": r.table,
            "heat": heat,
            "diag_targets": diag.reshape(LABELS_PER_REGION),
        }


def collate_crops(batch: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack crops: ``ct``/``pet`` (B, 1, D, h, w), ``offsets`` (B, 3), ``ids``/``heat``
    (B, D0, h0, w0), ``tables`` (B, 5, 256), ``diag_targets`` (B, 29)."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    return {k: torch.stack([item[k] for item in batch]) for k in batch[0]}


__all__ = ["CropConfig", "VisionCrops", "collate_crops"]
