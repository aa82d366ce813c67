"""Did the model look at the lesion? Attention-in-lesion scores of a ViPET-VLM.

The alignment loss (DOMAIN.md §1) pushes the language model's attention from the answer
tokens towards the ROI. Whether it worked is read off held-out regions that hold lesion
voxels: the model is teacher-forced on the reference region report, the attention map
from the answer tokens to the voxels is built as in training
(`ViPetModel.attention_maps`: top heads, resampler, patch upsampling, min–max
normalisation), and two scores are taken per region:

- **mass in lesion** — the share of the map's total mass inside the lesion mask
  (``Σ a·m / Σ a``). A uniform map scores the lesion's volume share, reported as
  **chance** so the number can be read: mass well above chance means the attention
  concentrates on the lesion.
- **pointing game** — a hit when the map's peak lies inside the lesion mask dilated by
  one voxel (26-neighbourhood). Maps are constant over each encoder patch, so the peak
  (argmax) is a set of tied voxels — the most attended patch; it is a hit when any voxel
  of it falls in the dilated mask (``np.argmax`` would otherwise let memory order break
  the tie). A flat map points nowhere: no hit, and its mass is the chance level. Its
  chance level is the share of encoder patches that touch the dilated lesion (a peak on
  a random patch): coarse patch grids make it high, so read the hit rate against it.

Regions without lesion voxels are left out: their training ROI is the PET-derived
fallback, not a finding, so "attention on the lesion" has no meaning there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from tqdm import tqdm

from vipet.data.dataset import DataConfig, ViPetDataset, collate
from vipet.data.prompts import IGNORE_INDEX
from vipet.reports.schema import REGIONS

POINTING_TOLERANCE = 1
"""Voxels by which the lesion mask is dilated for the pointing game."""


@dataclass(frozen=True)
class RegionScore:
    """The attention scores of one region (see the module docstring)."""

    mass: float
    """Share of the map's mass inside the lesion mask, in [0, 1]."""
    hit: bool
    """Whether the map's peak lies in the lesion mask dilated by the tolerance."""
    chance: float
    """The lesion's volume share: the mass a uniform map would score."""
    pointing_chance: float | None = None
    """Share of patches touching the dilated lesion: the hit rate of a random peak patch
    (None when the patch layout was not given)."""


def lesion_attention_scores(
    attention: np.ndarray,
    lesion: np.ndarray,
    tolerance: int = POINTING_TOLERANCE,
    patch_ids: np.ndarray | None = None,
) -> RegionScore:
    """Mass in lesion, pointing hit and chance of one ``(D, H, W)`` map (values ≥ 0)
    against a non-empty bool lesion mask of the same shape. ``patch_ids``: the encoder
    patch of each voxel (same shape, ids 0..N-1), for the pointing chance."""
    a = np.asarray(attention, dtype=np.float64)
    m = np.asarray(lesion, dtype=bool)
    if a.shape != m.shape:
        raise ValueError(f"attention map {a.shape} and lesion mask {m.shape} differ in shape")
    if not m.any():
        raise ValueError("the lesion mask is empty: no attention-in-lesion score exists")
    if not np.all(np.isfinite(a)) or a.min() < 0:
        raise ValueError("attention map values must be finite and >= 0")
    chance = float(m.mean())
    near = m
    if tolerance > 0:
        cube = np.ones((3, 3, 3), dtype=bool)
        near = ndimage.binary_dilation(m, structure=cube, iterations=tolerance)
    pointing_chance = None
    if patch_ids is not None:
        ids = np.asarray(patch_ids)
        if ids.shape != m.shape:
            raise ValueError(f"patch ids {ids.shape} and lesion mask {m.shape} differ in shape")
        pointing_chance = len(np.unique(ids[near])) / len(np.unique(ids))
    peak, total = float(a.max()), float(a.sum())
    if total <= 0 or peak <= float(a.min()):
        return RegionScore(chance, False, chance, pointing_chance)
    mass = min(1.0, max(0.0, float(a[m].sum() / total)))
    hit = bool(np.any(near[a >= peak]))
    return RegionScore(mass, hit, chance, pointing_chance)


def patch_layout(grid: tuple[int, int, int], image_shape: tuple[int, ...]) -> np.ndarray:
    """The encoder patch of every voxel, laid out exactly as the attention maps spread a
    token's weight (nearest-neighbour upsampling of the token grid)."""
    n = int(np.prod(grid))
    ids = torch.arange(n, dtype=torch.float64).reshape(1, 1, *grid)
    size = tuple(int(s) for s in image_shape)
    return F.interpolate(ids, size=size, mode="nearest")[0, 0].round().long().numpy()


