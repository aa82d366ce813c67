"""The findings head as a detector, scored without any text.

`candidates` runs a model's vision side over a split's region volumes (from the sample
cache) and keeps every heatmap peak above a low floor, with the finding the head reads
there; `select` keeps, per region volume, the strongest peaks that pass a threshold
(one for all classes, or one per type x avidity class) — what `detect` puts in the
slots at inference; `detector_scores` scores them like a report's lesions
(`clinical_scores`). A report written from the slots cannot be clinically better than
its slots, so this is the ceiling of the report scores, and it is what
`vipet.inference.calibrate` tunes the thresholds on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from vipet.evaluation.clinical import METRICS, OTHER, clinical_scores
from vipet.model.diag_head import AVIDITY


@dataclass(frozen=True)
class Candidate:
    """One heatmap peak of one region volume and the finding the head reads there."""

    region: str
    score: float
    finding: dict[str, Any]  # type, fdg_avid, location, ..., as `detect` describes it

    @property
    def label(self) -> str:
        """Its class, ``"<type>/avid"`` or ``"<type>/not_avid"`` (`ViPetConfig.slot_thresholds`)."""
        return f"{self.finding['type']}/{AVIDITY[0 if self.finding['fdg_avid'] else 1]}"


def region_volumes(
    dataset: Any, sid: str, regions: Sequence[str]
) -> tuple[list[Any], torch.Tensor, torch.Tensor]:
    """A study's cached region samples in ``regions`` order, and their CT and PET as
    float32 ``(R, 1, D, H, W)`` — the encoders' input (``dataset``: a `ViPetDataset`)."""
    samples = dataset._samples(sid)
    chosen = [samples[r] for r in regions]
    ct, pet = (
        torch.stack([torch.from_numpy(getattr(s, k).astype("float32")) for s in chosen])[:, None]
        for k in ("ct", "pet")
    )
    return chosen, ct, pet


@dataclass
class EncodedStudy:
    """One study's region volumes through the vision side (`encoded_studies`)."""

    study: str
    samples: list[Any]  # its cached region samples, in the model's region order
    ct: torch.Tensor  # (R, 1, D, H, W)
    pet: torch.Tensor
    zones: torch.Tensor  # (R, 2): each volume's own slices
    grid: tuple[int, int, int]
    dense: Any  # the head's maps (`DenseFindings`)


def encoded_studies(
    model: Any, dataset: Any, ids: Sequence[str], desc: str, progress: bool = True
) -> Iterator[EncodedStudy]:
    """The studies ``ids`` of ``dataset`` (a `ViPetDataset`), each through ``model``'s
    vision side in `vision_autocast`, as the predictor runs it — what the calibration and
    the scorer's fit read."""
    from vipet.model.vipet import vision_autocast

    model.eval()
    regions = list(model.config.regions)
    with torch.no_grad(), vision_autocast():
        for sid in tqdm(ids, desc=desc, leave=False, disable=not progress):
            chosen, ct, pet = region_volumes(dataset, sid, regions)
            zones = torch.tensor([dataset._zones(s) for s in chosen])
            _, grid, dense = model._encode(ct, pet)
            yield EncodedStudy(sid, chosen, ct, pet, zones, grid, dense)


def candidates(
    model: Any,
    dataset: Any,
    ids: Sequence[str],
    floor: float = 0.1,
    max_per_volume: int = 64,
    progress: bool = True,
) -> dict[str, list[Candidate]]:
    """Per study: every peak above ``floor`` of each region volume (the strongest
    ``max_per_volume``). ``dataset``: a `ViPetDataset` over the split (its cached region
    samples); ``model``: a `ViPetModel` with the findings head."""
    regions = list(model.config.regions)
    out: dict[str, list[Candidate]] = {}
    for e in encoded_studies(model, dataset, ids, "detect", progress):
        det = model.detect(
            e.dense,
            e.grid,
            e.ct[:, 0],
            e.pet[:, 0],
            e.zones,
            model.region_indices(),
            floor=floor,
            limit=max_per_volume,
        )
        out[e.study] = [
            Candidate(region, float(a["score"]), {**a, "region": region})
            for region, found in zip(regions, det.attributes, strict=True)
            for a in found
        ]
    return out


