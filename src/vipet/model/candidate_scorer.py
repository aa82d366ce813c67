"""A second look at each heatmap peak: what the findings head shows around it, read by a
small learned classifier that says whether a lesion is there and which kind.

Computer-aided detection has long run in two stages — find candidates with high
sensitivity, then reduce the false positives with a classifier over each candidate's
features — and the findings head needs it for the same reason. Its heatmap ranks
peaks by one number, and at a non-avid node or nodule that number stays low (median
0.07 on run 19's test split, docs/training.md) while the type it reads there is right; a
threshold on the heat alone then trades those lesions against peaks on vessels and
bowel. The classifier reads the head's whole readout at the peak (heat, segmentation,
type and location probabilities, avidity, size) beside the CT and PET around it, the
peak's place in the volume and how many peaks the volume has, and answers one of
``1 + 2·len(LESION_TYPES)`` classes: background, or a type x avidity. `detect` then
ranks the peaks by ``1 − P(background)`` and names each with its most likely class.

It is fitted after the network is trained (`vipet.inference.rescore`), on the peaks the
trained head gives on the training split, labelled by the lesion masks: a peak within
one head voxel of a lesion of its region is that lesion's class, otherwise background.
An ensemble of a few small MLPs (their probabilities averaged) keeps one unlucky
initialisation from moving the thresholds calibrated after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vipet.model.diag_head import AVIDITY, FINE_NAMES, DenseFindings, label_index
from vipet.model.layers import DictConfig, check_positive
from vipet.reports.schema import LESION_TYPES, REGIONS

FLOOR: float = 0.1
"""Peaks above this heat are candidates (the scorer is fitted on exactly these)."""
MAX_CANDIDATES: int = 64
"""At most this many candidates per volume, the strongest by heat."""
N_CLASSES: int = 1 + len(LESION_TYPES) * len(AVIDITY)
"""Background, then the type x avidity labels in `label_index` order."""
FEATURE_NAMES: tuple[str, ...] = (
    "heat",
    "seg_mean",
    "seg_max",
    "avid",
    "log_size",
    *(f"type:{t}" for t in LESION_TYPES),
    *(f"region:{r}" for r in REGIONS),
    "z",
    "y",
    "x",
    "ct_core_mean",
    "ct_core_max",
    "ct_ring_median",
    "ct_ring_std",
    "pet_core_max",
    "pet_ring_median",
    "peaks_in_volume",
    "rank_in_volume",
    "suvmax",
    "size_mm",
    *(f"fine:{f}" for f in FINE_NAMES),
)
"""What the classifier reads at a peak (`peak_features`); maps are probabilities, the
means over the peak's 3x3x3 neighbourhood on the head's grid; CT and PET in the
model's [0, 1] input scaling, the core the input voxels of the peak's head voxel (one
more each side in-plane), the ring a box of ±2 slices and ±6 pixels around it."""
N_FEATURES: int = len(FEATURE_NAMES)


def class_index(kind: str, fdg_avid: bool) -> int:
    """The scorer's class of a lesion (0 is background)."""
    return 1 + label_index(kind, fdg_avid)


def class_name(index: int) -> tuple[str, bool]:
    """``(type, fdg_avid)`` of a non-background class."""
    if not 1 <= index < N_CLASSES:
        raise ValueError(f"class index must be in [1, {N_CLASSES}), got {index}")
    t, a = divmod(index - 1, len(AVIDITY))
    return LESION_TYPES[t], a == 0


