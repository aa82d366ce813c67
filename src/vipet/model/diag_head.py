"""The findings head: where the lesions are, voxel by voxel, what each one is, and the
region-level diagnosis read off that.

```
fused tokens (B, C, d, h, w) ─ up ─ ⊕ CT, PET pyramid level L-1 ─ conv ─ up ─ … ─ ⊕ level 0 ─ conv ─ 1x1
    → heat (B, D0, H0, W0)       a peak at every lesion's centre (CenterNet-style)
      lesion (B, D0, H0, W0)     the lesion's voxels (segmentation)
      types (B, 14, …)           its type, given a lesion there (softmax over LESION_TYPES)
      avid (B, …)                FDG-avid or not
      fine (B, 20, …)            its fine location (FINE_LOCATIONS), which gives the
                                 protocol's location class and the report section
      side (B, 4, …)             laterality (LATERALITIES)
      log_size (B, …)            log of its largest axial diameter in mm
```

at the resolution of the finest pyramid level (for cpu-small half the input in-plane).

**Why a dense decoder.** A report lists lesions one by one, so the model has to find
each one and say what it is. A head on the encoder tokens alone sees patches of
4 × 5 × 5 cm, where several nodes share a token and a 7 mm node is a few voxels among
thousands; trained from scratch on a few hundred studies it learned *where lesions
usually are* (docs/training.md, runs 1–4). The decoder brings back the encoders' fine
pyramid features of both modalities — the fused tokens give each voxel the context of
its region (PET queries CT), the pyramid the local detail — and is supervised by every
voxel of the lesion masks.

**Why a centre heatmap** (`heat_loss`, the penalty-reduced focal loss of CenterNet): a
segmentation loss weighs lesions by their voxels, so an effusion of 500 voxels counts a
hundred times a 6 mm node of five, and small lesions were never found. The heatmap has
one peak per lesion whatever its size, the loss is normalised by the number of
lesions, and its local maxima count the lesions, also where two nodes touch.

**Label space** (``label_names()``, 87 labels), region-major so that each region's
labels are one contiguous slice::

    for region in REGIONS:                    # head_neck, chest, abdomen_pelvis
        for lesion_type in LESION_TYPES:      # the 14 protocol types, schema order
            f"{region}/{lesion_type}/avid"    # such a lesion with increased FDG uptake
            f"{region}/{lesion_type}/not_avid"
        f"{region}/normal"                    # the region has no lesion at all

so region ``r`` owns labels ``[r·29, (r+1)·29)``. The head sees one region at a time and
returns that region's 29 logits (`region_logits`: the multiple-instance maximum over
voxels of P(lesion centre)·P(type)·P(avidity)); ``diag_targets(lesions, region)`` gives
the targets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vipet.model.encoder3d import _as_tuple, conv_block, init_convs
from vipet.model.layers import DictConfig, check_positive
from vipet.reports.schema import FINE_LOCATIONS, LATERALITIES, LESION_TYPES, REGIONS, Lesion

AVIDITY: tuple[str, ...] = ("avid", "not_avid")
LABELS_PER_REGION: int = len(LESION_TYPES) * len(AVIDITY) + 1  # + "normal"
NORMAL_INDEX: int = LABELS_PER_REGION - 1  # within a region's slice
FINE_NAMES: tuple[str, ...] = tuple(FINE_LOCATIONS)
"""Fine locations in head output order."""
OUTPUTS: dict[str, int] = {
    "heat": 1,
    "lesion": 1,
    "types": len(LESION_TYPES),
    "avid": 1,
    "fine": len(FINE_NAMES),
    "side": len(LATERALITIES),
    "log_size": 1,
}
"""The head's output channels, in order."""
ATTRIBUTES: tuple[str, ...] = ("type", "avid", "fine", "side", "log_size")
"""Rows of an attribute table (`lesion_table`): what each lesion id stands for."""


def region_label_names(region: str) -> list[str]:
    """The ``LABELS_PER_REGION`` label names of one region, in head output order."""
    _check_region(region)
    names = [f"{region}/{t}/{a}" for t in LESION_TYPES for a in AVIDITY]
    return [*names, f"{region}/normal"]


def label_names() -> list[str]:
    """All labels: the regions' slices in REGIONS order (see module doc)."""
    return [name for region in REGIONS for name in region_label_names(region)]


def _check_region(region: str) -> None:
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; choose from {list(REGIONS)}")


