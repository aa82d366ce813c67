"""The voxel-level lesion head: where in the volume a lesion is, at the resolution of the
encoders' stem features.

The findings head scores tokens of 4 x 16 x 16 voxels (about 4 x 4 x 4 cm in the chest);
its targets say "somewhere in this patch", a few per volume, and a small encoder trained
on them from scratch learned *where lesions usually are* rather than what one looks like
(docs/training.md). This head reads the CT and PET stems' feature maps at a finer stage
(`EncoderConfig.dense_stage`; 16 x 32 x 32 for cpu-small), concatenated, through a 3x3x3
and a 1x1x1 convolution, and predicts the lesion mask there. Its loss
(`dense_lesion_loss`) reaches the stems directly, with every voxel labelled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DenseLesionHead(nn.Module):
    """``ct (B, C1, d, h, w)``, ``pet (B, C2, d, h, w)`` → lesion logits ``(B, d, h, w)``."""

    def __init__(self, ct_channels: int, pet_channels: int, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(ct_channels + pet_channels, hidden, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv3d(hidden, 1, kernel_size=1),
        )

    def forward(self, ct: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        if ct.shape[2:] != pet.shape[2:]:
            raise ValueError(
                f"CT and PET dense features differ in size: {tuple(ct.shape)} vs {tuple(pet.shape)}"
            )
        return self.net(torch.cat([ct, pet], dim=1))[:, 0]


def dense_targets(lesion: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """``(B, D, H, W)`` bool lesion masks → ``(B, *shape)`` float: 1 where the cell holds
    a lesion voxel (max-pooling, so a 4 mm node is not averaged away)."""
    _b, d, h, w = lesion.shape
    k = (d // shape[0], h // shape[1], w // shape[2])
    if any(n % s for n, s in zip((d, h, w), shape, strict=True)):
        raise ValueError(f"mask {tuple(lesion.shape[1:])} does not pool onto {shape}")
    return F.max_pool3d(lesion[:, None].float(), kernel_size=k, stride=k)[:, 0]


def dense_lesion_loss(
    logits: torch.Tensor, lesion: torch.Tensor, pos_weight: float = 10.0
) -> torch.Tensor:
    """Class-weighted BCE plus soft Dice of the dense logits ``(B, d, h, w)`` against
    the lesion masks ``(B, D, H, W)``. BCE teaches every cell; Dice keeps the rare lesion
    cells (well under 1 %) from being outvoted, and is 0 by convention on a volume with
    no lesion (only the BCE speaks there)."""
    target = dense_targets(lesion, tuple(logits.shape[1:])).to(logits.dtype)
    weight = torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)
    prob = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    has = t.sum(1) > 0
    if not bool(has.any()):
        return bce
    inter = (prob * t).sum(1)
    dice = 1 - (2 * inter + 1) / (prob.sum(1) + t.sum(1) + 1)
    return bce + dice[has].mean()
