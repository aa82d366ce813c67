"""The regularisation losses of ViPET-VLM (DOMAIN.md §1), beside the LM cross-entropy.

- **Attention alignment**: the Focal Tversky loss between the attention map ``a``
  (min–max normalised, in [0, 1]) and an ROI mask ``m`` (the lesion mask when the study
  has one, else the PET-derived ROI): ``TP = Σ a·m, FP = Σ a·(1−m), FN = Σ (1−a)·m``,
  ``T = (TP + ε) / (TP + β·FP + α·FN + ε)`` with α = 0.7 on misses and β = 0.3 on false
  alarms (missing a lesion costs more than looking a little beside it), and
  ``loss = (1 − T)^γ`` with γ = 2, which focuses on maps that are badly off.
- **Findings**: BCE or focal loss of the findings head's region labels, and its voxel
  losses — lesion-centre heatmap, segmentation, per-voxel attributes
  (`vipet.model.diag_head`).
- **LM cross-entropy** on the answer tokens (`answer_cross_entropy`), averaged over the
  batch's answer tokens (HF's, "token") or per example first ("sample", `LM_REDUCTIONS`).
- **Contrastive** (encoder pretraining): CLIP's symmetric InfoNCE between study image
  embeddings and report text embeddings.

`LossWeights` holds the weights; `combine` returns the weighted total and every part
as a float for logging.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vipet.data.prompts import IGNORE_INDEX


def focal_tversky_loss(
    attention: torch.Tensor,
    mask: torch.Tensor,
    alpha: float = 0.7,
    beta: float = 0.3,
    gamma: float = 2.0,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Mean Focal Tversky loss over maps ``(..., D, H, W)`` against masks of the same shape."""
    if attention.shape != mask.shape:
        raise ValueError(f"attention {tuple(attention.shape)} and mask {tuple(mask.shape)} differ")
    a = attention.flatten(start_dim=-3)
    m = mask.to(a.dtype).flatten(start_dim=-3)
    return focal_tversky_from_counts(a, m, torch.ones_like(m), alpha, beta, gamma, eps)


def focal_tversky_from_counts(
    attention: torch.Tensor,
    inside: torch.Tensor,
    total: torch.Tensor,
    alpha: float = 0.7,
    beta: float = 0.3,
    gamma: float = 2.0,
    eps: float = 1e-6,
) -> torch.Tensor:
    """`focal_tversky_loss` of maps that are constant over blocks of voxels: per block
    (the last dim) the map's value ``attention``, the mask's voxels in it ``inside`` and
    its voxels ``total``. An attention map spread over the voxels token by token gives
    exactly the voxel-level loss from its ``(B, R, N)`` tokens, at a thousandth of the
    size (cpu-small: 2048 voxels a token)."""
    if not attention.shape == inside.shape == total.shape:
        raise ValueError(
            f"attention {tuple(attention.shape)}, inside {tuple(inside.shape)} and total "
            f"{tuple(total.shape)} differ"
        )
    m = inside.to(attention.dtype)
    tp = (attention * m).sum(-1)
    fp = (attention * (total.to(attention.dtype) - m)).sum(-1)
    fn = ((1 - attention) * m).sum(-1)
    tversky = (tp + eps) / (tp + beta * fp + alpha * fn + eps)
    return ((1 - tversky).clamp_min(0) ** gamma).mean()


def voxels_per_token(mask: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """``(..., D, H, W)`` mask → ``(..., N)`` its voxels in each token of ``grid`` (the
    volume cut into equal patches, token order as the encoders flatten them)."""
    *lead, d, h, w = mask.shape
    g0, g1, g2 = grid
    if d % g0 or h % g1 or w % g2:
        raise ValueError(f"a volume of {(d, h, w)} does not tile the token grid {tuple(grid)}")
    blocks = mask.reshape(*lead, g0, d // g0, g1, h // g1, g2, w // g2)
    return blocks.sum(dim=(-5, -3, -1), dtype=torch.float32).reshape(*lead, g0 * g1 * g2)


def contrastive_loss(
    image: torch.Tensor, text: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    """CLIP-style symmetric InfoNCE: ``image`` and ``text`` ``(B, E)``; pair i ↔ i."""
    if image.shape != text.shape or image.dim() != 2:
        raise ValueError(
            f"image {tuple(image.shape)} and text {tuple(text.shape)} must both be (B, E)"
        )
    logits = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T / temperature
    target = torch.arange(image.shape[0], device=image.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


@dataclass(frozen=True)
class LossWeights:
    lm: float = 1.0
    """Language-model cross-entropy on answer tokens."""
    diag: float = 0.5
    """Findings head (diagnostic accuracy)."""
    align: float = 0.5
    """Attention alignment (Focal Tversky); the published setup uses 0.5."""
    contrastive: float = 0.0
    """Image–report contrastive (encoder pretraining stage only)."""
    heat: float = 0.0
    """The findings head's lesion-centre heatmap (CenterNet focal loss,
    `vipet.model.diag_head.heat_loss`): one peak per lesion."""
    lesion: float = 0.0
    """The findings head's lesion segmentation (BCE + soft Dice)."""
    attributes: float = 0.0
    """The findings head's per-voxel type, avidity, fine location, laterality and size,
    on lesion voxels (`vipet.model.diag_head.findings_losses`)."""

    def __post_init__(self) -> None:
        if min(vars(self).values()) < 0:
            raise ValueError("loss weights must be >= 0")


def _token_mean(ce: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return ce.sum() / mask.sum().clamp_min(1)


def _sample_mean(ce: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    per_sample = ce.sum(dim=1) / mask.sum(dim=1).clamp_min(1)
    has = mask.any(dim=1)
    return per_sample[has].mean() if bool(has.any()) else ce.sum()


LM_REDUCTIONS = {"token": _token_mean, "sample": _sample_mean}
"""How `answer_cross_entropy` averages: "token" — over all answer tokens of the batch (a
55-token report section weighs 18 times a 3-token answer; HF's causal-LM loss);
"sample" — each example's mean first, then over the examples (every answer counts once)."""


def answer_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "token"
) -> torch.Tensor:
    """Next-token cross-entropy of ``logits`` ``(B, T, V)`` on ``labels`` ``(B, T)``
    (IGNORE_INDEX outside the answers), reduced as `LM_REDUCTIONS` says."""
    if reduction not in LM_REDUCTIONS:
        raise ValueError(f"lm reduction must be one of {list(LM_REDUCTIONS)}, got {reduction!r}")
    target = labels[:, 1:]
    ce = F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="none"
    )
    return LM_REDUCTIONS[reduction](ce, target != IGNORE_INDEX)


def combine(
    parts: Mapping[str, torch.Tensor | None], weights: LossWeights
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the parts present (None or zero-weight parts are skipped) and a log
    dict with every part and the total as floats."""
    total = None
    log: dict[str, float] = {}
    for name, value in parts.items():
        if value is None:
            continue
        w = getattr(weights, name)
        log[f"loss/{name}"] = float(value.detach())
        if w:
            total = w * value if total is None else total + w * value
    if total is None:
        raise ValueError(f"no loss to optimise among {sorted(parts)} with weights {weights}")
    log["loss/total"] = float(total.detach())
    return total, log