def _lesion_fields(lesion: Lesion | Mapping[str, Any]) -> tuple[str, str, bool]:
    """``(region, type, fdg_avid)`` of a Lesion or its dict form."""
    if isinstance(lesion, Lesion):
        return lesion.region, lesion.type, bool(lesion.fdg_avid)
    try:
        region, kind, avid = lesion["region"], lesion["type"], bool(lesion["fdg_avid"])
    except KeyError as exc:
        raise ValueError(
            f"a lesion dict needs region, type and fdg_avid; got {dict(lesion)}"
        ) from exc
    if kind not in LESION_TYPES:
        raise ValueError(f"unknown lesion type {kind!r}; choose from {list(LESION_TYPES)}")
    return region, kind, avid


def label_index(kind: str, fdg_avid: bool) -> int:
    """Index of the type x avidity label within a region's slice."""
    if kind not in LESION_TYPES:
        raise ValueError(f"unknown lesion type {kind!r}; choose from {list(LESION_TYPES)}")
    return LESION_TYPES.index(kind) * len(AVIDITY) + (0 if fdg_avid else 1)


def diag_targets(
    lesions: Sequence[Lesion | Mapping[str, Any]], region: str | None = None
) -> torch.Tensor:
    """Multi-hot float targets: ``(LABELS_PER_REGION,)`` for ``region`` (its lesions
    only, by ``lesion.region``), or ``(len(REGIONS) · LABELS_PER_REGION,)`` for the whole
    study when ``region`` is None. ``normal`` is 1 for a region without any lesion."""
    regions = REGIONS if region is None else (region,)
    for r in regions:
        _check_region(r)
    out = torch.zeros(len(regions), LABELS_PER_REGION)
    out[:, NORMAL_INDEX] = 1.0
    for lesion in lesions:
        r, kind, avid = _lesion_fields(lesion)
        _check_region(r)
        if r not in regions:
            continue
        row = regions.index(r)
        out[row, label_index(kind, avid)] = 1.0
        out[row, NORMAL_INDEX] = 0.0
    return out.reshape(-1)


# ---- the head ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DiagHeadConfig(DictConfig):
    width: int = 192
    """Width C of the fused tokens."""
    pyramid_channels: tuple[int, ...] = (16, 32, 64)
    """Channels of each encoder's pyramid levels, finest first (ViPetConfig sets them
    from the encoders)."""
    modalities: int = 2
    """How many encoders' pyramids the decoder reads: 2, or 1 for a single-modality
    fusion (ViPetConfig sets it from the fusion, so ``ct_only`` sees no PET at all)."""
    decoder_channels: tuple[int, ...] = (16, 32, 64)
    """Decoder channels at each pyramid level, finest first."""
    heat_bias: float = -2.19
    """Initial bias of the heatmap logits: σ = 0.1 everywhere, so the focal loss of the
    many background voxels starts small (CenterNet's choice)."""
    pos_weight: float | None = None
    """BCE weight on positive region labels (>1 favours recall on rare findings); None: 1."""

    def __post_init__(self) -> None:
        for name in ("pyramid_channels", "decoder_channels"):
            object.__setattr__(self, name, _as_tuple(getattr(self, name)))
        check_positive(width=self.width, modalities=self.modalities)
        if self.modalities not in (1, 2):
            raise ValueError(f"modalities must be 1 or 2, got {self.modalities}")
        if not self.pyramid_channels or len(self.decoder_channels) != len(self.pyramid_channels):
            raise ValueError(
                "decoder_channels needs one entry per pyramid level, got "
                f"{self.decoder_channels} for {self.pyramid_channels}"
            )
        check_positive(**{f"decoder_channels[{i}]": c for i, c in enumerate(self.decoder_channels)})
        if self.pos_weight is not None:
            check_positive(pos_weight=self.pos_weight)


@dataclass
class DenseFindings:
    """The head's voxel maps (logits) at the finest pyramid level, for B volumes."""

    heat: torch.Tensor  # (B, D0, H0, W0)
    lesion: torch.Tensor  # (B, D0, H0, W0)
    types: torch.Tensor  # (B, 14, D0, H0, W0)
    avid: torch.Tensor  # (B, D0, H0, W0)
    fine: torch.Tensor  # (B, 20, D0, H0, W0)
    side: torch.Tensor  # (B, 4, D0, H0, W0)
    log_size: torch.Tensor  # (B, D0, H0, W0)

    @property
    def shape(self) -> tuple[int, int, int]:
        d, h, w = self.heat.shape[-3:]
        return (d, h, w)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> DenseFindings:
        """The same maps with ``fn`` applied to each (slicing, detaching, moving)."""
        return DenseFindings(*(fn(getattr(self, k)) for k in OUTPUTS))


