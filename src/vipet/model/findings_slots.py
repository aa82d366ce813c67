"""Finding slots: the findings head's detections as tokens the language model describes.

A report lists lesions one by one — type, place, uptake, size — so the language model
gets one token per lesion the head finds, in the order the report will describe them,
and a summary token per region. This module turns the head's maps into `Detections`
(`detect`), or the report's own lesions into the same thing (`teacher_detections`,
training), and `Detections` into tokens (`FindingsSlots`, `FindingsToken`).

**What a slot says** (`slot_features`, `SLOT_FEATURES` numbers): the lesion's type
(one-hot over LESION_TYPES), FDG avidity, fine location (one-hot over FINE_LOCATIONS)
and laterality; its SUVmax and size as digits (tens, units, tenths of SUV; tens and
units of mm, each one-hot) and as a log value; and its position in the region. Digits,
because the tokenizer reads numbers digit by digit and a small language model copies a
one-hot digit into a digit token far more easily than it decodes a float. Decisions,
not probabilities: the head's most likely type, location and side — so what the LM reads
at inference looks exactly like the ground truth it was taught on. The location is the
likeliest among those the type takes in the training lesions when the model has them
(`place`, `ViPetConfig.slot_places`): the type and location maps each decide alone, and a
pair no report holds (a lymph node "in the upper lobe") is a slot the LM never learnt to
write, which it rewrites as another finding.

**Measured, not guessed**: a detection's SUVmax is the highest PET value around its peak
(inside the head's lesion segmentation where there is one), turned back into SUV with
the preprocessing's scaling — what a reader's SUVmax tool does. Its size is the head's
regression.

**Order.** Slots run in report order: by report section of the fine location, then head
to foot, then right to left on the image; the dataset orders a region's lesions the same
way when it teaches the LM (`vipet.data.dataset`), so sentence j describes slot j.

**Empty slots** carry a learned "empty" embedding: the number of filled slots is the
number of findings the head stands behind, and describing the filled ones is the LM's
whole job (run 3 of docs/training.md wrote a sentence for every slot when it had to
read "is this a finding" off a probability).

**Teacher forcing** (`teacher_detections`). Trained on the head's own detections, a
language model learns that what a slot says barely predicts the sentence it must write
(the head errs), and learns to ignore it — run 4 wrote 515 of 530 lesions as the most
frequent type. Trained on slots built from the lesions the report describes, it learns
to write what the slot says; at inference the head's detections take their place.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vipet.model.candidate_scorer import (
    FLOOR,
    MAX_CANDIDATES,
    CandidateScorer,
    class_name,
    peak_features,
)
from vipet.model.diag_head import FINE_NAMES, DenseFindings
from vipet.reports.schema import FINE_LOCATIONS, LATERALITIES, LESION_TYPES, REGIONS, SECTIONS

SECTION_KEYS: tuple[str, ...] = tuple(key for key, _, _ in SECTIONS)
SLOT_FEATURES: int = len(LESION_TYPES) + 1 + len(FINE_NAMES) + len(LATERALITIES) + 31 + 21 + 3
"""Length of a slot's feature vector (see the module doc)."""
TEACHER_FIELDS: tuple[str, ...] = ("present", "type", "avid", "fine", "side", "suvmax", "size_mm")
"""Columns of a teacher attribute row (`teacher_detections`): present 0/1, then indices
into LESION_TYPES, avidity 0/1, FINE_LOCATIONS and LATERALITIES, SUVmax, size in mm."""
SECTION_OF_FINE: tuple[int, ...] = tuple(
    SECTION_KEYS.index(FINE_LOCATIONS[name].section) for name in FINE_NAMES
)
LATERAL_FINE: tuple[bool, ...] = tuple(FINE_LOCATIONS[name].lateral for name in FINE_NAMES)
ONE_PER_SIDE: frozenset[int] = frozenset(LESION_TYPES.index(t) for t in ("effusion", "mass"))
"""Types `detect` reports once per side of a volume. A pleural space holds one effusion,
while the head's heatmap peaks several times along a wide fluid layer (run 19's head:
5 of its 7 extra effusions on the test split were a second or third peak of one); a
lobulated mass peaks once per lobe (with the candidate scorer, 13 of its 18 extra masses
on the test split repeated another's side), while a second mass on the same side of a
region is rare."""