def summarise(scores: list[RegionScore]) -> dict[str, Any]:
    """Means over regions; None for the means when no region was scored."""
    n = len(scores)
    if n == 0:
        return {
            "mass_in_lesion": None,
            "pointing_hit": None,
            "chance_mass": None,
            "chance_pointing": None,
            "n_regions": 0,
        }
    pointing = [s.pointing_chance for s in scores if s.pointing_chance is not None]
    return {
        "mass_in_lesion": float(np.mean([s.mass for s in scores])),
        "pointing_hit": float(np.mean([s.hit for s in scores])),
        "chance_mass": float(np.mean([s.chance for s in scores])),
        "chance_pointing": float(np.mean(pointing)) if len(pointing) == n else None,
        "n_regions": n,
    }


def _lesion_examples(ds: ViPetDataset, studies: list[str]) -> list[tuple[int, np.ndarray]]:
    """``(item index, lesion mask)`` of the region report examples of ``studies`` whose
    region holds lesion voxels, in study then region order (shards load once each)."""
    rank = {sid: i for i, sid in enumerate(studies)}
    picked = [
        (i, ex)
        for i, ex in enumerate(ds.examples)
        if ex.task == "report" and ex.region in REGIONS and ex.study_id in rank
    ]
    picked.sort(key=lambda p: (rank[p[1].study_id], REGIONS.index(p[1].region), p[0]))
    seen: set[tuple[str, str]] = set()
    out = []
    for i, ex in picked:
        if (ex.study_id, ex.region) in seen:  # the mixing may repeat an example
            continue
        seen.add((ex.study_id, ex.region))
        mask = ds.lesion_mask(ex.study_id, ex.region)
        if mask is not None:
            out.append((i, mask))
    return out


@torch.no_grad()
def attention_in_roi(
    model: Any,
    tokenizer: Any,
    data_root: str | Path,
    cache_dir: str | Path,
    split: str = "test",
    lang: str = "vi",
    max_studies: int | None = None,
    batch_size: int = 4,
    max_length: int = 1024,
    progress: bool = False,
) -> dict[str, Any]:
    """Attention-in-lesion scores of ``model`` on the region reports of ``split``.

    Every region report example (in ``lang``) of the split's first ``max_studies``
    studies (all when None, in ``split_ids`` order) whose region holds lesion voxels is
    teacher-forced on its reference text; the answer tokens are the attention query.
    Returns ``{"mass_in_lesion", "pointing_hit", "chance_mass", "chance_pointing",
    "n_regions"}``: the mean mass in lesion, the pointing-game hit rate, their chance
    levels and the number of regions scored (see the module docstring).
    """
    from vipet.evaluation.runner import split_ids

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    config = DataConfig(
        tasks_ratio={"report": 1.0},
        langs=(lang,),
        report_scope="region",
        max_length=max_length,
    )
    ds = ViPetDataset(
        data_root, cache_dir, split, tokenizer, model.visual_tokens_per_region, config
    )
    studies = split_ids(Path(data_root), split, max_studies)
    chosen = _lesion_examples(ds, studies)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scores: list[RegionScore] = []
    try:
        starts = range(0, len(chosen), batch_size)
        for start in tqdm(starts, desc=f"attention {split}", disable=not progress):
            chunk = chosen[start : start + batch_size]
            batch = collate([ds[i] for i, _ in chunk], pad_id=tokenizer.pad_token_id)
            t = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            out = model(
                input_ids=t["input_ids"],
                attention_mask=t["attention_mask"],
                ct=t["ct"],
                pet=t["pet"],
                output_attentions=True,
                with_diag=False,
            )
            answer = t["labels"] != IGNORE_INDEX
            maps = model.attention_maps(out, t["input_ids"], answer)  # (B, 1, D, H, W)
            patches = patch_layout(out.visual.grid, maps.shape[2:])
            for (_, mask), amap in zip(chunk, maps[:, 0].float().cpu().numpy(), strict=True):
                scores.append(lesion_attention_scores(amap, mask, patch_ids=patches))
    finally:
        model.train(was_training)
    return summarise(scores)


__all__ = [
    "POINTING_TOLERANCE",
    "RegionScore",
    "attention_in_roi",
    "lesion_attention_scores",
    "patch_layout",
    "summarise",
]
