"""Finding slots: the findings head's K strongest detections per region, as LM tokens.

A report lists lesions one by one (type, place, uptake), so the language model needs
each finding as something it can point at and count — not only a region-level verdict.
Per region the slots are the ``K`` tokens of the encoder grid with the highest lesion
score that are also local maxima of the score over their 3 x 3 x 3 neighbourhood (one
slot per lesion rather than one per patch a large lesion covers). Each slot embeds

- the fused token itself (what it looks like, with its position embedding),
- the head's lesion probability and type x avidity probabilities there,
- the token's normalised grid position (z, y, x in [0, 1]),

through a two-layer MLP into the LM's width. The selection is not differentiable but
everything the slot carries is, so the LM loss also trains the vision side. A slot's
attention row (for attention maps) is its one token.

**Empty slots.** A slot whose lesion probability is below ``threshold`` carries a learned
"empty" embedding instead. Without it the LM has to read "is this slot a finding" off a
probability among ~200 numbers, and a small one trained from scratch does not: it wrote
a sentence for every slot (890 lesions predicted against 258, docs/training.md run 3).
With it, describing the filled slots is the whole job, and the count of findings is the
head's count.

**Teacher-forced slots** (`teacher_slots`, training only). Built from the head's own
detections, most slots of a partly trained model sit off the lesions, so what a slot
says (its type probabilities) barely predicts the sentence the LM must write, and the LM
learns to ignore it (run 4 wrote 515 of 530 lesions as the most frequent type). For a
share of training steps the slots are instead put on the lesions the region's report
describes — one per lesion, on the token holding most of its voxels, the rest empty — and
carry what the head sees *there*; so the LM learns "one filled slot, one sentence, of the
type the slot shows", and at inference the head's detections take their place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def select_slots(scores: torch.Tensor, grid: tuple[int, int, int], k: int) -> torch.Tensor:
    """``(B, N)`` token scores on ``grid`` → ``(B, k)`` token indices: local maxima of the
    score first, highest first (other tokens fill in when a region has fewer than k)."""
    b, n = scores.shape
    if n != grid[0] * grid[1] * grid[2]:
        raise ValueError(f"{n} token scores do not fill the grid {grid}")
    if not 1 <= k <= n:
        raise ValueError(f"cannot take {k} slots from {n} tokens")
    s = scores.detach().float().reshape(b, 1, *grid)
    peak = s == F.max_pool3d(s, kernel_size=3, stride=1, padding=1)
    # a non-peak sorts below every peak but keeps its order among non-peaks
    ranked = torch.where(peak, s, s - (s.max() - s.min() + 1.0)).reshape(b, n)
    return ranked.topk(k, dim=-1).indices


def teacher_slots(
    filed: torch.Tensor, grid: tuple[int, int, int], k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, D, H, W)`` maps of the lesions a report describes (n on the n-th lesion's
    voxels, 0 elsewhere) → slot token indices ``(B, k)`` and filled ``(B, k)`` bool: slot
    j of an item sits on the token holding most voxels of its j-th lesion present in the
    volume (lesions beyond k are dropped, as a detector with k slots would), the others
    are empty (index 0, which an empty slot never reads)."""
    b, d, h, w = filed.shape
    if d % grid[0] or h % grid[1] or w % grid[2]:
        raise ValueError(f"lesion maps of {(d, h, w)} do not tile the grid {grid}")
    patch = (d // grid[0], h // grid[1], w // grid[2])
    idx = torch.zeros(b, k, dtype=torch.long, device=filed.device)
    filled = torch.zeros(b, k, dtype=torch.bool, device=filed.device)
    for i in range(b):
        labels = [int(v) for v in torch.unique(filed[i]).tolist() if v != 0][:k]
        if not labels:
            continue
        masks = torch.stack([filed[i] == v for v in labels])[:, None].float()
        share = F.avg_pool3d(masks, kernel_size=patch, stride=patch).reshape(len(labels), -1)
        idx[i, : len(labels)] = share.argmax(dim=-1)
        filled[i, : len(labels)] = True
    return idx, filled


def grid_positions(grid: tuple[int, int, int], device: torch.device | None = None) -> torch.Tensor:
    """``(N, 3)`` normalised (z, y, x) centre of every token, in [0, 1]."""
    axes = [(torch.arange(g, device=device, dtype=torch.float32) + 0.5) / g for g in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


class FindingsSlots(nn.Module):
    """``fused (B, N, C)``, head ``scores (B, N)`` and ``classes (B, N, K)`` → slot
    tokens ``(B, slots, hidden)``, their token indices and which are filled."""

    def __init__(
        self, width: int, n_classes: int, hidden: int, slots: int, threshold: float = 0.0
    ) -> None:
        super().__init__()
        self.slots = slots
        self.threshold = threshold
        self.empty = nn.Parameter(torch.zeros(hidden))
        self.mlp = nn.Sequential(
            nn.LayerNorm(width + n_classes + 4),
            nn.Linear(width + n_classes + 4, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
        )

    def forward(
        self,
        fused: torch.Tensor,
        scores: torch.Tensor,
        classes: torch.Tensor,
        grid: tuple[int, int, int],
        forced: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """→ slot tokens ``(B, S, hidden)``, their token indices ``(B, S)`` and whether
        each is filled ``(B, S)`` bool. ``forced``: ``(indices, filled)`` from
        `teacher_slots` instead of the head's detections and the threshold."""
        if forced is None:
            idx = select_slots(scores, grid, self.slots)  # (B, S)
        else:
            idx = forced[0]
            if idx.shape != (scores.shape[0], self.slots):
                raise ValueError(
                    f"forced slots {tuple(idx.shape)}, expected {(scores.shape[0], self.slots)}"
                )
        take = lambda x: torch.gather(  # noqa: E731
            x, 1, idx[..., None].expand(-1, -1, x.shape[-1])
        )
        pos = grid_positions(grid, fused.device).to(fused.dtype)[idx]  # (B, S, 3)
        prob = torch.sigmoid(torch.gather(scores, 1, idx).float())
        feats = torch.cat(
            [take(fused), torch.exp(take(classes)), prob[..., None].to(fused.dtype), pos],
            dim=-1,
        )
        out = self.mlp(feats.to(fused.dtype))
        filled = prob >= self.threshold if forced is None else forced[1]
        out = torch.where(filled[..., None], out, self.empty.to(out.dtype))
        return out, idx, filled
