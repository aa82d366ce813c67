"""PET/CT token fusion: ``(pet (B, N, C), ct (B, N, C)) → fused (B, N, C)``.

Both encoders see the same region on the same grid, so token ``n`` of PET and token
``n`` of CT cover the same patch of the body. Variants, by registry name (`FUSIONS`):

- ``cross_attention`` (published ViPET-VLM design): PET tokens query CT tokens,
  ``fused = pet + MHA(LN(pet), LN(ct), LN(ct))``, ``fused = fused + FFN(LN(fused))``.
- ``bidirectional``: PET→CT and CT→PET cross-attention streams, then summed or
  concatenated and projected back to C.
- ``concat``: token-wise ``[pet, ct] → Linear(2C, C)``.
- ``sum``: ``pet + ct``.
- ``ct_only`` / ``pet_only``: one modality, the other ignored (ablations).

Every variant's ``forward(pet, ct)`` returns the fused tokens; with
``return_attention=True`` it returns ``(fused, weights)``: the PET→CT attention
``(B, heads, N, N)`` averaged over layers for the attention variants, None otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vipet.model.layers import Block, DictConfig, check_dropout, check_heads, check_positive
from vipet.model.layers import init_weights as _init_weights

COMBINES: tuple[str, ...] = ("sum", "concat")


@dataclass(frozen=True)
class FusionConfig(DictConfig):
    name: str = "cross_attention"
    """Fusion variant, a key of `FUSIONS`."""
    width: int = 192
    """Token width C of both encoders."""
    heads: int = 4
    """Attention heads (attention variants); must divide ``width``."""
    mlp_ratio: float = 4.0
    """Feed-forward hidden width as a multiple of ``width``."""
    layers: int = 1
    """Stacked fusion blocks (attention variants); the published design uses 1."""
    dropout: float = 0.0
    """Dropout on attention weights and residual branches."""
    combine: str = "sum"
    """``bidirectional`` only: merge the two streams by "sum" or "concat" (+ Linear)."""

    def __post_init__(self) -> None:
        # FUSIONS is defined below; it exists by the time a config is made.
        if self.name not in FUSIONS:
            raise ValueError(f"unknown fusion {self.name!r}; choose from {sorted(FUSIONS)}")
        check_heads(self.width, self.heads)
        check_positive(mlp_ratio=self.mlp_ratio, layers=self.layers)
        check_dropout(self.dropout)
        if self.combine not in COMBINES:
            raise ValueError(f"unknown combine {self.combine!r}; choose from {list(COMBINES)}")


class Fusion(nn.Module):
    """Base class: checks the inputs and shapes the return value; subclasses ``fuse``."""

    modalities: tuple[str, ...] = ("pet", "ct")
    """The modalities the variant reads — also whose fine features the findings head's
    decoder may use (`vipet.model.diag_head`), so a single-modality ablation sees that
    modality alone all the way to the voxel maps."""

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        self.config = config

    def fuse(
        self, pet: torch.Tensor, ct: torch.Tensor, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def forward(
        self, pet: torch.Tensor, ct: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """``pet``, ``ct`` (B, N, C) → fused (B, N, C) [, weights (B, heads, N, N) | None]."""
        if pet.shape != ct.shape or pet.dim() != 3 or pet.shape[-1] != self.config.width:
            raise ValueError(
                f"fusion expects pet and ct both (B, N, {self.config.width}), "
                f"got {tuple(pet.shape)} and {tuple(ct.shape)}"
            )
        fused, weights = self.fuse(pet, ct, return_attention)
        return (fused, weights) if return_attention else fused


def _mean_or_none(weights: list[torch.Tensor | None]) -> torch.Tensor | None:
    kept = [w for w in weights if w is not None]
    return torch.stack(kept).mean(dim=0) if kept else None


def _blocks(cfg: FusionConfig) -> nn.ModuleList:
    return nn.ModuleList(
        Block(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout, cross=True)
        for _ in range(cfg.layers)
    )


class CrossAttentionFusion(Fusion):
    """PET queries CT. Uptake decides *where* to look (a hot spot is what a reader
    checks first), CT says *what is there* (node, nodule, bone): the output stays on
    the PET residual stream and gathers the anatomy each PET token attends to."""

    def __init__(self, config: FusionConfig) -> None:
        super().__init__(config)
        self.blocks = _blocks(config)
        self.apply(_init_weights)

    def fuse(self, pet: Tensor, ct: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        x, weights = pet, []
        for block in self.blocks:
            x, w = block(x, ct, need_weights)
            weights.append(w)
        return x, _mean_or_none(weights)


class BidirectionalFusion(Fusion):
    """PET→CT and CT→PET cross-attention, layer by layer from the previous streams;
    the streams are then summed or concatenated and projected back to C. The returned
    weights are the PET→CT ones, so they read the same as ``cross_attention``'s."""

    def __init__(self, config: FusionConfig) -> None:
        super().__init__(config)
        self.pet_blocks = _blocks(config)
        self.ct_blocks = _blocks(config)
        c = config.width
        self.merge = nn.Linear(2 * c, c) if config.combine == "concat" else None
        self.apply(_init_weights)

    def fuse(self, pet: Tensor, ct: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        weights = []
        for pet_block, ct_block in zip(self.pet_blocks, self.ct_blocks, strict=True):
            new_pet, w = pet_block(pet, ct, need_weights)
            ct, _ = ct_block(ct, pet, False)
            pet = new_pet
            weights.append(w)
        fused = pet + ct if self.merge is None else self.merge(torch.cat([pet, ct], dim=-1))
        return fused, _mean_or_none(weights)


class ConcatFusion(Fusion):
    """Token-wise ``[pet, ct] (B, N, 2C) → Linear → (B, N, C)``: no attention, each
    token mixes only its own patch's PET and CT."""

    def __init__(self, config: FusionConfig) -> None:
        super().__init__(config)
        self.proj = nn.Linear(2 * config.width, config.width)
        self.apply(_init_weights)

    def fuse(self, pet: Tensor, ct: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        return self.proj(torch.cat([pet, ct], dim=-1)), None


class SumFusion(Fusion):
    """``pet + ct``: the parameter-free baseline."""

    def fuse(self, pet: Tensor, ct: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        return pet + ct, None


class CtOnlyFusion(Fusion):
    """CT tokens only (PET ignored): what anatomy alone can tell."""

    modalities = ("ct",)

    def fuse(self, pet: Tensor, ct: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        return ct, None


class PetOnlyFusion(Fusion):
    """PET tokens only (CT ignored): what uptake alone can tell."""

    modalities = ("pet",)

    def fuse(self, pet: Tensor, ct: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        return pet, None


FUSIONS: dict[str, type[Fusion]] = {
    "cross_attention": CrossAttentionFusion,
    "bidirectional": BidirectionalFusion,
    "concat": ConcatFusion,
    "sum": SumFusion,
    "ct_only": CtOnlyFusion,
    "pet_only": PetOnlyFusion,
}


def build_fusion(config: FusionConfig) -> Fusion:
    """The fusion module named by ``config.name``."""
    if config.name not in FUSIONS:
        raise ValueError(f"unknown fusion {config.name!r}; choose from {sorted(FUSIONS)}")
    return FUSIONS[config.name](config)
