"""A 3D Vision Transformer for one PET or CT region volume.

```
x (B, 1, D, H, W) ─ input channels (the volume, re-windowed copies, a white top-hat)
  ─ stem ─ (B, C, d, h, w) ─ + 3D position embedding ─ depth × pre-norm block ─ LayerNorm ─ (B, N, C)
```

``N = d·h·w`` with ``(d, h, w) = image_size / patch_size`` (the token ``grid``); tokens
are in C order over the grid (d slowest, w fastest), so token ``n`` is one patch and
``tokens.view(B, d, h, w, C)`` puts it back in place (attention maps rely on this).
ViPET uses two of these, one for CT and one for PET.

Two stems:

- ``linear``: one Conv3d with kernel = stride = patch (the plain ViT patch embedding).
- ``pyramid``: a small 3D CNN, two 3x3x3 convolutions (GroupNorm, GELU) per stage, each
  stage striding down (`EncoderConfig.pyramid_strides`), then a strided Conv3d to the
  token grid. Its stage outputs are the encoder's *pyramid*: feature maps at 1/2, 1/4,
  1/8 … of the input, which the findings head's decoder reads next to the fused tokens
  to say, voxel by voxel, where a lesion is (`vipet.model.diag_head`). Why: a 10 mm node
  is a few voxels of a patch of thousands; small convolutions find a local hot spot or
  a soft-tissue blob with few weights and few examples (translation equivariance),
  where a linear patch embedding has to learn the same detector at every position.

**Crops.** The encoder also takes a crop of its region — any whole number of patches
per axis — with the crop's offset in tokens: the position embedding of those tokens is
taken, so a crop's tokens carry the positions they have in the whole volume. Training
the vision side on crops centred on lesions shows the detector several times more
lesions per second of CPU than whole regions would.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
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
STEMS: tuple[str, ...] = ("linear", "pyramid")


def _as_tuple(value: object) -> object:
    """Nested lists (from JSON) as nested tuples, so configs compare and hash."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


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
    """Patch embedding: "linear" (one Conv3d, kernel = stride = patch) or "pyramid" (a
    strided 3D CNN whose stage outputs the findings head reads; see the module doc)."""
    pyramid_channels: tuple[int, ...] = (16, 32, 64)
    """"pyramid": channels of each stage, finest first."""
    pyramid_strides: tuple[tuple[int, int, int], ...] = ((1, 2, 2), (2, 2, 2), (2, 2, 2))
    """"pyramid": stride (d, h, w) of each stage; what is left of ``patch_size`` is the
    stride of the final token embedding."""
    windows: tuple[tuple[float, float], ...] = ()
    """Extra input channels: the input re-windowed, each ``(lo, hi)`` (in the input's own
    [0, 1] units) mapped to [0, 1] and clipped. For CT preprocessed with the HU window
    [−1000, 1000], ``(0.425, 0.65)`` is the soft-tissue window [−150, 300] HU, where a
    node (≈ 40 HU) stands 30 % of the range above fat (≈ −100 HU) instead of 7 %."""
    tophat: tuple[int, int, int] = (0, 0, 0)
    """Structuring box (d, h, w voxels, odd) of a white top-hat of the last input channel
    (the last window when there are windows), added as one more channel; (0, 0, 0):
    none. Why: a lesion is a bright spot *smaller than the organs around it*. The top-hat
    keeps what is smaller than the box and drops brain, heart, liver and bladder (PET) or
    mediastinum and muscle (soft-tissue CT), so the encoder does not have to learn that
    morphology from a few hundred volumes."""

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "pyramid_channels", "pyramid_strides", "windows"):
            object.__setattr__(self, name, _as_tuple(getattr(self, name)))
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
        for w in self.windows:
            if len(w) != 2 or not w[1] > w[0]:
                raise ValueError(f"each window must be (lo, hi) with hi > lo, got {w}")
        if self.stem == "pyramid":
            self._check_pyramid()
        if self.pos_embed == "sincos" and self.width < 6:
            raise ValueError(f"sincos position embedding needs width >= 6, got {self.width}")

    def _check_pyramid(self) -> None:
        if not self.pyramid_channels or len(self.pyramid_channels) != len(self.pyramid_strides):
            raise ValueError(
                "pyramid_channels and pyramid_strides need one entry per stage, got "
                f"{self.pyramid_channels} and {self.pyramid_strides}"
            )
        check_positive(**{f"pyramid_channels[{i}]": c for i, c in enumerate(self.pyramid_channels)})
        for s in self.pyramid_strides:
            if len(s) != 3 or any(v not in (1, 2) for v in s):
                raise ValueError(f"each pyramid stride must be three of 1 or 2, got {s}")
        total = [math.prod(s[i] for s in self.pyramid_strides) for i in range(3)]
        if any(p % t for p, t in zip(self.patch_size, total, strict=True)):
            raise ValueError(
                f"pyramid_strides reduce by {tuple(total)}, which does not divide "
                f"patch_size {tuple(self.patch_size)}"
            )

    @property
    def stem_channels(self) -> int:
        """Input channels of the stem: the volume, its windows, its top-hat."""
        return self.in_channels * (1 + len(self.windows) + (1 if any(self.tophat) else 0))

    @property
    def embed_stride(self) -> tuple[int, int, int]:
        """Stride of the token embedding after the pyramid (the whole patch for "linear")."""
        if self.stem != "pyramid":
            d, h, w = self.patch_size
            return (d, h, w)
        total = [math.prod(s[i] for s in self.pyramid_strides) for i in range(3)]
        d, h, w = (p // t for p, t in zip(self.patch_size, total, strict=True))
        return (d, h, w)

    @property
    def grid(self) -> tuple[int, int, int]:
        """Tokens per axis (d, h, w)."""
        d, h, w = (i // p for i, p in zip(self.image_size, self.patch_size, strict=True))
        return (d, h, w)

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid)


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


def running_max(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Maximum over a centred window of odd size ``k`` along ``dim`` (edges see only
    what is inside the volume). Built by doubling — max of the window of 2, of 4, … —
    so it costs ~log2(k) elementwise maxima, a few times faster on the CPU than a
    max-pool that also has to track indices."""
    if k <= 1:
        return x
    n = x.shape[dim]
    pad = [0] * (2 * x.dim())
    pad[2 * (x.dim() - 1 - dim)] = pad[2 * (x.dim() - 1 - dim) + 1] = k // 2
    v = F.pad(x, pad, value=torch.finfo(x.dtype).min)
    out, w = v, 1
    while 2 * w <= k:
        m = out.shape[dim] - w
        out = torch.maximum(out.narrow(dim, 0, m), out.narrow(dim, w, m))
        w *= 2
    if w < k:
        out = torch.maximum(out.narrow(dim, 0, n), out.narrow(dim, k - w, n))
    return out.narrow(dim, 0, n)


def white_tophat(x: torch.Tensor, box: tuple[int, int, int]) -> torch.Tensor:
    """``x − opening(x)`` over a ``box`` (odd sizes) on the last three axes: what of ``x``
    is brighter than its surroundings and smaller than the box. Grey-scale opening =
    erosion (a min filter) then dilation (a max filter); a box filter is three 1-D ones
    in a row, so this is a few elementwise maxima and no parameters."""

    def dilate(v: torch.Tensor) -> torch.Tensor:
        for axis, k in enumerate(box):
            v = running_max(v, k, v.dim() - 3 + axis)
        return v

    return x - dilate(-dilate(-x))


def input_channels(x: torch.Tensor, config: EncoderConfig) -> torch.Tensor:
    """``(B, in_channels, D, H, W)`` → the stem's input: the volume, each window of
    ``config.windows``, then the white top-hat of the last of them."""
    chans = [x]
    for lo, hi in config.windows:
        chans.append(((x - lo) / (hi - lo)).clamp(0.0, 1.0))
    if any(config.tophat):
        with torch.no_grad():  # a fixed filter of the input: nothing to differentiate
            chans.append(white_tophat(chans[-1], tuple(config.tophat)))
    return torch.cat(chans, dim=1) if len(chans) > 1 else x


def conv_block(c_in: int, c_out: int, stride: Sequence[int] = (1, 1, 1)) -> nn.Sequential:
    """3x3x3 Conv3d, GroupNorm, GELU: the unit of the pyramid stem and the decoder."""
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, kernel_size=3, stride=tuple(stride), padding=1),
        nn.GroupNorm(min(8, c_out), c_out),
        nn.GELU(),
    )


def init_convs(module: nn.Module) -> None:
    """He-normal convolutions (zero biases).

    Why not the ViT init (std 0.02) the rest of the encoder uses: through several 3x3x3
    convolutions it shrinks the image signal ~10⁴-fold, so at the start the tokens are
    their position embeddings alone, the stem's gradients vanish, and the encoder learns
    where lesions usually are instead of what they look like. GroupNorm between the
    convolutions keeps the scale while training."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class PyramidStem(nn.Module):
    """``(B, stem_channels, D, H, W)`` → tokens ``(B, width, d, h, w)`` and the stage
    outputs, finest first: ``[(B, c_0, D/s_0, …), (B, c_1, …), …]``."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        stages = []
        c_in = config.stem_channels
        for c, stride in zip(config.pyramid_channels, config.pyramid_strides, strict=True):
            stages.append(nn.Sequential(conv_block(c_in, c, stride), conv_block(c, c)))
            c_in = c
        self.stages = nn.ModuleList(stages)
        e = config.embed_stride
        self.embed = nn.Conv3d(c_in, config.width, kernel_size=e, stride=e)
        init_convs(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return self.embed(x), features


@dataclass
class EncoderOutput:
    """What one encoder pass gives."""

    tokens: torch.Tensor  # (B, N, C), N = d·h·w in C order
    grid: tuple[int, int, int]  # (d, h, w) of these tokens (smaller than config.grid for a crop)
    pyramid: list[torch.Tensor]  # "pyramid" stem: stage outputs, finest first; else []


class ViT3D(nn.Module):
    """3D ViT: ``(B, in_channels, D, H, W) → (B, N, width)``."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config.width
        if config.stem == "pyramid":
            self.patch_embed: nn.Module = PyramidStem(config)
        else:
            self.patch_embed = nn.Conv3d(
                config.stem_channels, c, kernel_size=config.patch_size, stride=config.patch_size
            )
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
        if config.stem == "pyramid":
            init_convs(self.patch_embed)
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    @property
    def grid(self) -> tuple[int, int, int]:
        """Tokens per axis (d, h, w) of a whole region volume."""
        return self.config.grid

    @property
    def num_tokens(self) -> int:
        return self.config.num_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A whole region volume ``(B, in_channels, D, H, W)`` → tokens ``(B, N, width)``."""
        want = (self.config.in_channels, *self.config.image_size)
        if x.dim() != 5 or tuple(x.shape[1:]) != want:
            raise ValueError(
                f"ViT3D expects (B, {', '.join(map(str, want))}), got {tuple(x.shape)}"
            )
        return self.forward_features(x).tokens

    def forward_features(
        self, x: torch.Tensor, offsets: torch.Tensor | None = None
    ) -> EncoderOutput:
        """Tokens, their grid and the pyramid of ``x``: a whole region volume, or crops of
        whole patches with ``offsets`` ``(B, 3)`` — each crop's first token on the
        region's token grid (see the module doc)."""
        cfg = self.config
        if x.dim() != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"ViT3D expects (B, {cfg.in_channels}, D, H, W), got {tuple(x.shape)}")
        grid = tuple(s // p for s, p in zip(x.shape[2:], cfg.patch_size, strict=True))
        if any(s % p for s, p in zip(x.shape[2:], cfg.patch_size, strict=True)) or any(
            g > full for g, full in zip(grid, cfg.grid, strict=True)
        ):
            raise ValueError(
                f"a crop must be whole patches {tuple(cfg.patch_size)} within "
                f"{tuple(cfg.image_size)}, got {tuple(x.shape[2:])}"
            )
        x = input_channels(x, cfg)
        pyramid: list[torch.Tensor] = []
        if isinstance(self.patch_embed, PyramidStem):
            t, pyramid = self.patch_embed(x)
        else:
            t = self.patch_embed(x)
        t = t.flatten(2).transpose(1, 2)  # (B, N, C), C order over the grid
        t = self.dropout(t + self._positions(grid, offsets, x.shape[0]).to(t.dtype))
        for block in self.blocks:
            t, _ = block(t)
        return EncoderOutput(self.ln_f(t), (grid[0], grid[1], grid[2]), pyramid)

    def _positions(
        self, grid: tuple[int, ...], offsets: torch.Tensor | None, batch: int
    ) -> torch.Tensor:
        """The position embedding of the tokens of ``grid`` at ``offsets`` (B, 3)."""
        full = self.config.grid
        if tuple(grid) == tuple(full) and offsets is None:
            return self.pos_embed
        if offsets is None:
            raise ValueError(f"a crop of {tuple(grid)} tokens needs its offsets on {full}")
        offsets = torch.as_tensor(offsets, device=self.pos_embed.device).long()
        if offsets.shape != (batch, 3):
            raise ValueError(f"offsets must be (B, 3) = ({batch}, 3), got {tuple(offsets.shape)}")
        if bool((offsets < 0).any()) or any(
            int(offsets[:, i].max()) + grid[i] > full[i] for i in range(3)
        ):
            raise ValueError(f"crop offsets {offsets.tolist()} of {tuple(grid)} leave {full}")
        axes = [torch.arange(g, device=offsets.device) for g in grid]
        local = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
        idx = offsets[:, None, :] + local[None]  # (B, n, 3) positions on the full grid
        flat = (idx[..., 0] * full[1] + idx[..., 1]) * full[2] + idx[..., 2]
        return self.pos_embed[0][flat]  # (B, n, C)


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