def _conv_of_concat(conv: nn.Conv3d, x: torch.Tensor, skips: torch.Tensor) -> torch.Tensor:
    """``conv(cat([x, skips], dim=1))``, computed as two convolutions over the two parts
    with the matching slices of ``conv``'s weight, summed — a convolution is linear in its
    input channels, so the parameters and the result are the same (to float rounding).
    Why: the concatenated tensor of the full-resolution level (8 x 64 x 64 x 24 x 24 on a
    vision batch) costs its copy, its bf16 cast and, in the backward, the copies of its
    gradient's slices; that level's forward + backward alone went 0.335 s → 0.234 s
    (benchmarks/head_level.py)."""
    c = x.shape[1]
    w = conv.weight
    pad, stride = conv.padding, conv.stride
    y = F.conv3d(x, w[:, :c], conv.bias, stride, pad)
    return y + F.conv3d(skips.to(y.dtype), w[:, c:], None, stride, pad)


class FindingsHead(nn.Module):
    """``fused (B, N, C)`` on ``grid`` + pyramids → `DenseFindings` (see module doc)."""

    def __init__(self, config: DiagHeadConfig) -> None:
        super().__init__()
        self.config = config
        levels = []
        c_in = config.width
        for level in reversed(range(len(config.pyramid_channels))):
            skip = config.modalities * config.pyramid_channels[level]
            levels.append(conv_block(c_in + skip, config.decoder_channels[level]))
            c_in = config.decoder_channels[level]
        self.levels = nn.ModuleList(levels)  # coarsest first
        self.out = nn.Conv3d(c_in, sum(OUTPUTS.values()), kernel_size=1)
        init_convs(self)
        with torch.no_grad():
            self.out.bias[0] = config.heat_bias

    @property
    def num_labels(self) -> int:
        return LABELS_PER_REGION

    def forward(
        self,
        fused: torch.Tensor,
        grid: tuple[int, int, int],
        pyramids: Sequence[Sequence[torch.Tensor]],
    ) -> DenseFindings:
        """``fused`` (B, N, C) tokens on ``grid``; ``pyramids``: per modality the
        encoder's levels, finest first ((B, c_l, D_l, H_l, W_l) each)."""
        cfg = self.config
        if len(pyramids) != cfg.modalities or any(
            len(p) != len(cfg.pyramid_channels) for p in pyramids
        ):
            raise ValueError(
                f"findings head reads {cfg.modalities} pyramid(s) of "
                f"{len(cfg.pyramid_channels)} levels, got {[len(p) for p in pyramids]}"
            )
        b, n, c = fused.shape
        if c != cfg.width or n != math.prod(grid):
            raise ValueError(
                f"findings head expects (B, {math.prod(grid)}, {cfg.width}) tokens, got "
                f"{tuple(fused.shape)}"
            )
        x = fused.transpose(1, 2).reshape(b, c, *grid)
        for i, block in enumerate(self.levels):
            level = len(self.levels) - 1 - i
            skips = [p[level] for p in pyramids]
            x = F.interpolate(x, size=tuple(skips[0].shape[2:]), mode="nearest")
            x = block[1:](_conv_of_concat(block[0], x, torch.cat(skips, dim=1)))
        parts = torch.split(self.out(x), list(OUTPUTS.values()), dim=1)
        maps = {k: (v[:, 0] if OUTPUTS[k] == 1 else v) for k, v in zip(OUTPUTS, parts, strict=True)}
        return DenseFindings(**maps)

    def loss(
        self, logits: torch.Tensor, targets: torch.Tensor, kind: str = "bce", gamma: float = 2.0
    ) -> torch.Tensor:
        """`diag_loss` with this head's ``pos_weight``."""
        return diag_loss(logits, targets, kind, gamma, self.config.pos_weight)


def region_logits(dense: DenseFindings) -> torch.Tensor:
    """``(B, LABELS_PER_REGION)`` region labels by multiple-instance pooling of the maps.

    A region holds a lesion of class k (type x avidity) when some voxel is a lesion
    centre of that class: ``P_k = max_v σ(heat_v)·p(type | v)·p(avidity | v)``; it is
    normal when no voxel is a centre: ``P_normal = 1 − max_v σ(heat_v)``. Computed in log
    space and returned as logits, so confident voxels do not round to 0 or 1."""
    heat = dense.heat.float().flatten(1)  # (B, V)
    log_type = F.log_softmax(dense.types.float().flatten(2), dim=1)  # (B, 14, V)
    avid = dense.avid.float().flatten(1)
    log_avid = torch.stack([F.logsigmoid(avid), F.logsigmoid(-avid)], dim=1)  # (B, 2, V)
    log_p = F.logsigmoid(heat)[:, None, None] + log_type[:, :, None] + log_avid[:, None]
    log_pk = log_p.flatten(1, 2).amax(dim=-1).clamp(max=-1e-6)  # (B, 28) type-major
    type_logits = log_pk - torch.log1p(-torch.exp(log_pk))
    normal = -heat.amax(dim=1, keepdim=True)
    return torch.cat([type_logits, normal], dim=-1)


