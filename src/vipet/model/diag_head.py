"""The findings head: an auxiliary multi-label diagnosis from the fused visual tokens.

**Label space** (``label_names()``, 87 labels), region-major so that each region's
labels are one contiguous slice::

    for region in REGIONS:                    # head_neck, chest, abdomen_pelvis
        for lesion_type in LESION_TYPES:      # the 14 protocol types, schema order
            f"{region}/{lesion_type}/avid"    # such a lesion with increased FDG uptake
            f"{region}/{lesion_type}/not_avid"
        f"{region}/normal"                    # the region has no lesion at all

so region ``r`` owns labels ``[r·29, (r+1)·29)``: 14 × 2 type/avidity labels, then
``normal``.

**One region at a time.** ViPET encodes each body region as its own volume, so the
head sees one region's fused tokens and returns that region's 29 logits
``(B, 29)`` — the region's slice of the full label vector. The 29 labels mean the same
in every region, and the region is plain from the anatomy in the volume, so one head
serves all three regions; concatenating a study's region outputs in REGIONS order gives
the full 87-label vector. Targets: ``diag_targets(lesions, region)``.

**Per token, then pooled.** The head predicts, for every token, whether its patch holds a
lesion and of which type x avidity; a region's labels are the multiple-instance maximum
over its tokens. Both token predictions are trained densely from the lesion masks
(`token_lesion_loss`, `token_class_loss`), the region labels by `diag_loss`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vipet.model.layers import DictConfig, check_dropout, check_positive
from vipet.model.layers import init_weights as _init_weights
from vipet.reports.schema import LESION_TYPES, REGIONS, Lesion

AVIDITY: tuple[str, ...] = ("avid", "not_avid")
LABELS_PER_REGION: int = len(LESION_TYPES) * len(AVIDITY) + 1  # + "normal"
NORMAL_INDEX: int = LABELS_PER_REGION - 1  # within a region's slice


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


@dataclass(frozen=True)
class DiagHeadConfig(DictConfig):
    width: int = 192
    """Width C of the fused tokens."""
    hidden: int = 256
    """Hidden width of the classifier MLP."""
    dropout: float = 0.1
    """Dropout before the output layer."""
    pos_weight: float | None = None
    """BCE weight on positive labels (>1 favours recall on rare findings); None: 1."""

    def __post_init__(self) -> None:
        check_positive(width=self.width, hidden=self.hidden)
        check_dropout(self.dropout)
        if self.pos_weight is not None:
            check_positive(pos_weight=self.pos_weight)


@dataclass
class Findings:
    """What the findings head reads from one batch of region token sets."""

    logits: torch.Tensor  # (B, LABELS_PER_REGION) region labels (multi-label logits)
    scores: torch.Tensor  # (B, N) per-token lesion logits ("a lesion is here")
    classes: torch.Tensor  # (B, N, LABELS_PER_REGION - 1) per-token type x avidity
    # log-probabilities given a lesion there (they sum to 1 over the classes)


def _mil_logits(scores: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Region logits by multiple-instance pooling of the token predictions.

    A region holds a lesion of class k when some token does:
    ``P_k = max_n σ(score_n)·p(k | lesion at n)``; it is normal when no token holds a
    lesion: ``P_normal = 1 − max_n σ(score_n)``. Returned as logits (computed in log space
    so that confident tokens do not round to 0 or 1). ``classes`` are log-probabilities."""
    log_p = F.logsigmoid(scores)[..., None] + classes  # (B, N, K)
    log_pk = log_p.amax(dim=1)  # (B, K)
    # logit(p) = log p − log(1 − p); clamp keeps log1p(−p) finite when p rounds to 1
    log_pk = log_pk.clamp(max=-1e-6)
    type_logits = log_pk - torch.log1p(-torch.exp(log_pk))
    normal = -scores.amax(dim=1, keepdim=True)
    return torch.cat([type_logits, normal], dim=-1)


