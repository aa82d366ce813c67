"""A 3D Vision Transformer for one PET or CT region volume.

```
x (B, 1, D, H, W) ─ Conv3d patch embed (kernel = stride = patch) ─ (B, N, C)
  ─ + 3D position embedding ─ depth × pre-norm block ─ LayerNorm ─ (B, N, C)
```

``N = d·h·w`` with ``(d, h, w) = image_size / patch_size`` (the token ``grid``); tokens
are in C order over the grid (d slowest, w fastest), so token ``n`` is one patch and
``tokens.view(B, d, h, w, C)`` puts it back in place (attention maps rely on this).
ViPET uses two of these, one for CT and one for PET.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vipet.errors import InputError
from vipet.model.layers import (
    Block,
    DictConfig,
    check_dropout,
    check_heads,
    check_positive,
    init_weights,
)

log = logging.getLogger(__name__)

POS_EMBEDS: tuple[str, ...] = ("learned", "sincos")
STEMS: tuple[str, ...] = ("linear", "peak", "conv")


@dataclass(frozen=True)
class EncoderConfig(DictConfig):
    in_channels: int = 1
    """Channels of the input volume (1: one modality per encoder)."""
    image_size: tuple[int, int, int] = (32, 128, 128)
    """Input volume (D, H, W) in voxels; the preprocessing grid."""
    patch_size: tuple[int, int, int] = (4, 16, 16)
    """Patch (d, h, w) in voxels; must divide ``image_size`` on every axis."""
    width: int = 192
    """Token width C."""
    depth: int = 4
    """Number of transformer blocks."""
    heads: int = 4
    """Attention heads; must divide ``width``."""
    mlp_ratio: float = 4.0
    """Feed-forward hidden width as a multiple of ``width``."""
    dropout: float = 0.0
    """Dropout on attention weights, residual branches and the embedded tokens."""
    pos_embed: str = "learned"
    """Position embedding: "learned" (one vector per token) or "sincos" (fixed 3D
    sine–cosine, no parameters; a third of the channels per axis)."""
    stem: str = "linear"
    """Patch embedding: "linear" (one Conv3d, kernel = stride = patch), "peak" (the same
    plus a Conv3d over the patch's sub-block maxima) or "conv" (a small strided 3D CNN
    down to the token grid, see `conv_stem`)."""
    tophat: tuple[int, int, int] = (0, 0, 0)
    """Structuring box (d, h, w voxels, odd) of a white top-hat added as a second input
    channel (`white_tophat`); (0, 0, 0): none. Why: a lesion is a hot spot *smaller than
    the organs around it*. The top-hat keeps what is smaller than the box and drops
    brain, heart, liver and bladder, the physiological uptake that otherwise outshines
    lesions at the same place in every patient, so the encoder does not have to learn
    that morphology from a few hundred volumes."""
    dense_stage: int = 0
    """With a "conv" stem: hand out the feature map after this many stem stages (1 = the
    first, at half resolution in-plane) as dense features for voxel-level supervision
    (`ViT3D.forward` ``dense=True``); 0: none."""

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size"):
            value = getattr(self, name)
            if len(value) != 3:
                raise ValueError(f"{name} must be three sizes (D, H, W), got {value}")
            check_positive(**{f"{name}[{i}]": v for i, v in enumerate(value)})
        if any(i % p for i, p in zip(self.image_size, self.patch_size, strict=True)):
            raise ValueError(
                f"image_size {tuple(self.image_size)} is not divisible by patch_size "
                f"{tuple(self.patch_size)} on every axis"
            )
        check_positive(in_channels=self.in_channels, depth=self.depth, mlp_ratio=self.mlp_ratio)
        check_heads(self.width, self.heads)
        check_dropout(self.dropout)
        if self.pos_embed not in POS_EMBEDS:
            raise ValueError(
                f"unknown pos_embed {self.pos_embed!r}; choose from {list(POS_EMBEDS)}"
            )
        if self.stem not in STEMS:
            raise ValueError(f"unknown stem {self.stem!r}; choose from {list(STEMS)}")
        if len(self.tophat) != 3 or any(k < 0 or (k and k % 2 == 0) for k in self.tophat):
            raise ValueError(f"tophat must be three odd sizes (or zeros), got {self.tophat}")
        if any(self.tophat) and not all(self.tophat):
            raise ValueError(f"tophat must be all zero or all odd, got {self.tophat}")
        if self.dense_stage and (
            self.stem != "conv" or self.dense_stage >= len(stem_strides(tuple(self.patch_size)))
        ):
            raise ValueError(
                f"dense_stage {self.dense_stage} needs a conv stem with more stages than that"
            )
        if self.pos_embed == "sincos" and self.width < 6:
            raise ValueError(f"sincos position embedding needs width >= 6, got {self.width}")

    @property
    def stem_channels(self) -> int:
        """Input channels of the patch embedding (the top-hat adds one per channel)."""
        return self.in_channels * (2 if any(self.tophat) else 1)

    @property
    def dense_channels(self) -> int:
        """Channels of the dense features (`dense_stage`)."""
        return min(16 * 2 ** (self.dense_stage - 1), self.width) if self.dense_stage else 0

    @property
    def grid(self) -> tuple[int, int, int]:
        """Tokens per axis (d, h, w)."""
        d, h, w = (i // p for i, p in zip(self.image_size, self.patch_size, strict=True))
        return (d, h, w)

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid)

    @property
    def peak_block(self) -> tuple[int, int, int]:
        """Sub-block of the "peak" stem: a quarter of the patch in-plane, half in depth
        (1 where the patch is too small to split)."""
        d, h, w = self.patch_size
        return (max(1, d // 2), max(1, h // 4), max(1, w // 4))


def sincos_embedding_3d(grid: tuple[int, int, int], width: int) -> torch.Tensor:
    """Fixed position embedding ``(N, width)``: each axis gets ``2·(width // 6)``
    channels of sin/cos of its index at geometric frequencies; leftover channels are 0."""
    half = width // 6
    freqs = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float32) / half)
    coords = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in grid), indexing="ij")
    parts = []
    for c in coords:
        angles = c.reshape(-1, 1) * freqs  # (N, half)
        parts += [angles.sin(), angles.cos()]
    emb = torch.cat(parts, dim=1)
    return nn.functional.pad(emb, (0, width - emb.shape[1]))


def white_tophat(x: torch.Tensor, box: tuple[int, int, int]) -> torch.Tensor:
    """``x − opening(x)`` over a ``box`` (odd sizes): what of ``x`` is brighter than its
    surroundings and smaller than the box. Grey-scale opening = erosion (a min filter)
    then dilation (a max filter); a box filter is three 1-D ones in a row, so this is a
    few cheap max-pools and no parameters."""

    def dilate(v: torch.Tensor) -> torch.Tensor:
        for axis, k in enumerate(box):
            size = [1, 1, 1]
            size[axis] = k
            pad = [0, 0, 0]
            pad[axis] = k // 2
            v = nn.functional.max_pool3d(v, tuple(size), stride=1, padding=tuple(pad))
        return v

    return x - dilate(-dilate(-x))


def stem_strides(patch: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """The patch factored into stride-2 steps per axis, longest axes first: (4, 16, 16)
    → (1,2,2), (2,2,2), (2,2,2), (1,2,2)."""
    left = list(patch)
    out = []
    while any(s > 1 for s in left):
        top = max(left)
        step = tuple(2 if s == top or (s > 1 and s * 2 >= top) else 1 for s in left)
        for i, s in enumerate(step):
            if left[i] % s:
                raise ValueError(f"patch {tuple(patch)} is not a power of two on every axis")
            left[i] //= s
        out.append(step)
    return out


def conv_stem(in_channels: int, width: int, patch: tuple[int, int, int]) -> nn.Sequential:
    """A strided 3D CNN from voxels to the token grid: 3x3x3 convolutions, channels
    doubling from 16, each step halving the axes the patch still has to reduce.

    Why: a 10 mm lesion is a few voxels in a 1000-voxel patch. Small convolutions find a
    local hot spot with few weights and few examples (translation equivariance), where a
    ViT's linear patch embedding has to learn the same detector at every position of the
    patch — on a few hundred training volumes it does not get there."""
    layers: list[nn.Module] = []
    strides = stem_strides(patch)
    c_in = in_channels
    for i, stride in enumerate(strides):
        last = i == len(strides) - 1
        c_out = width if last else min(16 * 2**i, width)
        layers.append(nn.Conv3d(c_in, c_out, kernel_size=3, stride=stride, padding=1))
        if not last:
            layers += [nn.GroupNorm(min(8, c_out), c_out), nn.GELU()]
        c_in = c_out
    if not strides:  # patch (1, 1, 1): a pointwise embedding
        layers.append(nn.Conv3d(in_channels, width, kernel_size=1))
    return nn.Sequential(*layers)


def init_conv_stem(stem: nn.Sequential) -> None:
    """He-normal convolutions (zero biases) in a `conv_stem`.

    Why not the ViT init (std 0.02) the rest of the encoder uses: through four 3x3x3
    convolutions it shrinks the image signal ~10⁴-fold, so at the start the tokens are
    their position embeddings alone, the stem's gradients vanish, and the encoder learns
    where lesions usually are instead of what they look like. GroupNorm between the
    convolutions keeps the scale while training."""
    for m in stem.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ViT3D(nn.Module):
    """3D ViT: ``(B, in_channels, D, H, W) → (B, N, width)``."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config.width
        c_in = config.stem_channels
        if config.stem == "conv":
            self.patch_embed = conv_stem(c_in, c, tuple(config.patch_size))
        else:
            self.patch_embed = nn.Conv3d(
                c_in, c, kernel_size=config.patch_size, stride=config.patch_size
            )
        # "peak" stem: a linear patch embedding averages a 10 mm lesion away among the
        # ~1000 voxels of a patch, and a linear map cannot say "there is a hot spot
        # somewhere in here". Max-pooling sub-blocks first keeps the hot spot's value,
        # at a cost of ~3 % of the patch embedding's multiply-adds.
        self.peak_embed = None
        if config.stem == "peak":
            k = tuple(p // b for p, b in zip(config.patch_size, config.peak_block, strict=True))
            self.peak_embed = nn.Conv3d(c_in, c, kernel_size=k, stride=k)
        if config.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens, c))
        else:  # fixed: not a parameter, and not saved (recomputed from the config)
            emb = sincos_embedding_3d(config.grid, c).unsqueeze(0)
            self.register_buffer("pos_embed", emb, persistent=False)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(c, config.heads, config.mlp_ratio, config.dropout) for _ in range(config.depth)
        )
        self.ln_f = nn.LayerNorm(c)
        self.apply(init_weights)
        if config.stem == "conv":
            init_conv_stem(self.patch_embed)
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    @property
    def grid(self) -> tuple[int, int, int]:
        """Tokens per axis (d, h, w)."""
        return self.config.grid

    @property
    def num_tokens(self) -> int:
        return self.config.num_tokens

    def forward(
        self, x: torch.Tensor, dense: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B, in_channels, D, H, W) → tokens (B, N, width); with ``dense`` also
        the stem's feature map after ``dense_stage`` stages (B, dense_channels, d, h, w)."""
        want = (self.config.in_channels, *self.config.image_size)
        if x.dim() != 5 or tuple(x.shape[1:]) != want:
            raise ValueError(
                f"ViT3D expects (B, {', '.join(map(str, want))}), got {tuple(x.shape)}"
            )
        if dense and not self.config.dense_stage:
            raise ValueError("dense features need dense_stage > 0 in the encoder config")
        if any(self.config.tophat):
            x = torch.cat([x, white_tophat(x, tuple(self.config.tophat))], dim=1)
        features = None
        if dense:
            # each stage but the last is Conv3d, GroupNorm, GELU
            cut = 3 * self.config.dense_stage
            features = self.patch_embed[:cut](x)
            t = self.patch_embed[cut:](features)
        else:
            t = self.patch_embed(x)
        if self.peak_embed is not None:
            block = self.config.peak_block
            t = t + self.peak_embed(nn.functional.max_pool3d(x, block, block))
        t = t.flatten(2).transpose(1, 2)  # (B, N, C), C order over the grid
        t = self.dropout(t + self.pos_embed)
        for block in self.blocks:
            t, _ = block(t)
        t = self.ln_f(t)
        return (t, features) if dense else t


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients to every parameter of ``module`` (returned for chaining).

    Train/eval mode is left alone: the owner's ``.train()`` would undo ``.eval()``.
    """
    module.requires_grad_(False)
    return module


@dataclass(frozen=True)
class LoadReport:
    """What `load_encoder_weights` did, by state-dict key."""

    missing: tuple[str, ...]  # in the module, not in the file: left as initialised
    unexpected: tuple[str, ...]  # in the file, not in the module: ignored
    loaded: tuple[str, ...]  # copied into the module


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local ``.safetensors`` or ``.pt``/``.pth``/``.bin`` file
    (a checkpoint dict holding a ``state_dict`` or ``model`` entry is unwrapped)."""
    p = Path(path)
    if not p.is_file():
        raise InputError("encoder weights file not found", p)
    suffix = p.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p), device="cpu")
        elif suffix in (".pt", ".pth", ".bin"):
            # weights_only: a weights file must never run code when it is read.
            state = torch.load(p, map_location="cpu", weights_only=True)
        else:
            raise InputError(f"unknown weights format {suffix!r}; use .safetensors, .pt or .pth", p)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read encoder weights: {exc}".splitlines()[0], p) from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError("not a state dict of tensors", p)
    return state


def load_encoder_weights(
    module: nn.Module, path: str | Path, prefix: str | None = None
) -> LoadReport:
    """Load a local state dict into ``module`` (non-strict) and report the keys.

    ``prefix`` (e.g. ``"encoder."``, ``"module."``): only keys starting with it are
    used, with the prefix stripped — for a whole-model or DataParallel checkpoint.
    A tensor whose shape differs from the module's (another image or patch size) is an
    `InputError`, not a silent skip.
    """
    state = read_state_dict(path)
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    own = module.state_dict()
    bad = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if bad:
        raise InputError(f"encoder weights do not fit the model (file vs model): {bad}", path)
    result = module.load_state_dict(state, strict=False)
    report = LoadReport(
        missing=tuple(result.missing_keys),
        unexpected=tuple(result.unexpected_keys),
        loaded=tuple(k for k in state if k in own),
    )
    log.info("loaded %d tensors from %s", len(report.loaded), path)
    if report.missing:
        log.warning("%d keys missing from %s: %s", len(report.missing), path, list(report.missing))
    if report.unexpected:
        log.warning(
            "%d unexpected keys in %s: %s", len(report.unexpected), path, list(report.unexpected)
        )
    return report
