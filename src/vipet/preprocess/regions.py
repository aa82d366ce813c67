"""Body-region split: head–neck, chest, abdomen–pelvis, with overlap (DOMAIN.md §2).

ViMed-PET splits each scan by proportions of the patient's height. ViPET does the same in
world millimetres: the top of the body in the scan is taken as the vertex, and region
boundaries sit at fixed fractions of standing height below it (anthropometric averages:
shoulders ≈ 0.19 H, upper abdomen ≈ 0.37 H, below the pubis ≈ 0.58 H). Without a
height, the same fractions are scaled to the body's extent in the scan (vertex to the
last body slice), which is what a head-to-mid-thigh PET/CT covers. Neighbouring regions
overlap by ``overlap_mm`` so a lesion on a boundary is seen whole in at least one.

Each region becomes a box in world space: its z range plus the body's x–y bounding box
over those slices (squared, so in-plane voxels stay isotropic), and then a target grid
in a canonical orientation: slice 0 at the head, rows anterior→posterior, columns
patient-right→left (the radiological view).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from vipet.errors import GeometryError
from vipet.io.volume import Grid, Volume

REGION_NAMES: tuple[str, ...] = ("head_neck", "chest", "abdomen_pelvis")

# Canonical region-grid axes (columns, LPS): D toward the feet (0, 0, −1), H toward
# posterior (0, 1, 0), W toward the patient's left (1, 0, 0) — the radiological view.
CANONICAL_DIRECTION = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])


@dataclass(frozen=True)
class RegionConfig:
    names: tuple[str, ...] = REGION_NAMES
    """Region names, head to foot."""
    boundaries: tuple[float, ...] = (0.0, 0.19, 0.37, 0.58)
    """Region edges as fractions of standing height below the vertex (len = regions + 1)."""
    overlap_mm: float = 60.0
    """Overlap between neighbouring regions (≈ ViMed-PET's 20 slices at 3 mm)."""
    body_hu: float = -500.0
    """CT threshold separating body from air when finding the body."""
    margin_mm: float = 10.0
    """Margin around the body's x–y bounding box."""
    square: bool = True
    """Square the in-plane box (isotropic in-plane voxels on a square model grid)."""
    use_height: bool = True
    """Use the patient's height when known; otherwise the body's extent."""

    def __post_init__(self) -> None:
        if len(self.boundaries) != len(self.names) + 1:
            raise ValueError("regions.boundaries needs one more value than regions.names")
        if any(b >= a for a, b in zip(self.boundaries[1:], self.boundaries[:-1], strict=False)):
            raise ValueError(f"regions.boundaries must increase, got {self.boundaries}")
        if self.overlap_mm < 0 or self.margin_mm < 0:
            raise ValueError("regions.overlap_mm and regions.margin_mm must be >= 0")


@dataclass(frozen=True)
class RegionBox:
    """One body region as a world-space box (LPS mm)."""

    name: str
    z_top: float  # superior edge
    z_bottom: float  # inferior edge
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    own_top: float | None = None  # the region's own part, without the overlaps (None: all)
    own_bottom: float | None = None

    def own_slices(self, depth: int) -> tuple[float, float]:
        """``[lo, hi)`` in slices of a ``depth``-slice grid of this box: the part that is
        the region's own rather than an overlap with a neighbour. A lesion centred in an
        overlap belongs to the neighbour (`vipet.phantom` files it there), so a model
        reporting region by region describes it once."""
        sz = self.height_mm / depth
        top = self.z_top if self.own_top is None else self.own_top
        bottom = self.z_bottom if self.own_bottom is None else self.own_bottom
        return (max(0.0, (self.z_top - top) / sz), min(float(depth), (self.z_top - bottom) / sz))

    @property
    def height_mm(self) -> float:
        return self.z_top - self.z_bottom

    def grid(self, shape: tuple[int, int, int]) -> Grid:
        """A (D, H, W) grid of ``shape`` voxels covering the box edge to edge, canonical axes."""
        d, h, w = shape
        sz = self.height_mm / d
        sy = (self.y_range[1] - self.y_range[0]) / h
        sx = (self.x_range[1] - self.x_range[0]) / w
        # Voxel 0 is the top (head), anterior (−y), patient-right (−x) corner.
        first = np.array([self.x_range[0] + sx / 2, self.y_range[0] + sy / 2, self.z_top - sz / 2])
        return Grid(shape, (sz, sy, sx), first, CANONICAL_DIRECTION)


@dataclass(frozen=True)
class BodyExtent:
    """World points (N, 3) of body voxels on a coarse grid, and the z range they span."""

    points: np.ndarray
    z_top: float
    z_bottom: float


def find_body(ct: Volume, hu_threshold: float = -500.0, step_mm: float = 4.0) -> BodyExtent:
    """The patient's body in the CT: threshold, opening, largest connected component.

    Works on a strided view (~``step_mm`` voxels) because only the outline is needed;
    the opening cuts thin bridges to the scanner table before the largest component is kept.
    """
    steps = tuple(max(1, round(step_mm / s)) for s in ct.spacing)
    coarse = ct.array[:: steps[0], :: steps[1], :: steps[2]]
    mask = coarse > hu_threshold
    mask = ndimage.binary_opening(mask, structure=np.ones((1, 3, 3), dtype=bool))
    labels, n = ndimage.label(mask)
    if n == 0:
        raise GeometryError(f"no body found in the CT (no voxel above {hu_threshold:g} HU)")
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    idx = np.argwhere(labels == int(sizes.argmax())) * np.asarray(steps)
    points = ct.grid.index_to_world(idx)
    return BodyExtent(points, float(points[:, 2].max()), float(points[:, 2].min()))


def split_regions(
    body: BodyExtent, config: RegionConfig, height_cm: float | None = None
) -> tuple[list[RegionBox], str]:
    """Region boxes, head to foot, and a note saying whether height or extent was used.

    Regions wholly outside the scanned body are left out (a scan that stops at the
    thorax has no abdomen–pelvis region), so the list may be shorter than ``names``.
    """
    extent = body.z_top - body.z_bottom
    if extent <= 0:
        raise GeometryError("the body spans a single slice; cannot split regions")
    if config.use_height and height_cm:
        scale, basis = height_cm * 10.0, f"height {height_cm:g} cm"
    else:
        scale, basis = extent / config.boundaries[-1], f"body extent {extent:.0f} mm"
    edges = [body.z_top - f * scale for f in config.boundaries]
    half = config.overlap_mm / 2.0
    boxes = []
    for i, name in enumerate(config.names):
        top = edges[i] + (half if i > 0 else 0.0)
        bottom = edges[i + 1] - (half if i < len(config.names) - 1 else 0.0)
        top, bottom = min(top, body.z_top), max(bottom, body.z_bottom)
        if top - bottom < 10.0:  # under 1 cm of body: the region is not in this scan
            continue
        box = _box_for(body.points, name, top, bottom, config)
        own = (min(edges[i], top), max(edges[i + 1], bottom))
        boxes.append(dataclasses.replace(box, own_top=own[0], own_bottom=own[1]))
    if not boxes:
        raise GeometryError("no body region lies within the scan")
    return boxes, basis


def _box_for(
    points: np.ndarray, name: str, top: float, bottom: float, cfg: RegionConfig
) -> RegionBox:
    inside = points[(points[:, 2] <= top) & (points[:, 2] >= bottom)]
    if inside.size == 0:
        inside = points
    lo = inside[:, :2].min(axis=0) - cfg.margin_mm
    hi = inside[:, :2].max(axis=0) + cfg.margin_mm
    if cfg.square:
        centre, half = (lo + hi) / 2.0, (hi - lo).max() / 2.0
        lo, hi = centre - half, centre + half
    return RegionBox(name, top, bottom, (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1])))
