"""Building blocks shared by the vision side: multi-head attention, the feed-forward
net, one pre-norm transformer block (self- or cross-attention), and the plain-dict
round trip of the component configs.

Shapes: ``B`` batch, ``N`` query tokens, ``M`` key/value tokens, ``C`` width.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import nn


class DictConfig:
    """``to_dict`` / ``from_dict`` for a frozen dataclass config of plain values.

    ViPetConfig (a transformers config) stores each component config as a JSON dict, so
    tuples go out as lists and come back as tuples; an unknown key is an error listing
    the valid ones (a typo in a saved config must never fall back to a default).
    """

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        valid = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid keys: {valid}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def check_positive(**values: float) -> None:
    """Raise ``ValueError`` naming the first value that is not > 0."""
    for name, value in values.items():
        if isinstance(value, bool) or not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")


def check_heads(width: int, heads: int) -> None:
    check_positive(width=width, heads=heads)
    if width % heads:
        raise ValueError(f"width {width} must be divisible by heads {heads}")


def check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


class Attention(nn.Module):
    """Multi-head attention: queries from ``x`` (B, N, C), keys/values from ``context``
    (B, M, C). Self-attention is ``context = x``."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        check_heads(width, heads)
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, N, C)`` output and, if asked, the weights ``(B, heads, N, M)``."""
        b, n, c = x.shape
        m = context.shape[1]
        hd = c // self.heads
        q = self.q(x).view(b, n, self.heads, hd).transpose(1, 2)  # (B, h, N, hd)
        k, v = self.kv(context).view(b, m, 2, self.heads, hd).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        if need_weights:
            # The explicit path: SDPA's fused kernels never materialise the weights.
            weights = torch.softmax((q @ k.transpose(-2, -1)) * hd**-0.5, dim=-1)
            y = F.dropout(weights, p, self.training) @ v
        else:
            weights = None
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        y = y.transpose(1, 2).reshape(b, n, c)
        return self.resid_dropout(self.proj(y)), weights


class FeedForward(nn.Module):
    """Position-wise MLP ``C → hidden → C`` with GELU."""

    def __init__(self, width: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.proj = nn.Linear(hidden, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block:
    ``x = x + Attn(LN(x), LN(context))``, then ``x = x + FFN(LN(x))``.

    With ``cross=False`` it is a self-attention block (the context is ``x`` itself);
    with ``cross=True`` the context has its own LayerNorm, since queries and keys come
    from different streams with different statistics (PET vs CT, latents vs tokens).
    """

    def __init__(
        self,
        width: int,
        heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        cross: bool = False,
    ) -> None:
        super().__init__()
        self.ln_q = nn.LayerNorm(width)
        self.ln_kv = nn.LayerNorm(width) if cross else None
        self.attn = Attention(width, heads, dropout)
        self.ln_mlp = nn.LayerNorm(width)
        self.mlp = FeedForward(width, round(width * mlp_ratio), dropout)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` (B, N, C), ``context`` (B, M, C) for a cross block → ``(B, N, C)`` and
        the attention weights ``(B, heads, N, M)`` when ``need_weights``."""
        h = self.ln_q(x)
        if self.ln_kv is None:
            kv = h
        elif context is None:
            raise ValueError("a cross-attention block needs a context")
        else:
            kv = self.ln_kv(context)
        a, weights = self.attn(h, kv, need_weights)
        x = x + a
        x = x + self.mlp(self.ln_mlp(x))
        return x, weights


def init_weights(module: nn.Module) -> None:
    """ViT-style init (``module.apply(init_weights)``): small truncated-normal weights,
    zero biases, unit LayerNorms — keeps the residual stream near identity at start."""
    if isinstance(module, nn.Linear | nn.Conv3d):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
