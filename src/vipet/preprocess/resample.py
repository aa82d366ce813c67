"""Resampling in physical (world) coordinates.

PET and CT come on different grids: different spacing, origin, extent and sometimes
orientation. Every resampling here goes through world space: a target voxel's centre is
mapped to LPS millimetres with the target's affine, then into the source's fractional
voxel index with the inverse of the source's affine. That single composed affine is
what `scipy.ndimage.affine_transform` needs, so the result is right whatever the two
grids are, and no full-resolution intermediate grid is ever built.

Downsampling by large factors (a 512² CT slice to 128²) with plain trilinear sampling
would alias (each output voxel would sample ~1 of 16 input voxels). `block_reduce` first
averages integer blocks (a box anti-alias filter), and `resample_to_grid` does that
automatically when the target is coarser than the source.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from vipet.errors import GeometryError
from vipet.io.volume import Grid, Units, Volume


def source_index_map(source: Grid, target: Grid) -> np.ndarray:
    """4×4 map from target voxel index (d, h, w, 1) to source fractional index."""
    return np.linalg.inv(source.affine) @ target.affine


def footprint(source: Grid, target: Grid) -> np.ndarray:
    """How many source voxels one target voxel spans, along each *source* axis."""
    m = source_index_map(source, target)[:3, :3]
    return np.abs(m).max(axis=1)


def crop_box(source: Grid, target: Grid, margin: int = 2) -> tuple[slice, slice, slice] | None:
    """The source index box that the target grid samples from (with a margin), or None
    when the target lies entirely outside the source."""
    corners = np.array(
        [
            [d, h, w]
            for d in (-0.5, target.shape[0] - 0.5)
            for h in (-0.5, target.shape[1] - 0.5)
            for w in (-0.5, target.shape[2] - 0.5)
        ]
    )
    m = source_index_map(source, target)
    idx = corners @ m[:3, :3].T + m[:3, 3]
    lo = np.floor(idx.min(axis=0)).astype(int) - margin
    hi = np.ceil(idx.max(axis=0)).astype(int) + margin + 1
    shape = np.asarray(source.shape)
    lo, hi = np.maximum(lo, 0), np.minimum(hi, shape)
    if np.any(hi <= lo):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))  # type: ignore[return-value]


def crop(volume: Volume, box: tuple[slice, slice, slice]) -> Volume:
    """Sub-volume by index box, with the origin moved to the box's first voxel."""
    start = np.array([s.start for s in box], dtype=np.float64)
    origin = volume.grid.index_to_world(start)
    return Volume(
        volume.array[box], volume.spacing, origin, volume.direction, volume.modality, volume.units
    )


def block_reduce(volume: Volume, factors: tuple[int, int, int], how: str = "mean") -> Volume:
    """Reduce non-overlapping blocks of ``factors`` voxels (trailing partial blocks are
    dropped); the new voxel centre is the block's centre, so geometry stays exact.

    ``how="mean"`` is a box anti-alias filter for images; ``"max"`` keeps a label present
    if any voxel of the block has it, so a 5 mm lesion survives a 4× downsampling.
    """
    f = tuple(max(1, int(x)) for x in factors)
    if f == (1, 1, 1):
        return volume
    arr = volume.array
    n = [s // k for s, k in zip(arr.shape, f, strict=True)]
    if min(n) < 1:
        raise GeometryError(f"volume {arr.shape} smaller than block {f}")
    arr = arr[: n[0] * f[0], : n[1] * f[1], : n[2] * f[2]]
    if how == "mean":
        # One axis at a time in float32: memory stays at one reduced copy per step.
        out = arr.reshape(n[0], f[0], n[1] * f[1], n[2] * f[2]).mean(axis=1, dtype=np.float32)
        out = out.reshape(n[0], n[1], f[1], n[2] * f[2]).mean(axis=2, dtype=np.float32)
        out = out.reshape(n[0], n[1], n[2], f[2]).mean(axis=3, dtype=np.float32)
    elif how == "max":
        if not arr.any():  # most regions of most studies hold no lesion: skip the work
            out = np.zeros(n, dtype=arr.dtype)
        else:  # one axis at a time: ~4x faster than one 6-D reduction over strided axes
            out = arr.reshape(n[0], f[0], n[1] * f[1] * n[2] * f[2]).max(axis=1)
            out = out.reshape(n[0] * n[1], f[1], n[2] * f[2]).max(axis=1)
            out = out.reshape(n[0], n[1], n[2], f[2]).max(axis=3)
    else:
        raise ValueError(f"unknown block reduction {how!r}; choose from ['max', 'mean']")
    centre = (np.asarray(f, dtype=np.float64) - 1.0) / 2.0
    origin = volume.grid.index_to_world(centre)
    spacing = tuple(s * k for s, k in zip(volume.spacing, f, strict=True))
    return Volume(out, spacing, origin, volume.direction, volume.modality, volume.units)


def resample_to_grid(
    volume: Volume,
    target: Grid,
    order: int = 1,
    fill: float = 0.0,
    antialias: bool = True,
    reduce: str = "mean",
) -> Volume:
    """``volume`` sampled at the centres of ``target``'s voxels, in world coordinates.

    ``order`` 1 is trilinear (images), 0 nearest (label masks: never averaged).
    Points outside the source take ``fill`` (−1024 HU for CT air, 0 for PET).
    With ``antialias``, the source is first block-reduced by the integer part of the
    target/source footprint (``reduce``: "mean" or "max" for images; always max for
    label masks), then sampled.
    """
    src = volume
    box = crop_box(src.grid, target)
    if box is None:
        out = np.full(target.shape, fill, dtype=np.float32 if order else src.array.dtype)
        return Volume.on_grid(out, target, src.modality, src.units)
    src = crop(src, box)
    if antialias:
        labels = src.units is Units.LABEL
        # Images: the whole blocks that fit in a target voxel (a box filter, no blur
        # beyond it). Labels: blocks at least as large as a target voxel, so every block
        # is hit by some target sample and no lesion, however small, is skipped.
        fp = footprint(src.grid, target)
        factors = (np.ceil(fp - 1e-6) if labels else np.floor(fp + 1e-6)).astype(int)
        factors = np.clip(factors, 1, np.asarray(src.shape))
        src = block_reduce(src, tuple(factors), "max" if labels else reduce)
    m = source_index_map(src.grid, target)
    data = src.array
    if order > 0 and data.dtype != np.float32:
        data = data.astype(np.float32)
    out = ndimage.affine_transform(
        data,
        m[:3, :3],
        offset=m[:3, 3],
        output_shape=target.shape,
        order=order,
        mode="constant",
        cval=fill,
        prefilter=False,
    )
    return Volume.on_grid(out, target, volume.modality, volume.units)


def resample_like(volume: Volume, reference: Volume, order: int = 1, fill: float = 0.0) -> Volume:
    """``volume`` on ``reference``'s grid (e.g. PET onto the CT grid)."""
    return resample_to_grid(volume, reference.grid, order=order, fill=fill)


def resample_labels(mask: Volume, target: Grid) -> Volume:
    """Label masks: block max then nearest neighbour (labels are never blended, and small
    lesions are not lost when the target is coarser)."""
    if mask.units is not Units.LABEL:
        raise GeometryError(f"resample_labels needs a label mask, got units {mask.units.value}")
    return resample_to_grid(mask, target, order=0, fill=0, antialias=True)