class FindingsHead(nn.Module):
    """``fused tokens (B, N, C) → region logits (B, LABELS_PER_REGION)`` for one region
    each, read off per-token predictions.

    Every token gets a lesion logit ("a lesion is in my patch") and, given a lesion, a
    distribution over the type x avidity classes — a softmax over the 14 types times an
    independent avid / not-avid probability (the type is read from the anatomy, the
    avidity from the uptake); the region labels are their multiple-instance maximum
    (`_mil_logits`). Why per token: a region's findings are a few hot tokens among
    hundreds, and one pooled vector blurs lesions of different types into one — per-token
    predictions keep them apart and can be supervised densely from the lesion masks
    (`token_lesion_loss`, `token_class_loss`), which teaches the encoders far faster than
    29 labels per region.
    """

    def __init__(self, config: DiagHeadConfig) -> None:
        super().__init__()
        self.config = config
        c = config.width
        self.ln = nn.LayerNorm(c)
        self.mlp = nn.Sequential(
            nn.Linear(c, config.hidden),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, 1 + len(LESION_TYPES) + 1),  # score, types, avidity
        )
        self.apply(_init_weights)

    @property
    def num_labels(self) -> int:
        return LABELS_PER_REGION

    def findings(self, tokens: torch.Tensor) -> Findings:
        """``tokens`` (B, N, C) → `Findings` (region logits, token scores and classes)."""
        if tokens.dim() != 3 or tokens.shape[-1] != self.config.width:
            raise ValueError(
                f"findings head expects (B, N, {self.config.width}), got {tuple(tokens.shape)}"
            )
        out = self.mlp(self.ln(tokens))
        scores, types, avid = out[..., 0], out[..., 1:-1], out[..., -1:]
        # label order within a region: type-major, then avid / not avid (AVIDITY)
        log_type = F.log_softmax(types, dim=-1)[..., None]
        log_avid = torch.stack([F.logsigmoid(avid), F.logsigmoid(-avid)], dim=-1)
        classes = (log_type + log_avid).flatten(-2)
        return Findings(_mil_logits(scores, classes), scores, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` (B, N, C) → region logits (B, LABELS_PER_REGION)."""
        return self.findings(tokens).logits

    def loss(
        self, logits: torch.Tensor, targets: torch.Tensor, kind: str = "bce", gamma: float = 2.0
    ) -> torch.Tensor:
        """`diag_loss` with this head's ``pos_weight``."""
        return diag_loss(logits, targets, kind, gamma, self.config.pos_weight)


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


def token_lesion_targets(lesion: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """``(B, D, H, W)`` bool lesion masks → ``(B, N)`` float: 1 for every encoder token
    whose patch holds a lesion voxel (max over the patch)."""
    b, d, h, w = lesion.shape
    k = (d // grid[0], h // grid[1], w // grid[2])
    pooled = F.max_pool3d(lesion[:, None].float(), kernel_size=k, stride=k)
    return pooled.reshape(b, -1)


def token_class_targets(
    classes: torch.Tensor, grid: tuple[int, int, int], n_classes: int = LABELS_PER_REGION - 1
) -> torch.Tensor:
    """``(B, D, H, W)`` integer class maps (0 = background, ``1 + k`` = a lesion of region
    label ``k``) → ``(B, N, n_classes)`` multi-hot: class k for every token whose patch
    holds a voxel of class k."""
    b, d, h, w = classes.shape
    k = (d // grid[0], h // grid[1], w // grid[2])
    out = torch.zeros(b, grid[0] * grid[1] * grid[2], n_classes, device=classes.device)
    for c in torch.unique(classes).tolist():
        if c == 0:
            continue
        if not 1 <= c <= n_classes:
            raise ValueError(f"lesion class map holds {c}, outside 0..{n_classes}")
        hit = F.max_pool3d((classes == c)[:, None].float(), kernel_size=k, stride=k)
        out[..., c - 1] = hit.reshape(b, -1)
    return out


def token_class_loss(
    log_probs: torch.Tensor, classes: torch.Tensor, grid: tuple[int, int, int]
) -> torch.Tensor:
    """Cross-entropy of the per-token type x avidity log-probabilities ``(B, N, K)`` on
    the tokens that hold a lesion (the classes are conditional on one being there;
    `token_lesion_loss` trains "is one there"); a token holding lesions of several
    classes has them as equal soft targets. Zero, with a gradient path, when the batch
    has no lesion.

    Why a softmax and not one sigmoid per class: against 27 negatives per token, BCE
    learns "no class anywhere" first and the token's own class only slowly."""
    target = token_class_targets(classes, grid, log_probs.shape[-1]).to(log_probs.dtype)
    has = target.amax(dim=-1) > 0
    if not bool(has.any()):
        return log_probs.sum() * 0.0
    target = target[has] / target[has].sum(dim=-1, keepdim=True)
    return -(target * log_probs[has]).sum(dim=-1).mean()


def token_lesion_loss(
    scores: torch.Tensor, lesion: torch.Tensor, grid: tuple[int, int, int], pos_weight: float = 20.0
) -> torch.Tensor:
    """Dense supervision of the findings head's token scores ``(B, N)`` by the lesion
    masks ``(B, D, H, W)``: BCE per token, lesion tokens weighted ``pos_weight`` (they are
    ~1 % of a region's tokens)."""
    target = token_lesion_targets(lesion, grid).to(scores.dtype)
    weight = torch.tensor(pos_weight, dtype=scores.dtype, device=scores.device)
    return F.binary_cross_entropy_with_logits(scores, target, pos_weight=weight)