def _digits(value: torch.Tensor, scale: int, places: int) -> list[torch.Tensor]:
    """Decimal digits of ``round(value · scale)``, most significant first."""
    n = torch.round(value.float().clamp_min(0) * scale).long().clamp(max=10**places - 1)
    return [(n // 10 ** (places - 1 - i)) % 10 for i in range(places)]


def slot_features(
    type_idx: torch.Tensor,
    avid: torch.Tensor,
    fine_idx: torch.Tensor,
    side_idx: torch.Tensor,
    suvmax: torch.Tensor,
    size_mm: torch.Tensor,
    position: torch.Tensor,
) -> torch.Tensor:
    """``(..., SLOT_FEATURES)`` from per-slot indices and values ``(...)`` and
    ``position`` ``(..., 3)`` in [0, 1] (see the module doc for the layout)."""
    oh = lambda i, n: F.one_hot(i.long().clamp(0, n - 1), n).float()  # noqa: E731
    suv_digits = [oh(d, 10) for d in _digits(suvmax, 10, 3)]  # tens, units, tenths
    size_digits = [oh(d, 10) for d in _digits(size_mm, 1, 2)]  # tens, units (mm)
    parts = [
        oh(type_idx, len(LESION_TYPES)),
        avid.float()[..., None],
        oh(fine_idx, len(FINE_NAMES)),
        oh(side_idx, len(LATERALITIES)),
        *suv_digits,
        (torch.log1p(suvmax.float().clamp_min(0)) / math.log1p(30.0))[..., None],
        *size_digits,
        (torch.log1p(size_mm.float().clamp_min(0)) / math.log1p(60.0))[..., None],
        position.float(),
    ]
    return torch.cat(parts, dim=-1)


@dataclass
class Detections:
    """Up to K findings per volume, in report order (B volumes)."""

    features: torch.Tensor  # (B, K, SLOT_FEATURES)
    filled: torch.Tensor  # (B, K) bool
    rows: torch.Tensor  # (B, K, N): each slot's weights over the encoder tokens (0 if empty)
    # a detection's heat, or its scorer's 1 − P(background) (1 for a teacher slot)
    scores: torch.Tensor  # (B, K)
    voxels: torch.Tensor  # (B, K, 3) long: its peak (or centre) on the head's grid
    attributes: list[list[dict[str, Any]]] = field(default_factory=list)
    """Per volume, per filled slot: the finding in words (`describe`)."""

    @property
    def slots(self) -> int:
        return int(self.filled.shape[1])

    def select(self, index: slice | list[int]) -> Detections:
        """The detections of some volumes (a slice or list of batch indices)."""
        idx = list(range(self.filled.shape[0]))[index] if isinstance(index, slice) else index
        pick = lambda t: t[idx]  # noqa: E731
        return Detections(
            pick(self.features),
            pick(self.filled),
            pick(self.rows),
            pick(self.scores),
            pick(self.voxels),
            [self.attributes[i] for i in idx] if self.attributes else [],
        )


def _describe(
    type_idx: int, avid: bool, fine_idx: int, side_idx: int, suv: float, size: float
) -> dict[str, Any]:
    fine = FINE_NAMES[fine_idx]
    return {
        "type": LESION_TYPES[type_idx],
        "fdg_avid": bool(avid),
        "location_detail": fine,
        "location": FINE_LOCATIONS[fine].location,
        "section": FINE_LOCATIONS[fine].section,
        "laterality": LATERALITIES[side_idx],
        "suvmax": round(float(suv), 1),
        "size_mm": float(round(float(size))),
    }


def _order_key(fine_idx: int, voxel: tuple[int, int, int]) -> tuple[int, int, int]:
    """Report order: section of the fine location, then head to foot, then image
    left (patient right) to right."""
    return (SECTION_OF_FINE[fine_idx], voxel[0], voxel[2])


def suv_from_input(value: torch.Tensor, scaling: str, vmax: float) -> torch.Tensor:
    """Preprocessed PET values in [0, 1] back to SUV (`vipet.preprocess.intensity`)."""
    if scaling == "log":
        return torch.expm1(value * math.log1p(vmax))
    if scaling == "linear":
        return value * vmax
    raise ValueError(f"unknown PET scaling {scaling!r}; choose from ['linear', 'log']")


@torch.no_grad()
def detect(
    dense: DenseFindings,
    pet: torch.Tensor,
    token_grid: tuple[int, int, int],
    slots: int,
    threshold: float,
    zones: torch.Tensor | None = None,
    pet_scaling: str = "log",
    pet_vmax: float = 30.0,
    class_thresholds: torch.Tensor | None = None,
    ct: torch.Tensor | None = None,
    regions: Sequence[int] | None = None,
    scorer: CandidateScorer | None = None,
    places: torch.Tensor | None = None,
) -> Detections:
    """The findings the head's maps show in ``B`` volumes: local maxima of the centre
    heatmap above ``threshold`` (3x3x3 neighbourhood), at most ``slots`` per volume (the
    strongest), in report order. ``pet`` (B, D, H, W) is the preprocessed PET the maps
    come from (for SUVmax); ``zones`` (B, 2): the slices [lo, hi) of each volume that
    belong to its region — a lesion centred in the overlap with a neighbouring region
    is that region's to report, so each lesion is described once.

    ``class_thresholds`` (len(LESION_TYPES), 2): a threshold per class the head reads
    at the peak (type x avidity, avid first), in place of ``threshold``
    (`vipet.inference.calibrate`: a rare or faint class is not held to the bar of the
    common, bright ones).

    ``scorer`` (`vipet.model.candidate_scorer`): every peak above its `FLOOR` (the
    strongest `MAX_CANDIDATES`) is read by the fitted classifier, which also needs
    ``ct`` (B, D, H, W) and each volume's index in REGIONS (``regions``); a peak's score
    is then ``1 − P(background)`` and its type and avidity the classifier's most likely
    class, and the thresholds apply to that score.

    ``places`` (len(REGIONS), len(LESION_TYPES), len(FINE_NAMES)) bool: where each type
    may be placed in each region's volume (`place`; `ViPetConfig.slot_places`); it needs
    ``regions`` too."""
    heat = torch.sigmoid(dense.heat.float())
    b, d0, h0, w0 = heat.shape
    if pet.dim() != 4 or pet.shape[0] != b:
        raise ValueError(f"pet must be (B, D, H, W) with B = {b}, got {tuple(pet.shape)}")
    if class_thresholds is not None and tuple(class_thresholds.shape) != (len(LESION_TYPES), 2):
        raise ValueError(
            f"class_thresholds must be ({len(LESION_TYPES)}, 2), got {tuple(class_thresholds.shape)}"
        )
    _check_places(places, regions, b)
    floor = threshold if class_thresholds is None else float(class_thresholds.min())
    if scorer is not None:
        if ct is None or regions is None or len(regions) != b:
            raise ValueError("a candidate scorer needs the volumes' ct and region indices")
        floor = FLOOR  # the scorer was fitted on every peak above it; its score is thresholded
    peak = (heat == F.max_pool3d(heat[:, None], 3, 1, 1)[:, 0]) & (heat > floor)
    seg = dense.lesion > 0  # sigmoid > 0.5
    scale = [pet.shape[1 + i] // s for i, s in enumerate((d0, h0, w0))]
    n_tokens = math.prod(token_grid)
    out = _empty(b, slots, n_tokens, heat.device)
    for i in range(b):
        # Strongest first, read until K are kept: with class thresholds a weak peak of a
        # faint class may pass where a stronger one of a strict class does not, and a
        # second peak of a ONE_PER_SIDE finding leaves its slot to the next one.
        found = _sorted_peaks(heat[i], peak[i], None if zones is None else zones[i], pet.shape[1])
        if not len(found):
            out.attributes.append([])
            continue
        read = partial(
            _read_peak, dense, seg, pet, i, scale=scale, scaling=pet_scaling, vmax=pet_vmax
        )
        if scorer is not None:
            found = found[:MAX_CANDIDATES]
            peaks, feats = _peak_reads(dense, seg, pet, ct, i, found, int(regions[i]), read)
            candidates = scored_candidates(peaks, feats, scorer)
        else:
            candidates = [(tuple(v), float(heat[i][tuple(v)]), None) for v in found.tolist()]
        _fill_slots(
            out,
            i,
            candidates,
            slots,
            threshold,
            class_thresholds,
            (d0, h0, w0),
            token_grid,
            partial(_read_class, dense, i),
            read,
            _region_places(places, regions, i),
        )
    return out


def _check_places(places: torch.Tensor | None, regions: Sequence[int] | None, b: int) -> None:
    shape = (len(REGIONS), len(LESION_TYPES), len(FINE_NAMES))
    if places is None:
        return
    if tuple(places.shape) != shape:
        raise ValueError(f"places must be {shape}, got {tuple(places.shape)}")
    if regions is None or len(regions) != b:
        raise ValueError("places are per region: give each volume's index in REGIONS (regions)")


def _region_places(
    places: torch.Tensor | None, regions: Sequence[int] | None, i: int
) -> torch.Tensor | None:
    """Volume ``i``'s (len(LESION_TYPES), len(FINE_NAMES)) slice of ``places``."""
    return None if places is None or regions is None else places[int(regions[i])]


SlotCandidate = tuple[tuple[int, int, int], float, "tuple | None"]
"""A peak for the slots: its voxel, its score, and what is read there (None: read it
from the maps when it is kept)."""


@torch.no_grad()
def scored_candidates(
    peaks: Sequence[tuple[tuple[int, int, int], tuple]],
    feats: torch.Tensor,
    scorer: CandidateScorer,
) -> list[SlotCandidate]:
    """The peaks of one volume (with what the head reads at each, `_peak_reads`) as the
    scorer ranks them: score ``1 − P(background)``, type and avidity its likeliest
    class, strongest first."""
    if not len(peaks):
        return []
    with torch.autocast(feats.device.type, enabled=False):  # fitted in float32
        probs = scorer(feats.float())
    kind = probs[:, 1:].argmax(dim=1) + 1
    rescored = (1 - probs[:, 0]).tolist()
    candidates: list[SlotCandidate] = []
    for (vox, r), p, c in zip(peaks, rescored, kind.tolist(), strict=True):
        t_name, a = class_name(int(c))
        candidates.append((tuple(vox), p, (LESION_TYPES.index(t_name), float(a), *r[2:])))
    candidates.sort(key=lambda c: -c[1])
    return candidates


def _fill_slots(
    out: Detections,
    i: int,
    candidates: Sequence[SlotCandidate],
    slots: int,
    threshold: float,
    class_thresholds: torch.Tensor | None,
    head_shape: tuple[int, int, int],
    token_grid: tuple[int, int, int],
    read_class: Callable[[tuple[int, int, int]], tuple[int, float]] | None = None,
    read: Callable[[tuple[int, int, int]], tuple] | None = None,
    places: torch.Tensor | None = None,
) -> None:
    """Volume ``i`` of ``out``: the strongest ``candidates`` above their thresholds, at
    most ``slots``, in report order, each placed among its type's ``places`` (`place`).
    ``read_class``/``read``: the maps' readout at a peak, for candidates that carry none."""
    d0, h0, w0 = head_shape
    cell = [s // g for s, g in zip(head_shape, token_grid, strict=True)]
    rows = []
    once: set[tuple[int, int]] = set()  # (type, side) of the ONE_PER_SIDE kept
    for (z, y, x), p, attrs in candidates:
        if len(rows) == slots:
            break
        if attrs is None:  # read at the peaks only: pooling every map costs more
            assert read_class is not None and read is not None
            t, avid = read_class((z, y, x))
        else:
            t, avid = attrs[0], attrs[1]
        bar = (
            threshold
            if class_thresholds is None
            else float(class_thresholds[t, 0 if avid > 0.5 else 1])
        )
        if not p > bar:
            continue
        _, _, fine, side, size, suv = attrs if attrs is not None else read((z, y, x))  # type: ignore[misc]
        f, s = place(t, fine, side, places)
        if t in ONE_PER_SIDE:
            if (t, s) in once:
                continue
            once.add((t, s))
        rows.append((_order_key(f, (z, y, x)), (z, y, x), t, avid > 0.5, f, s, suv, size, p))
    rows.sort(key=lambda r: r[0])
    described = []
    for j, (_, vox, t, a, f, s, suv, size, p) in enumerate(rows):
        pos = torch.tensor([(v + 0.5) / n for v, n in zip(vox, (d0, h0, w0), strict=True)])
        out.features[i, j] = slot_features(
            torch.tensor(t),
            torch.tensor(a),
            torch.tensor(f),
            torch.tensor(s),
            torch.tensor(suv),
            torch.tensor(size),
            pos,
        )
        out.filled[i, j] = True
        tok = ((vox[0] // cell[0]) * token_grid[1] + vox[1] // cell[1]) * token_grid[2] + (
            vox[2] // cell[2]
        )
        out.rows[i, j, tok] = 1.0
        out.scores[i, j] = p
        out.voxels[i, j] = torch.tensor(vox)
        described.append({**_describe(t, a, f, s, suv, size), "score": round(p, 3)})
    out.attributes.append(described)


def detections_from_peaks(
    volumes: Sequence[tuple[Sequence[tuple[tuple[int, int, int], tuple]], torch.Tensor]],
    scorer: CandidateScorer,
    slots: int,
    threshold: float,
    class_thresholds: torch.Tensor | None,
    head_shape: tuple[int, int, int],
    token_grid: tuple[int, int, int],
    places: torch.Tensor | None = None,
    regions: Sequence[int] | None = None,
) -> Detections:
    """What `detect` with ``scorer`` gives for volumes whose maps are gone but whose
    candidate peaks were kept: per volume its peaks with the head's readout at each, and
    their scorer features (`scorer_inputs` with ``reads``). A scorer fitted, or
    thresholds calibrated, after the maps were dropped then still gives each volume the
    slots the saved model would (the training split's, `vipet.inference.yes_no`)."""
    _check_places(places, regions, len(volumes))
    out = _empty(len(volumes), slots, math.prod(token_grid), torch.device("cpu"))
    for i, (peaks, feats) in enumerate(volumes):
        candidates = scored_candidates(peaks, feats, scorer)
        where = _region_places(places, regions, i)
        _fill_slots(
            out,
            i,
            candidates,
            slots,
            threshold,
            class_thresholds,
            head_shape,
            token_grid,
            places=where,
        )
    return out


def _sorted_peaks(
    heat: torch.Tensor, peak: torch.Tensor, zone: torch.Tensor | None, depth: int
) -> torch.Tensor:
    """``(N, 3)`` voxels of one volume's peaks inside its ``zone`` (input slices [lo,
    hi), ``depth`` input slices in all), strongest first."""
    found = torch.nonzero(peak)
    if zone is not None and len(found):
        lo, hi = (float(v) * heat.shape[0] / depth for v in zone)
        keep = (found[:, 0].float() + 0.5 >= lo) & (found[:, 0].float() + 0.5 <= hi)
        found = found[keep]
    return found[heat[tuple(found.T)].argsort(descending=True)]


def _peak_reads(
    dense: DenseFindings,
    seg: torch.Tensor,
    pet: torch.Tensor,
    ct: torch.Tensor,
    i: int,
    found: torch.Tensor,
    region: int,
    read: Callable[[tuple[int, int, int]], tuple],
) -> tuple[list[tuple[tuple[int, int, int], tuple]], torch.Tensor]:
    """What the head reads at each peak of ``found`` (volume ``i``) and the peaks'
    scorer features."""
    peaks = [(tuple(v), read(tuple(v))) for v in found.tolist()]
    feats = peak_features(
        dense,
        i,
        ct[i],
        pet[i],
        found,
        region,
        len(found),
        [r[5] for _, r in peaks],
        [r[4] for _, r in peaks],
    )
    return peaks, feats


@torch.no_grad()
def scorer_inputs(
    dense: DenseFindings,
    pet: torch.Tensor,
    ct: torch.Tensor,
    regions: Sequence[int],
    zones: torch.Tensor | None = None,
    pet_scaling: str = "log",
    pet_vmax: float = 30.0,
    with_reads: bool = False,
) -> list[tuple]:
    """Per volume, the candidates a scorer reads in `detect`: their voxels ``(N, 3)``
    on the head's grid (strongest heat first) and features ``(N, N_FEATURES)`` — what
    `vipet.inference.rescore` fits the scorer on. ``with_reads``: a third item, each
    peak with the head's readout there (`detections_from_peaks` rebuilds the slots from
    it once the maps are gone)."""
    heat = torch.sigmoid(dense.heat.float())
    peak = (heat == F.max_pool3d(heat[:, None], 3, 1, 1)[:, 0]) & (heat > FLOOR)
    seg = dense.lesion > 0
    scale = [pet.shape[1 + i] // s for i, s in enumerate(heat.shape[1:])]
    out: list[tuple] = []
    for i in range(heat.shape[0]):
        found = _sorted_peaks(heat[i], peak[i], None if zones is None else zones[i], pet.shape[1])
        found = found[:MAX_CANDIDATES]
        read = partial(
            _read_peak, dense, seg, pet, i, scale=scale, scaling=pet_scaling, vmax=pet_vmax
        )
        peaks, feats = _peak_reads(dense, seg, pet, ct, i, found, int(regions[i]), read)
        out.append((found, feats, peaks) if with_reads else (found, feats))
    return out


def _mean_probs(m: torch.Tensor) -> torch.Tensor:
    return m.flatten(1).mean(dim=1)


def _near(i: int, voxel: tuple[int, int, int]) -> tuple:
    """Index of volume ``i``'s maps ``(B, C, D, H, W)`` at a peak's 3x3x3 neighbourhood
    (inside the volume); without its second entry, of a one-channel map ``(B, D, H, W)``."""
    return (i, slice(None), *(slice(max(0, v - 1), v + 2) for v in voxel))


def _read_class(dense: DenseFindings, i: int, voxel: tuple[int, int, int]) -> tuple[int, float]:
    """The type and avidity probability the head reads at a peak: the mean probability
    over its 3x3x3 neighbourhood (inside the volume)."""
    near = _near(i, voxel)
    t = int(_mean_probs(torch.softmax(dense.types[near].float(), dim=0)).argmax())
    avid = float(torch.sigmoid(dense.avid[near[:1] + near[2:]].float()).mean())
    return t, avid


def _read_peak(
    dense: DenseFindings,
    seg: torch.Tensor,
    pet: torch.Tensor,
    i: int,
    voxel: tuple[int, int, int],
    scale: list[int],
    scaling: str,
    vmax: float,
) -> tuple[int, float, torch.Tensor, int, float, float]:
    """Everything the head reads at a peak: ``(type, avidity probability, fine location
    probabilities (len(FINE_NAMES),), side, size mm, SUVmax)`` — the place as
    probabilities, decided once the type is (`place`); the side as if it were lateral."""
    t, avid = _read_class(dense, i, voxel)
    near = _near(i, voxel)
    fine = _mean_probs(torch.softmax(dense.fine[near].float(), dim=0)).cpu()
    s = int(_mean_probs(torch.softmax(dense.side[near].float(), dim=0)).argmax())
    size = float(torch.exp(dense.log_size[near[:1] + near[2:]].float().mean()))
    suv = _suvmax(pet[i], seg[i], voxel, scale, scaling, vmax)
    return t, avid, fine, s, size, suv


def place(
    type_idx: int, fine: torch.Tensor, side: int, places: torch.Tensor | None = None
) -> tuple[int, int]:
    """A detection's fine location and side: the likeliest of the head's ``fine``
    probabilities among the places its type may take (``places``, a (len(LESION_TYPES),
    len(FINE_NAMES)) bool table, its region's of `ViPetConfig.place_table`; None or a row
    without any: all), and ``side`` where that place has sides, else "none"."""
    if places is not None and bool(places[type_idx].any()):
        fine = torch.where(places[type_idx].to(fine.device), fine, fine.new_tensor(-1.0))
    f = int(fine.argmax())
    return f, side if LATERAL_FINE[f] else LATERALITIES.index("none")


def _suvmax(
    pet: torch.Tensor,
    seg: torch.Tensor,
    voxel: tuple[int, int, int],
    scale: list[int],
    scaling: str,
    vmax: float,
) -> float:
    """SUVmax around a peak: the highest input PET value over the input voxels of the
    peak's 3x3x3 neighbourhood on the head's grid, inside the lesion segmentation when
    it covers any of them."""
    lo = [max(0, v - 1) for v in voxel]
    hi = [min(n, v + 2) for v, n in zip(voxel, seg.shape, strict=True)]
    box = tuple(slice(a * s, b * s) for a, b, s in zip(lo, hi, scale, strict=True))
    values = pet[box].float()
    mask = seg[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    if bool(mask.any()):
        up = mask.repeat_interleave(scale[0], 0).repeat_interleave(scale[1], 1)
        up = up.repeat_interleave(scale[2], 2)[
            : values.shape[0], : values.shape[1], : values.shape[2]
        ]
        values = values[up]
    return float(suv_from_input(values.max(), scaling, vmax))


def _empty(b: int, k: int, n: int, device: torch.device) -> Detections:
    return Detections(
        features=torch.zeros(b, k, SLOT_FEATURES, device=device),
        filled=torch.zeros(b, k, dtype=torch.bool, device=device),
        rows=torch.zeros(b, k, n, device=device),
        scores=torch.zeros(b, k, device=device),
        voxels=torch.zeros(b, k, 3, dtype=torch.long, device=device),
        attributes=[],
    )


def teacher_detections(
    filed: torch.Tensor,
    attrs: torch.Tensor,
    token_grid: tuple[int, int, int],
    head_shape: tuple[int, int, int],
) -> Detections:
    """Slots on the lesions a report describes (training only). ``filed`` (B, D, H, W):
    slot ``j``'s lesion voxels labelled ``j + 1`` (0 elsewhere); ``attrs`` (B, K,
    len(TEACHER_FIELDS)): the lesions' ground truth in slot order (``present`` 0 for an
    empty slot). A slot's position is its lesion's centre, its attention row the share of
    the lesion's voxels in each encoder token."""
    b, d, h, w = filed.shape
    k = attrs.shape[1]
    if attrs.shape[0] != b or attrs.shape[2] != len(TEACHER_FIELDS):
        raise ValueError(
            f"attrs must be (B, K, {len(TEACHER_FIELDS)}) with B = {b}, got {tuple(attrs.shape)}"
        )
    if d % token_grid[0] or h % token_grid[1] or w % token_grid[2]:
        raise ValueError(f"lesion maps of {(d, h, w)} do not tile the token grid {token_grid}")
    out = _empty(b, k, math.prod(token_grid), filed.device)
    patch = (d // token_grid[0], h // token_grid[1], w // token_grid[2])
    masks = torch.stack([filed == j + 1 for j in range(k)], dim=1).float()  # (B, K, D, H, W)
    share = F.avg_pool3d(masks, kernel_size=patch, stride=patch).flatten(2)  # (B, K, N)
    count = masks.flatten(2).sum(-1)  # (B, K)
    present = (attrs[..., 0] > 0) & (count > 0)
    safe = count.clamp_min(1.0)
    # Centres of mass from the per-axis marginals (no full-volume products).
    pos = []
    for axis, n in zip((2, 3, 4), (d, h, w), strict=True):
        others = tuple(a for a in (2, 3, 4) if a != axis)
        centre = (torch.arange(n, device=filed.device, dtype=torch.float32) + 0.5) / n
        pos.append((masks.sum(dim=others) * centre).sum(-1) / safe)
    pos = torch.stack(pos, dim=-1)  # (B, K, 3) in [0, 1]
    a = attrs.float()
    out.features = slot_features(
        a[..., 1], a[..., 2], a[..., 3], a[..., 4], a[..., 5], a[..., 6], pos
    )
    out.features = out.features * present[..., None]
    out.filled = present
    out.rows = share / share.sum(-1, keepdim=True).clamp_min(1e-12) * present[..., None]
    out.scores = present.float()
    grid = torch.tensor(head_shape, device=filed.device)
    out.voxels = (pos * grid).long().clamp(max=grid - 1) * present[..., None]
    for i in range(b):
        out.attributes.append(
            [
                _describe(*(int(v) for v in a[i, j, 1:5]), float(a[i, j, 5]), float(a[i, j, 6]))
                for j in range(k)
                if present[i, j]
            ]
        )
    return out


class FindingsSlots(nn.Module):
    """`Detections` → slot tokens ``(B, K, hidden)``: an MLP of the slot's features, or
    the learned "empty" embedding, plus a learned embedding of the slot's index (the
    report's order)."""

    def __init__(self, slots: int, hidden: int) -> None:
        super().__init__()
        self.slots = slots
        self.mlp = nn.Sequential(
            nn.Linear(SLOT_FEATURES, hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        self.empty = nn.Parameter(torch.zeros(hidden))
        self.index = nn.Parameter(torch.zeros(slots, hidden))
        nn.init.trunc_normal_(self.index, std=0.02)
        nn.init.trunc_normal_(self.empty, std=0.02)

    def forward(self, det: Detections) -> torch.Tensor:
        if det.slots != self.slots:
            raise ValueError(f"{det.slots} detections per volume, the model has {self.slots} slots")
        x = self.mlp(det.features.to(self.index.dtype))
        x = torch.where(det.filled[..., None], x, self.empty.to(x.dtype))
        return x + self.index.to(x.dtype)


def findings_summary(det: Detections) -> torch.Tensor:
    """``(B, 2·14 + 1)``: how many filled slots show each type x avidity (type-major,
    avid first, as the region labels), and how many are filled, as log1p counts."""
    n_types = len(LESION_TYPES)
    onehot = det.features[..., :n_types] * det.filled[..., None]
    avid = det.features[..., n_types : n_types + 1]
    per = torch.stack([onehot * avid, onehot * (1 - avid)], dim=-1).sum(dim=1)  # (B, 14, 2)
    total = det.filled.float().sum(dim=1, keepdim=True)
    return torch.log1p(torch.cat([per.flatten(1), total], dim=-1))


class FindingsToken(nn.Module):
    """One token per region from `findings_summary`: the region's findings at a glance
    (is it normal, which types, how many) for questions about the whole region."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        n = 2 * len(LESION_TYPES) + 1
        self.mlp = nn.Sequential(nn.Linear(n, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def forward(self, det: Detections) -> torch.Tensor:
        w = self.mlp[0].weight
        return self.mlp(findings_summary(det).to(w.dtype))[:, None]  # (B, 1, hidden)

    @staticmethod
    def rows(det: Detections) -> torch.Tensor:
        """``(B, 1, N)``: the findings token looks where its slots look (uniformly over
        the tokens when the region has none)."""
        n = det.rows.shape[-1]
        s = det.rows.sum(dim=1)
        uniform = torch.full_like(s, 1.0 / n)
        out = torch.where(
            det.filled.any(dim=1, keepdim=True),
            s / s.sum(-1, keepdim=True).clamp_min(1e-12),
            uniform,
        )
        return out[:, None]