# ---- losses -------------------------------------------------------------------------------


def _bce(
    logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None
) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(
        logits, targets, pos_weight=pos_weight, reduction="none"
    )


def _focal(
    logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None, gamma: float
) -> torch.Tensor:
    # (1 - p_t)^γ scales down labels the head already gets right, so the many easy
    # negatives of a sparse 29-label space do not drown the few findings.
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    return _bce(logits, targets, pos_weight) * (1 - p_t).pow(gamma)


DIAG_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "bce": lambda logits, targets, pw, gamma: _bce(logits, targets, pw),
    "focal": _focal,
}


def diag_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    kind: str = "bce",
    gamma: float = 2.0,
    pos_weight: float | None = None,
) -> torch.Tensor:
    """Mean multi-label loss over ``(..., n_labels)`` logits and same-shape 0/1 targets:
    ``"bce"`` or ``"focal"`` (focusing ``gamma``)."""
    if kind not in DIAG_LOSSES:
        raise ValueError(f"unknown diag loss {kind!r}; choose from {sorted(DIAG_LOSSES)}")
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    targets = targets.to(logits.dtype)
    pw = (
        None
        if pos_weight is None
        else torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    )
    return DIAG_LOSSES[kind](logits, targets, pw, gamma).mean()


def lesion_table(lesions: Sequence[Lesion | Mapping[str, Any]]) -> torch.Tensor:
    """``(len(ATTRIBUTES), 256)`` float: column ``id`` holds lesion ``id``'s type index
    + 1, avidity + 1 (1 not avid, 2 avid), fine-location index + 1, laterality index + 1
    and log size (mm); column 0 (background) and unknown ids are 0. Indexing it with a
    lesion-id map gives every voxel its lesion's attributes (`attribute_maps`)."""
    table = torch.zeros(len(ATTRIBUTES), 256)
    for lesion in lesions:
        d = lesion.to_dict() if isinstance(lesion, Lesion) else lesion
        i = int(d["id"])
        if not 1 <= i <= 255:
            raise ValueError(f"lesion id {i} does not fit a uint8 mask (1..255)")
        size = float(d.get("size_mm") or 10.0)
        table[:, i] = torch.tensor(
            [
                1 + LESION_TYPES.index(d["type"]),
                1 + int(bool(d["fdg_avid"])),
                1 + FINE_NAMES.index(d["location_detail"]),
                1 + LATERALITIES.index(d.get("laterality") or "none"),
                math.log(max(size, 1.0)),
            ]
        )
    return table


