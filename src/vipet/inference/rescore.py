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
from vipet.reports.schema import REGIONS


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


class PeakBook:
    """Scorer examples (features and classes of every candidate peak) per region volume,
    ``(study, region) → (features (N, N_FEATURES), classes)``.

    The language phase of training runs every training volume through the frozen vision
    side once (`vipet.train.memo.VisionMemo`), and the scorer's fit after training needs
    exactly those maps: the memo hands each volume's maps here (`add`) before it drops
    them, and `examples` encodes only the volumes it never saw (a resumed run's earlier
    ones, another rank's) — the training split is not encoded a second time. Examples
    come out in study then region order, whichever order they were added in.

    ``lesions``: per study, its lesions by id (the ground truth, for the classes)."""

    def __init__(self, lesions: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> None:
        self.lesions = lesions
        self._book: dict[tuple[str, str], tuple[torch.Tensor, list[int]]] = {}
        # each peak with the head's readout there: the slots of a volume under a scorer
        # fitted later (`detections`)
        self._peaks: dict[tuple[str, str], list[tuple[tuple[int, int, int], tuple]]] = {}

    def __len__(self) -> int:
        return len(self._book)

    @torch.no_grad()
    def add(
        self,
        model: Any,
        keys: Sequence[tuple[str, str]],
        dense: Any,
        ct: torch.Tensor,
        pet: torch.Tensor,
        zones: torch.Tensor,
        lesion_ids: torch.Tensor,
    ) -> None:
        """The peaks of volumes ``keys`` ((study, region) each) from the head's maps
        ``dense`` of those volumes, their inputs ``ct``/``pet`` ``(V, D, H, W)``, own
        slices ``zones`` ``(V, 2)`` and lesion-id maps ``lesion_ids`` ``(V, D, H, W)``."""
        from vipet.model.findings_slots import scorer_inputs

        known = [i for i, (study, _) in enumerate(keys) if study in self.lesions]
        if len(known) < len(keys):  # another split's volumes (the memo's validation ones)
            if not known:
                return
            keys = [keys[i] for i in known]
            dense = dense.map(lambda t: t[known])
            ct, pet, zones, lesion_ids = (t[known] for t in (ct, pet, zones, lesion_ids))
        regions = [REGIONS.index(r) for _, r in keys]
        found = scorer_inputs(
            dense,
            pet.float(),
            ct.float(),
            regions,
            zones,
            model.config.pet_scaling,
            model.config.pet_vmax,
            with_reads=True,
        )
        stride = [n // m for n, m in zip(ct.shape[1:], dense.heat.shape[1:], strict=True)]
        for (study, region), ids_map, (voxels, x, peaks) in zip(
            keys, lesion_ids, found, strict=True
        ):
            head = F.max_pool3d(ids_map[None, None].float(), stride, stride)[0, 0].long()
            labels = peak_labels(voxels, head, self.lesions.get(study, {}), region)
            self._book[(study, region)] = (x.float().cpu(), labels)
            self._peaks[(study, region)] = peaks

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._peaks

    def detections(
        self, model: Any, keys: Sequence[tuple[str, str]], token_grid: tuple[int, int, int]
    ) -> Any:
        """The slots ``model`` (with its fitted scorer and thresholds) gives the volumes
        ``keys`` added here, without their maps (`detections_from_peaks`; ``token_grid``:
        the encoder's, `VisionOutput.grid`): what the saved model detects on the training
        volumes, for a fit after the scorer's (`vipet.inference.yes_no`)."""
        from vipet.model.findings_slots import detections_from_peaks

        if model.candidate_scorer is None:
            raise ValueError("the book's volumes are rebuilt with a fitted candidate scorer")
        return detections_from_peaks(
            [(self._peaks[k], self._book[k][0]) for k in keys],
            model.candidate_scorer,
            model.config.findings_slots,
            model.config.slot_threshold,
            model._class_thresholds(),
            model.head_shape,
            token_grid,
            model._place_table(),
            [REGIONS.index(r) for _, r in keys],
        )

    def examples(
        self, model: Any, dataset: Any, ids: Sequence[str], progress: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(N, N_FEATURES)`` and classes ``(N,)`` of every candidate peak of
        the studies ``ids`` of ``dataset`` (a `ViPetDataset`), encoding the studies with
        a volume not added yet."""
        from vipet.evaluation.detector import encoded_studies

        regions = list(model.config.regions)
        missing = [sid for sid in ids if any((sid, r) not in self._book for r in regions)]
        for e in encoded_studies(model, dataset, missing, "scorer examples", progress):
            maps = [
                torch.zeros(s.ct.shape, dtype=torch.uint8)
                if s.lesion is None
                else torch.from_numpy(s.lesion.astype(np.uint8))
                for s in e.samples
            ]
            self.add(
                model,
                [(e.study, r) for r in regions],
                e.dense,
                e.ct[:, 0],
                e.pet[:, 0],
                e.zones,
                torch.stack(maps),
            )
        feats: list[torch.Tensor] = []
        labels: list[int] = []
        for sid in ids:
            for r in regions:
                x, y = self._book[(sid, r)]
                if len(y):
                    feats.append(x)
                    labels.extend(y)
        if not feats:
            raise InputError("no heatmap peak on any study: nothing to fit the scorer on")
        return torch.cat(feats), torch.tensor(labels, dtype=torch.long)


def study_lesions(dataset: Any) -> dict[str, dict[int, Mapping[str, Any]]]:
    """Per study of ``dataset`` (a `ViPetDataset`), its lesions by id."""
    return {
        sid: {int(les["id"]): les for les in gt.get("lesions") or []}
        for sid, gt in dataset._gt.items()
    }


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
    book: PeakBook | None = None,
) -> ScorerFit:
    """Fit a scorer for the saved model at ``model_dir`` on ``split`` and save the model
    with it (slot thresholds cleared). ``loaded``: the model and tokenizer of
    ``model_dir``, when already loaded (it gets the scorer too); ``book``: the examples
    of the volumes already through its vision side (training's, `PeakBook`)."""
    from vipet.evaluation.detector import load_slot_model_split
    from vipet.model.checkpoint import save_vipet

    model, tok, ds, ids, _ = load_slot_model_split(
        model_dir, data, cache, split, max_studies, loaded, "rescore"
    )
    config = config or ScorerConfig()
    book = book if book is not None else PeakBook(study_lesions(ds))
    x, y = book.examples(model, ds, ids, progress=progress)
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
