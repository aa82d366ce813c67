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
        out[row, LESION_TYPES.index(kind) * len(AVIDITY) + (0 if avid else 1)] = 1.0
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


class FindingsHead(nn.Module):
    """``fused tokens (B, N, C) → logits (B, LABELS_PER_REGION)`` for one region each.

    Pooling: the token mean (how the whole region looks) concatenated with an attention
    pool (a learned score per token, softmax over N), because a finding is often a few
    hot tokens that a plain mean would dilute.
    """

    def __init__(self, config: DiagHeadConfig) -> None:
        super().__init__()
        self.config = config
        c = config.width
        self.ln = nn.LayerNorm(c)
        self.score = nn.Linear(c, 1)
        self.mlp = nn.Sequential(
            nn.LayerNorm(2 * c),
            nn.Linear(2 * c, config.hidden),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, LABELS_PER_REGION),
        )
        self.apply(_init_weights)

    @property
    def num_labels(self) -> int:
        return LABELS_PER_REGION

    def forward(
        self, tokens: torch.Tensor, return_scores: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``tokens`` (B, N, C) → logits (B, LABELS_PER_REGION); with ``return_scores``
        also the attention pool's per-token scores (B, N) before the softmax.

        The score doubles as a per-token lesion logit: the token-level lesion loss
        (`token_lesion_loss`) trains it against the lesion mask, so the pool learns to
        read the tokens that hold the findings."""
        if tokens.dim() != 3 or tokens.shape[-1] != self.config.width:
            raise ValueError(
                f"findings head expects (B, N, {self.config.width}), got {tuple(tokens.shape)}"
            )
        h = self.ln(tokens)
        scores = self.score(h).squeeze(-1)  # (B, N)
        attn = torch.softmax(scores, dim=-1)
        pooled = torch.cat([h.mean(dim=1), torch.einsum("bn,bnc->bc", attn, h)], dim=-1)
        logits = self.mlp(pooled)
        return (logits, scores) if return_scores else logits

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


def token_lesion_loss(
    scores: torch.Tensor, lesion: torch.Tensor, grid: tuple[int, int, int], pos_weight: float = 20.0
) -> torch.Tensor:
    """Dense supervision of the findings head's token scores ``(B, N)`` by the lesion
    masks ``(B, D, H, W)``: BCE per token, lesion tokens weighted ``pos_weight`` (they are
    ~1 % of a region's tokens). 29 labels per region teach the encoders slowly where a
    lesion is; one label per token teaches them fast."""
    target = token_lesion_targets(lesion, grid).to(scores.dtype)
    weight = torch.tensor(pos_weight, dtype=scores.dtype, device=scores.device)
    return F.binary_cross_entropy_with_logits(scores, target, pos_weight=weight)
