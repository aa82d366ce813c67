"""Fit a trained model's candidate scorer (`vipet.model.candidate_scorer`) on the peaks
its findings head gives on the training split.

Every heatmap peak above the scorer's floor in each region volume of each training
study is one example: its features (`scorer_inputs`) and its class from the lesion
masks — the lesion of that region within one head voxel of the peak (the one under the
peak itself when there is one, else the one covering most of the 3x3x3 neighbourhood),
or background. The network is not touched; the scorer is stored with it, and the
per-class thresholds calibrated on the heat no longer apply, so they are cleared
(`vipet.inference.calibrate` tunes new ones on the scorer's output next).

    vipet calibrate --checkpoint runs/cpu-small/model --data DATA --cache CACHE --fit-scorer
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vipet.errors import InputError
from vipet.model.candidate_scorer import (
    CandidateScorer,
    ScorerConfig,
    class_index,
    class_name,
    fit_scorer,
)


def peak_labels(
    voxels: torch.Tensor,
    head_ids: torch.Tensor,
    lesions: Mapping[int, Mapping[str, Any]],
    region: str,
) -> list[int]:
    """The scorer's class of each peak ``voxels`` (N, 3) of one region volume:
    ``head_ids`` (D0, H0, W0) is its lesion-id map on the head's grid (block maximum),
    ``lesions`` the study's lesions by id; a lesion of another region is none of this
    volume's (that region reports it)."""
    out = []
    for z, y, x in voxels.tolist():
        near = head_ids[max(0, z - 1) : z + 2, max(0, y - 1) : y + 2, max(0, x - 1) : x + 2]
        counts = Counter(
            int(v)
            for v in near.flatten().tolist()
            if v and lesions.get(int(v), {}).get("region") == region
        )
        at = int(head_ids[z, y, x])
        lid = at if at in counts else (counts.most_common(1)[0][0] if counts else 0)
        if lid:
            les = lesions[lid]
            out.append(class_index(str(les["type"]), bool(les["fdg_avid"])))
        else:
            out.append(0)
    return out


def scorer_examples(
    model: Any, dataset: Any, ids: Sequence[str], progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``(N, N_FEATURES)`` and classes ``(N,)`` of every candidate peak of the
    studies ``ids`` of ``dataset`` (a `ViPetDataset` with ground truth)."""
    from vipet.evaluation.detector import encoded_studies
    from vipet.model.findings_slots import scorer_inputs

    regions = list(model.config.regions)
    feats: list[torch.Tensor] = []
    labels: list[int] = []
    for e in encoded_studies(model, dataset, ids, "scorer examples", progress):
        found = scorer_inputs(
            e.dense,
            e.pet[:, 0],
            e.ct[:, 0],
            model.region_indices(),
            e.zones,
            model.config.pet_scaling,
            model.config.pet_vmax,
        )
        lesions = {int(les["id"]): les for les in dataset._gt[e.study].get("lesions") or []}
        stride = [n // m for n, m in zip(e.ct.shape[2:], e.dense.heat.shape[1:], strict=True)]
        for region, sample, (voxels, x) in zip(regions, e.samples, found, strict=True):
            if not len(voxels):
                continue
            ids_map = (
                np.zeros(sample.ct.shape, np.int64) if sample.lesion is None else sample.lesion
            )
            head = F.max_pool3d(
                torch.from_numpy(ids_map.astype(np.int64))[None, None].float(), stride, stride
            )[0, 0].long()
            feats.append(x.float())
            labels.extend(peak_labels(voxels, head, lesions, region))
    if not feats:
        raise InputError("no heatmap peak on any study: nothing to fit the scorer on")
    return torch.cat(feats), torch.tensor(labels, dtype=torch.long)


@dataclass
class ScorerFit:
    examples: int
    by_class: dict[str, int]
    """Examples per class ("background", "<type>/avid", "<type>/not_avid")."""
    loss: float
    accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _class_label(index: int) -> str:
    if index == 0:
        return "background"
    kind, avid = class_name(index)
    return f"{kind}/{'avid' if avid else 'not_avid'}"


def fit_scorer_model(
    model_dir: Path,
    data: Path,
    cache: Path,
    split: str = "train",
    config: ScorerConfig | None = None,
    max_studies: int | None = None,
    progress: bool = True,
    loaded: tuple[Any, Any] | None = None,
    seed: int = 0,
) -> ScorerFit:
    """Fit a scorer for the saved model at ``model_dir`` on ``split`` and save the model
    with it (slot thresholds cleared). ``loaded``: the model and tokenizer of
    ``model_dir``, when already loaded (it gets the scorer too)."""
    from vipet.evaluation.detector import load_split
    from vipet.model.checkpoint import load_vipet, save_vipet

    model, tok = loaded or load_vipet(model_dir)
    if not model.config.findings_slots:
        raise InputError("the model has no finding slots: nothing to rescore", model_dir)
    config = config or ScorerConfig()
    ds, ids, _ = load_split(data, cache, split, model, tok, max_studies)
    x, y = scorer_examples(model, ds, ids, progress=progress)
    scorer = CandidateScorer(config)
    stats = fit_scorer(scorer, x, y, seed=seed)
    model.candidate_scorer = scorer.eval()
    model.config.candidate_scorer = config.to_dict()
    model.config.slot_thresholds = None
    save_vipet(model, tok, model_dir)
    counts = Counter(_class_label(int(c)) for c in y.tolist())
    return ScorerFit(len(y), dict(counts.most_common()), stats["loss"], stats["accuracy"])


def scorer_table(fit: ScorerFit) -> str:
    """A fit's examples per class and training fit, as Markdown."""
    lines = [
        f"candidate scorer: {fit.examples} peaks, training loss {fit.loss:.3f}, "
        f"accuracy {fit.accuracy:.3f}",
        "| class | peaks |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in fit.by_class.items()]
    return "\n".join(lines)
