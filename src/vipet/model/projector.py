"""Fused tokens → the language model's visual tokens.

```
tokens (B, N, C) ─ reduce to L tokens ─ LayerNorm ─ MLP (C → hidden → out_width, GELU) ─ (B, L, out_width)
```

The reduction keeps a region's hundreds of tokens from flooding the LM's context:

- ``perceiver`` (Perceiver/Flamingo-style resampler): L learned latents cross-attend to
  the tokens, ``layers`` pre-norm blocks (``x = x + Attn(LN(x), LN(tokens))``,
  ``x = x + FFN(LN(x))``). What each latent looks at is learned.
- ``pool``: adaptive average pooling of the token grid ``(d, h, w)`` to ``pool_grid``;
  latent ``l`` is the mean of one fixed box of tokens.

Either way each latent is a convex mix of the tokens, and ``return_attention=True``
gives that mix as ``(B, L, N)`` (rows sum to 1): head- and layer-averaged attention for
``perceiver``, the pooling matrix for ``pool``. Attention maps carry the LM's attention
on the latents back to the token grid with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from vipet.model.layers import Block, DictConfig, check_dropout, check_heads, check_positive
from vipet.model.layers import init_weights as _init_weights

PROJECTOR_KINDS: tuple[str, ...] = ("perceiver", "pool")


@dataclass(frozen=True)
class ProjectorConfig(DictConfig):
    kind: str = "perceiver"
    """Token reduction: "perceiver" (learned latents) or "pool" (grid average pooling)."""
    width: int = 192
    """Width C of the fused vision tokens."""
    out_width: int = 256
    """Output width: the language model's hidden size (ViPetConfig sets it)."""
    num_latents: int = 32
    """Learned latents L ("perceiver")."""
    layers: int = 2
    """Resampler blocks ("perceiver")."""
    heads: int = 4
    """Resampler attention heads ("perceiver"); must divide ``width``."""
    mlp_ratio: float = 4.0
    """Resampler feed-forward width as a multiple of ``width``."""
    dropout: float = 0.0
    """Dropout in the resampler."""
    pool_grid: tuple[int, int, int] = (2, 4, 4)
    """Output grid (d, h, w) of "pool"; L = d·h·w."""
    mlp_hidden: int | None = None
    """Hidden width of the output MLP; None: ``out_width`` (LLaVA's 2-layer GELU MLP)."""

    def __post_init__(self) -> None:
        if self.kind not in PROJECTOR_KINDS:
            raise ValueError(
                f"unknown projector kind {self.kind!r}; choose from {list(PROJECTOR_KINDS)}"
            )
        check_heads(self.width, self.heads)
        check_positive(
            out_width=self.out_width,
            num_latents=self.num_latents,
            layers=self.layers,
            mlp_ratio=self.mlp_ratio,
        )
        check_dropout(self.dropout)
        if len(self.pool_grid) != 3:
            raise ValueError(f"pool_grid must be three sizes (d, h, w), got {self.pool_grid}")
        check_positive(**{f"pool_grid[{i}]": v for i, v in enumerate(self.pool_grid)})
        if self.mlp_hidden is not None:
            check_positive(mlp_hidden=self.mlp_hidden)


def _pool_axis(n: int, out: int) -> torch.Tensor:
    """``(out, n)`` weights of 1-D adaptive average pooling (same boxes as torch's
    ``adaptive_avg_pool``: ``[floor(i·n/out), ceil((i+1)·n/out))``)."""
    w = torch.zeros(out, n)
    for i in range(out):
        start, end = (i * n) // out, -((-(i + 1) * n) // out)
        w[i, start:end] = 1.0 / (end - start)
    return w


def pooling_matrix(grid: tuple[int, int, int], pool_grid: tuple[int, int, int]) -> torch.Tensor:
    """``(L, N)`` matrix of 3D adaptive average pooling from ``grid`` to ``pool_grid``
    (tokens in C order); each row sums to 1. Built per axis (3D pooling is separable),
    so it never needs an N × N identity."""
    dz, dy, dx = (_pool_axis(n, o) for n, o in zip(grid, pool_grid, strict=True))
    return torch.kron(torch.kron(dz, dy), dx)


class VisualProjector(nn.Module):
    """``tokens (B, N, C), grid (d, h, w) → (B, L, out_width)``."""

    def __init__(self, config: ProjectorConfig) -> None:
        super().__init__()
        self.config = config
        c = config.width
        if config.kind == "perceiver":
            self.latents = nn.Parameter(torch.zeros(config.num_latents, c))
            self.blocks = nn.ModuleList(
                Block(c, config.heads, config.mlp_ratio, config.dropout, cross=True)
                for _ in range(config.layers)
            )
        self.ln = nn.LayerNorm(c)
        hidden = config.mlp_hidden or config.out_width
        self.mlp = nn.Sequential(
            nn.Linear(c, hidden), nn.GELU(), nn.Linear(hidden, config.out_width)
        )
        self.apply(_init_weights)
        if config.kind == "perceiver":
            nn.init.trunc_normal_(self.latents, std=0.02)

    def num_tokens(self, grid: tuple[int, int, int] | None = None) -> int:
        """L, the visual tokens per region (``grid`` is not needed by either kind:
        the perceiver has ``num_latents``, pooling ``prod(pool_grid)``)."""
        if self.config.kind == "pool":
            return math.prod(self.config.pool_grid)
        return self.config.num_latents

    def forward(
        self, tokens: torch.Tensor, grid: tuple[int, int, int], return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``tokens`` (B, N, C) on the token ``grid`` (N = d·h·w) → ``(B, L, out_width)``,
        and with ``return_attention`` the latents' weights over the tokens ``(B, L, N)``."""
        b, n, c = tokens.shape
        if c != self.config.width or n != math.prod(grid):
            raise ValueError(
                f"projector expects (B, {math.prod(grid)}, {self.config.width}) tokens for "
                f"grid {tuple(grid)}, got {tuple(tokens.shape)}"
            )
        if self.config.kind == "pool":
            weights = pooling_matrix(tuple(grid), self.config.pool_grid).to(tokens)
            x = torch.einsum("ln,bnc->blc", weights, tokens)
            attn = weights.expand(b, -1, -1) if return_attention else None
        else:
            x, attn = self._resample(tokens, return_attention)
        out = self.mlp(self.ln(x))
        return (out, attn) if return_attention else out

    def _resample(
        self, tokens: torch.Tensor, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latents cross-attend to ``tokens``: ``(B, L, C)`` and, if asked, the
        attention ``(B, L, N)`` averaged over heads and layers."""
        x = self.latents.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        weights = []
        for block in self.blocks:
            x, w = block(x, tokens, need_weights)
            if w is not None:
                weights.append(w.mean(dim=1))
        return x, (torch.stack(weights).mean(dim=0) if need_weights else None)
