"""Where the language model looked: attention from text tokens back onto the voxels.

Method (DOMAIN.md §1), all in differentiable torch so the alignment loss can use it:

1. **Text → visual tokens.** From every layer's attention ``(B, heads, T, T)`` take the
   rows of the query tokens (the answer or generated tokens) and the columns of the
   visual tokens (the ``<image>`` positions). Not every head looks at the image: heads
   are ranked by the attention mass they send to visual tokens, and only the top share
   (``top_heads``, e.g. 25 % of all layer×head pairs) is kept and averaged, over heads
   and query tokens. Result: one weight per visual token, ``(B, R·L)``.
2. **Visual tokens → encoder tokens.** Each visual token is a resampler latent, which is
   itself an attention-weighted mix of the fused encoder tokens. Multiplying the latent
   weights by the resampler's (head- and layer-averaged) cross-attention ``(R, L, N)``
   carries the weight onto the encoder's token grid ``(R, N)``. (For spatial pooling the
   "attention" is the fixed pooling matrix, so the same algebra applies.)
3. **Encoder tokens → voxels.** Token ``n`` is one Conv3d patch of the region's grid; its
   weight is spread over exactly that patch (nearest-neighbour upsampling of the token
   grid ``(d, h, w)`` to the image ``(D, H, W)``).
4. **Min–max normalisation** per region, so maps compare across studies and the Focal
   Tversky loss sees values in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def visual_token_weights(
    attentions: Sequence[torch.Tensor],
    query_mask: torch.Tensor,
    visual_mask: torch.Tensor,
    top_heads: float = 0.25,
) -> torch.Tensor:
    """Step 1: ``(B, V)`` weights over each sample's V visual tokens.

    ``attentions``: per layer ``(B, heads, T, T)``; ``query_mask``, ``visual_mask``:
    ``(B, T)`` bool. Every sample must hold the same number V of visual tokens.
    """
    att = torch.stack(tuple(attentions), dim=1)  # (B, layers, heads, T, T)
    b, n_layers, n_heads, _, _ = att.shape
    q = query_mask.to(att.dtype)[:, None, None, :, None]  # which rows
    rows = (att * q).sum(dim=3) / q.sum(dim=3).clamp_min(1.0)  # (B, layers, heads, T)
    counts = visual_mask.sum(dim=1)
    if not torch.all(counts == counts[0]):
        raise ValueError(f"samples hold different numbers of visual tokens: {counts.tolist()}")
    v = int(counts[0])
    cols = rows[visual_mask[:, None, None, :].expand_as(rows)].view(b, n_layers, n_heads, v)
    # Rank layer×head pairs by how much they attend to the image; keep the top share.
    mass = cols.sum(dim=-1).reshape(b, n_layers * n_heads)
    k = max(1, round(top_heads * n_layers * n_heads))
    keep = mass.topk(k, dim=1).indices  # (B, k)
    flat = cols.reshape(b, n_layers * n_heads, v)
    chosen = flat.gather(1, keep[:, :, None].expand(b, k, v))
    return chosen.mean(dim=1)  # (B, V)


def latent_to_token_weights(
    latent_weights: torch.Tensor, resampler_attention: torch.Tensor
) -> torch.Tensor:
    """Step 2: ``(B, R, L)`` latent weights × ``(B, R, L, N)`` resampler attention →
    ``(B, R, N)`` weights on the encoder tokens."""
    return torch.einsum("brl,brln->brn", latent_weights, resampler_attention)


def tokens_to_voxels(
    token_weights: torch.Tensor, grid: tuple[int, int, int], image_shape: Sequence[int]
) -> torch.Tensor:
    """Step 3: ``(B, R, N)`` token weights → ``(B, R, D, H, W)``; each token's weight
    covers exactly its patch of voxels."""
    b, r, n = token_weights.shape
    if n != grid[0] * grid[1] * grid[2]:
        raise ValueError(f"{n} tokens do not fill a token grid of {tuple(grid)}")
    vol = token_weights.reshape(b * r, 1, *grid)
    up = F.interpolate(vol, size=tuple(int(s) for s in image_shape), mode="nearest")
    return up.reshape(b, r, *up.shape[2:])


def minmax_normalise(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Step 4: each ``(D, H, W)`` map of ``(..., D, H, W)`` scaled to [0, 1]."""
    return _minmax_last(maps.flatten(start_dim=-3), eps).view_as(maps)


def _minmax_last(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each row of the last dim scaled to [0, 1]."""
    lo = x.min(dim=-1, keepdim=True).values
    hi = x.max(dim=-1, keepdim=True).values
    return (x - lo) / (hi - lo).clamp_min(eps)


def attention_maps(
    attentions: Sequence[torch.Tensor],
    query_mask: torch.Tensor,
    visual_mask: torch.Tensor,
    resampler_attention: torch.Tensor,
    grid: tuple[int, int, int],
    image_shape: Sequence[int],
    top_heads: float = 0.25,
) -> torch.Tensor:
    """Steps 1–4: ``(B, R, D, H, W)`` maps in [0, 1], one per region.

    ``resampler_attention`` is ``(B, R, L, N)``; the visual tokens of a sample are its R
    regions' L latents in order (region-major), as `ViPetModel` lays them out.
    """
    tokens = attention_token_maps(
        attentions, query_mask, visual_mask, resampler_attention, top_heads
    )
    # Each token's value covers its patch, so normalising before or after step 3 is the same.
    return tokens_to_voxels(tokens, grid, image_shape)


def attention_token_maps(
    attentions: Sequence[torch.Tensor],
    query_mask: torch.Tensor,
    visual_mask: torch.Tensor,
    resampler_attention: torch.Tensor,
    top_heads: float = 0.25,
) -> torch.Tensor:
    """Steps 1, 2 and 4 on the token grid: ``(B, R, N)`` in [0, 1], each region's map
    before it is spread over the voxels — all a loss against a mask needs, given the
    mask's voxel count per token (`vipet.train.losses.focal_tversky_from_counts`)."""
    b, r, n_latents, _ = resampler_attention.shape
    weights = visual_token_weights(attentions, query_mask, visual_mask, top_heads)
    if weights.shape[1] != r * n_latents:
        raise ValueError(
            f"{weights.shape[1]} visual tokens in the sequence, but {r} regions x {n_latents} latents"
        )
    return _minmax_last(latent_to_token_weights(weights.view(b, r, n_latents), resampler_attention))