def select(
    found: Mapping[str, Sequence[Candidate]],
    threshold: float,
    slots: int,
    class_thresholds: Mapping[str, float] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The findings `detect` would put in the slots: per region volume the ``slots``
    strongest peaks above their class's threshold (``class_thresholds``, by
    `Candidate.label`; other classes ``threshold``)."""
    bar = class_thresholds or {}
    out = {}
    for sid, cands in found.items():
        kept: list[Candidate] = []
        per_region: Counter[str] = Counter()
        for c in sorted(cands, key=lambda c: -c.score):
            if c.score > bar.get(c.label, threshold) and per_region[c.region] < slots:
                per_region[c.region] += 1
                kept.append(c)
        out[sid] = [c.finding for c in kept]
    return out


def _keys(lesions: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> Counter[tuple]:
    return Counter(tuple(les.get(f) for f in fields) for les in lesions)


def quick_f1(
    pred: Mapping[str, Sequence[Mapping[str, Any]]],
    ref: Mapping[str, Sequence[Mapping[str, Any]]],
) -> dict[str, float]:
    """``f1_t`` ... ``f1_tpf`` as `clinical_scores` gives them, by counting: its greedy
    matching on equal fields pairs min(predicted, reference) lesions of each value, so
    the counts are the matching (tested against it). Fast enough to search thresholds."""
    out = {}
    for name, fields in METRICS.items():
        tp = n_pred = n_ref = 0
        for sid in set(pred) | set(ref):
            p, r = pred.get(sid, ()), ref.get(sid, ())
            n_pred, n_ref = n_pred + len(p), n_ref + len(r)
            cr = _keys(r, fields)
            for key, n in _keys(p, fields).items():
                if OTHER not in key:
                    tp += min(n, cr.get(key, 0))
        out[f"f1_{name.lower()}"] = 2 * tp / (n_pred + n_ref) if n_pred + n_ref else 0.0
    return out


def detector_scores(
    pred: Mapping[str, Sequence[Mapping[str, Any]]],
    ref: Mapping[str, Sequence[Mapping[str, Any]]],
) -> dict[str, Any]:
    """`clinical_scores` of the selected findings, with their count."""
    sc = clinical_scores(pred, ref)
    return {
        "n_pred": sum(len(v) for v in pred.values()),
        "n_ref": sc["T"]["n_ref"],
        **{k: sc[k] for k in ("f1_t", "f1_tp", "f1_tf", "f1_tpf", "suvmax_mae", "size_mae_mm")},
    }


def load_slot_model_split(
    model_dir: Path,
    data: Path,
    cache: Path,
    split: str,
    max_studies: int | None = None,
    loaded: tuple[Any, Any] | None = None,
    task: str = "calibrate",
) -> tuple[Any, Any, Any, list[str], dict[str, list]]:
    """``(model, tokenizer, dataset, ids, references)``: a saved model with finding slots
    (``loaded``: it and its tokenizer, when already loaded) and a split for `candidates`;
    a model without slots is refused (nothing to ``task``)."""
    from vipet.errors import InputError
    from vipet.model.checkpoint import load_vipet

    model, tok = loaded or load_vipet(model_dir)
    if not model.config.findings_slots:
        raise InputError(f"the model has no finding slots: nothing to {task}", model_dir)
    return (model, tok, *load_split(data, cache, split, model, tok, max_studies))


def load_split(data: Path, cache: Path, split: str, model: Any, tokenizer: Any, max_studies=None):
    """``(dataset, ids, reference lesions by id)`` of a split, for `candidates`."""
    from vipet.data.dataset import ViPetDataset
    from vipet.evaluation.runner import references, split_ids

    ids = split_ids(data, split, max_studies)
    ds = ViPetDataset(data, cache, split, tokenizer, model.visual_tokens_per_region)
    refs = references(data, ids, "en")
    return ds, ids, {sid: refs[sid]["lesions"] or [] for sid in ids}