def attribute_maps(labels: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """``labels`` (B, D, H, W) lesion ids, ``tables`` (B, 5, 256) → (B, 5, D, H, W)."""
    b = labels.shape[0]
    idx = labels.long().flatten(1)[:, None, :].expand(-1, tables.shape[1], -1)
    return torch.gather(tables, 2, idx).view(b, tables.shape[1], *labels.shape[1:])


def heat_loss(
    logits: torch.Tensor, heat: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss of the heatmap ``logits`` against Gaussian
    targets ``heat`` (1 exactly at each lesion centre), per lesion: ``−(1−p)²·log p`` at
    the centres, ``−(1−y)⁴·p²·log(1−p)`` elsewhere (voxels near a centre are barely
    penalised), summed and divided by the number of centres. ``weight`` (the shape of
    ``heat``): a factor on each centre's term (`findings_losses`' ``non_avid_weight``).
    Written without boolean indexing: masked gathers of (B, D, H, W) maps cost more on
    the CPU than the arithmetic."""
    p = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    pos = (heat >= 1.0).to(p.dtype)
    found = (1 - p) ** 2 * torch.log(p) * pos
    if weight is not None:
        found = found * weight
    terms = found + (1 - heat) ** 4 * p**2 * torch.log(1 - p) * (1 - pos)
    return -terms.sum() / pos.sum().clamp_min(1.0)


def findings_losses(
    dense: DenseFindings,
    labels: torch.Tensor,
    tables: torch.Tensor,
    heat: torch.Tensor,
    non_avid_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """The head's voxel losses against lesion-id maps ``labels`` (B, D0, H0, W0) at the
    head's resolution, their attribute ``tables`` (B, 5, 256) and ``heat`` targets:

    - ``heat``: `heat_loss`, the centre of a lesion without FDG uptake weighted
      ``non_avid_weight`` (the head finds such a lesion on CT alone, and learns it last);
    - ``lesion``: BCE (lesion voxels weighted 5) + soft Dice of the segmentation;
    - ``attributes``: on lesion voxels only, cross-entropy of type, fine location and
      laterality, BCE of avidity, smooth-L1 of the log size, summed — zero, with a
      gradient path, when the batch shows no lesion."""
    if labels.shape != dense.heat.shape or heat.shape != dense.heat.shape:
        raise ValueError(
            f"targets {tuple(labels.shape)} / {tuple(heat.shape)} do not match the head's "
            f"maps {tuple(dense.heat.shape)}"
        )
    is_lesion = labels > 0
    y = is_lesion.float()
    seg = dense.lesion.float()
    bce = F.binary_cross_entropy_with_logits(seg, y, pos_weight=torch.tensor(5.0, device=y.device))
    p = torch.sigmoid(seg)
    dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
    weight = None
    if non_avid_weight != 1.0:
        avidity = attribute_maps(labels, tables.to(y.device))[:, ATTRIBUTES.index("avid")]
        weight = torch.where(avidity == 1, non_avid_weight, 1.0)  # 1: not avid, 2: avid
    out = {"heat": heat_loss(dense.heat, heat, weight), "lesion": bce + dice}
    n = y.sum()
    if float(n) == 0:
        out["attributes"] = sum(getattr(dense, k).float().sum() for k in OUTPUTS) * 0.0
        return out
    a = attribute_maps(labels, tables.to(y.device))
    cls = lambda t: (t.long() - 1).clamp_min(0)  # noqa: E731  (background: masked out)
    ce = lambda logits, t: F.cross_entropy(logits.float(), cls(t), reduction="none")  # noqa: E731
    parts = (
        ce(dense.types, a[:, 0]),
        F.binary_cross_entropy_with_logits(
            dense.avid.float(), (a[:, 1] - 1).clamp_min(0), reduction="none"
        ),
        ce(dense.fine, a[:, 2]),
        ce(dense.side, a[:, 3]),
        F.smooth_l1_loss(dense.log_size.float(), a[:, 4], reduction="none"),
    )
    out["attributes"] = sum((part * y).sum() for part in parts) / n
    return out


def heat_targets(
    centres: Sequence[Sequence[tuple[tuple[float, float, float], tuple[float, float, float]]]],
    shape: tuple[int, int, int],
    origin: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(B, *shape)`` Gaussian heatmaps: per item the lesions' ``(centre, sigma)`` in
    voxels of the head's grid (1.0 exactly at the rounded centre). ``origin`` (B, 3): where
    each item's window starts on that grid (crops), default 0."""
    out = torch.zeros(len(centres), *shape)
    axes = [torch.arange(n, dtype=torch.float32) for n in shape]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    for i, item in enumerate(centres):
        o = [0.0, 0.0, 0.0] if origin is None else [float(v) for v in origin[i]]
        for (cz, cy, cx), (sz, sy, sx) in item:
            lz, ly, lx = cz - o[0], cy - o[1], cx - o[2]
            g = torch.exp(
                -(((zz - lz) / sz) ** 2 + ((yy - ly) / sy) ** 2 + ((xx - lx) / sx) ** 2) / 2
            )
            out[i] = torch.maximum(out[i], g)
            at = (round(lz), round(ly), round(lx))
            if all(0 <= a < n for a, n in zip(at, shape, strict=True)):
                out[i][at] = 1.0
    return out


def lesion_centres(
    labels: torch.Tensor, min_sigma: float = 0.8
) -> list[tuple[int, tuple[float, float, float], tuple[float, float, float]]]:
    """``(id, centre, sigma)`` of every lesion in one id map ``(D, H, W)`` (the head's
    grid): the centre is the lesion's voxel nearest to its centre of mass (so a crescent
    effusion's peak lies on it), sigma a sixth of its extent per axis, at least
    ``min_sigma`` voxels."""
    out = []
    for i in torch.unique(labels).tolist():
        if i == 0:
            continue
        pts = torch.nonzero(labels == i).float()
        com = pts.mean(dim=0)
        c = pts[((pts - com) ** 2).sum(dim=1).argmin()]
        extent = pts.max(dim=0).values - pts.min(dim=0).values + 1
        sigma = torch.clamp(extent / 6.0, min=min_sigma)
        out.append((int(i), tuple(c.tolist()), tuple(sigma.tolist())))
    return out