@torch.no_grad()
def peak_features(
    dense: DenseFindings,
    item: int,
    ct: torch.Tensor,
    pet: torch.Tensor,
    voxels: torch.Tensor,
    region_index: int,
    peaks_in_volume: int,
    suvmax: Sequence[float],
    size_mm: Sequence[float],
) -> torch.Tensor:
    """``(N, N_FEATURES)`` features of the peaks ``voxels`` (N, 3) on the head's grid of
    volume ``item`` of ``dense``; ``ct``, ``pet`` (D, H, W): that volume's input;
    ``region_index``: its region in REGIONS; the peaks in ``voxels`` strongest first
    (their rank is their row)."""
    if not 0 <= region_index < len(REGIONS):
        raise ValueError(f"region_index must be in [0, {len(REGIONS)}), got {region_index}")
    d0, h0, w0 = dense.heat.shape[-3:]
    scale = [ct.shape[0] // d0, ct.shape[1] // h0, ct.shape[2] // w0]
    heat = torch.sigmoid(dense.heat[item].float())
    seg = torch.sigmoid(dense.lesion[item].float())
    avid = torch.sigmoid(dense.avid[item].float())
    ct, pet = ct.float(), pet.float()
    rows = []
    for rank, (z, y, x) in enumerate(voxels.tolist()):
        near = tuple(slice(max(0, v - 1), v + 2) for v in (z, y, x))
        every = (slice(None), *near)
        types = torch.softmax(dense.types[item][every].float().flatten(1), dim=0).mean(dim=1)
        fine = torch.softmax(dense.fine[item][every].float().flatten(1), dim=0).mean(dim=1)
        c = [v * s for v, s in zip((z, y, x), scale, strict=True)]
        core = (
            slice(c[0], c[0] + scale[0]),
            slice(max(0, c[1] - 1), c[1] + scale[1] + 1),
            slice(max(0, c[2] - 1), c[2] + scale[2] + 1),
        )
        ring = (
            slice(max(0, c[0] - 2), c[0] + scale[0] + 2),
            slice(max(0, c[1] - 6), c[1] + scale[1] + 6),
            slice(max(0, c[2] - 6), c[2] + scale[2] + 6),
        )
        rows.append(
            torch.cat(
                [
                    torch.tensor(
                        [
                            float(heat[z, y, x]),
                            float(seg[near].mean()),
                            float(seg[near].max()),
                            float(avid[near].mean()),
                            float(dense.log_size[item][near].float().mean()),
                        ]
                    ),
                    types.cpu(),
                    F.one_hot(torch.tensor(region_index), len(REGIONS)).float(),
                    torch.tensor(
                        [
                            z / d0,
                            y / h0,
                            x / w0,
                            float(ct[core].mean()),
                            float(ct[core].max()),
                            float(ct[ring].median()),
                            float(ct[ring].std()),
                            float(pet[core].max()),
                            float(pet[ring].median()),
                            float(peaks_in_volume),
                            float(rank),
                            float(suvmax[rank]),
                            float(size_mm[rank]),
                        ]
                    ),
                    fine.cpu(),
                ]
            )
        )
    if not rows:
        return torch.zeros(0, N_FEATURES)
    return torch.stack(rows)


@dataclass(frozen=True)
class ScorerConfig(DictConfig):
    members: int = 5
    """MLPs in the ensemble (their class probabilities are averaged)."""
    hidden: int = 64
    """Width of each MLP's two hidden layers."""

    def __post_init__(self) -> None:
        check_positive(members=self.members, hidden=self.hidden)


class CandidateScorer(nn.Module):
    """``(N, N_FEATURES)`` peak features → ``(N, N_CLASSES)`` class probabilities. The
    features are standardised with the training set's mean and spread (buffers, saved
    with the weights)."""

    def __init__(self, config: ScorerConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.zeros(N_FEATURES))
        self.register_buffer("std", torch.ones(N_FEATURES))
        self.members = nn.ModuleList(
            nn.Sequential(
                nn.Linear(N_FEATURES, config.hidden),
                nn.GELU(),
                nn.Linear(config.hidden, config.hidden),
                nn.GELU(),
                nn.Linear(config.hidden, N_CLASSES),
            )
            for _ in range(config.members)
        )

    def logits(self, features: torch.Tensor, member: int) -> torch.Tensor:
        x = (features.float() - self.mean) / self.std
        return self.members[member](x)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        probs = [torch.softmax(self.logits(features, m), dim=-1) for m in range(len(self.members))]
        return torch.stack(probs).mean(dim=0)


def fit_scorer(
    scorer: CandidateScorer,
    features: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 20,
    batch_size: int = 256,
    lr: float = 2e-3,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> dict[str, float]:
    """Fit ``scorer`` in place on ``features`` (N, N_FEATURES) and class ``labels`` (N,):
    each member with its own seed (initialisation and batch order), AdamW on the
    cross-entropy. Returns the members' mean final training loss and accuracy."""
    if features.dim() != 2 or features.shape[1] != N_FEATURES:
        raise ValueError(f"features must be (N, {N_FEATURES}), got {tuple(features.shape)}")
    if len(labels) != len(features) or not len(labels):
        raise ValueError(f"need one label per feature row, got {len(labels)} for {len(features)}")
    x = features.float()
    y = labels.long()
    scorer.mean.copy_(x.mean(dim=0))
    scorer.std.copy_(x.std(dim=0).clamp_min(1e-6) if len(x) > 1 else torch.ones(N_FEATURES))
    losses, accs = [], []
    for m, member in enumerate(scorer.members):
        gen = torch.Generator().manual_seed(seed + m)
        for layer in member:
            if isinstance(layer, nn.Linear):
                bound = 1 / layer.in_features**0.5
                with torch.no_grad():
                    layer.weight.uniform_(-bound, bound, generator=gen)
                    layer.bias.uniform_(-bound, bound, generator=gen)
        opt = torch.optim.AdamW(member.parameters(), lr, weight_decay=weight_decay)
        member.train()
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), batch_size):
                b = order[i : i + batch_size]
                loss = F.cross_entropy(scorer.logits(x[b], m), y[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
        member.eval()
        with torch.no_grad():
            out = scorer.logits(x, m)
            losses.append(float(F.cross_entropy(out, y)))
            accs.append(float((out.argmax(dim=1) == y).float().mean()))
    return {"loss": sum(losses) / len(losses), "accuracy": sum(accs) / len(accs)}
