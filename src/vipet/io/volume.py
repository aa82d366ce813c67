"""Volumes with their geometry and units.

Conventions, stated once for the whole package:

- Arrays are held in memory as ``(D, H, W)`` = (slice, row, column), i.e. (z, y, x) for an
  axial acquisition.
- ``spacing`` is in mm, in the same (D, H, W) order.
- The world frame is DICOM's patient frame, **LPS** (x to the patient's left, y to the
  posterior, z to the head), with world points written (x, y, z) in mm.
- ``origin`` is the world position of the *centre* of voxel ``[0, 0, 0]``.
- ``direction`` is a 3×3 matrix whose column ``k`` is the unit LPS vector along array
  axis ``k`` (column 0: the D axis, 1: the H axis, 2: the W axis). For a plain axial
  DICOM series sorted foot→head this is ``[[0,0,1],[0,1,0],[1,0,0]]``: W runs along the
  row cosine (x), H along the column cosine (y), D along the slice normal (z).
- So ``world = origin + direction @ (spacing * index)`` for ``index = (d, h, w)``;
  ``affine`` is that map as a 4×4 matrix.

NIfTI (RAS, x-fastest) and SimpleITK (LPS, x-fastest) are converted at the reader, so
nothing downstream has to think about file conventions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np

from vipet.errors import GeometryError, UnitsError


class Units(StrEnum):
    """Physical units of a volume's values. Part of the type: see `Volume.require_units`."""

    HU = "HU"  # CT Hounsfield units
    SUVBW = "SUVbw"  # PET standardised uptake value, body weight
    BQML = "BQML"  # PET activity concentration, Bq/mL (SUV factor unknown)
    RAW = "raw"  # scanner values without a known calibration (e.g. ViMed-PET npz PET)
    LABEL = "label"  # integer label mask (0 = background)
    NORMALISED = "normalised"  # intensity already mapped for a model, e.g. [0, 1]


def _as_triplet(values: Any, name: str) -> tuple[float, float, float]:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise GeometryError(f"{name} must be three finite numbers, got {values!r}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


@dataclass(frozen=True)
class Grid:
    """A voxel grid in world space: shape, spacing, origin and direction (see module doc)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: default_direction())

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise GeometryError(f"grid shape must be three positive sizes, got {self.shape!r}")
        spacing = _as_triplet(self.spacing, "spacing")
        if min(spacing) <= 0:
            raise GeometryError(f"spacing must be positive, got {spacing}")
        direction = np.asarray(self.direction, dtype=np.float64)
        if direction.shape != (3, 3) or not np.all(np.isfinite(direction)):
            raise GeometryError("direction must be a finite 3x3 matrix")
        # Orthonormal up to rounding in headers (DICOM cosines are often written to 6 digits).
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
            raise GeometryError("direction columns must be orthonormal unit vectors")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", _as_triplet(self.origin, "origin"))
        direction = direction.copy()
        direction.flags.writeable = False
        object.__setattr__(self, "direction", direction)

    @property
    def affine(self) -> np.ndarray:
        """4×4 map from index (d, h, w, 1) to LPS world (x, y, z, 1) in mm."""
        out = np.eye(4)
        out[:3, :3] = self.direction * np.asarray(self.spacing)[None, :]
        out[:3, 3] = self.origin
        return out

    def index_to_world(self, index: np.ndarray) -> np.ndarray:
        """(..., 3) voxel indices (d, h, w) → (..., 3) LPS points (x, y, z) mm."""
        idx = np.asarray(index, dtype=np.float64)
        a = self.affine
        return idx @ a[:3, :3].T + a[:3, 3]

    def world_to_index(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) LPS points (x, y, z) mm → (..., 3) fractional voxel indices (d, h, w)."""
        pts = np.asarray(points, dtype=np.float64)
        inv = np.linalg.inv(self.affine)
        return pts @ inv[:3, :3].T + inv[:3, 3]

    def corners(self) -> np.ndarray:
        """(8, 3) world positions of the centres of the eight corner voxels."""
        hi = np.asarray(self.shape) - 1
        idx = np.array([[d, h, w] for d in (0, hi[0]) for h in (0, hi[1]) for w in (0, hi[2])])
        return self.index_to_world(idx)

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Physical size along each array axis (voxel edge to edge), mm."""
        return tuple(float(n * s) for n, s in zip(self.shape, self.spacing, strict=True))

    def same_as(self, other: Grid, atol: float = 1e-3) -> bool:
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=atol)
            and np.allclose(self.origin, other.origin, atol=atol)
            and np.allclose(self.direction, other.direction, atol=atol)
        )

    def __eq__(self, other: object) -> bool:  # numpy field: dataclass eq would be ambiguous
        return isinstance(other, Grid) and self.same_as(other, atol=1e-9)

    def __hash__(self) -> int:
        return hash((self.shape, self.spacing, self.origin, self.direction.round(9).tobytes()))


def default_direction() -> np.ndarray:
    """Axial, foot→head slice order: D along +z, H along +y, W along +x (LPS)."""
    return np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image: values in (D, H, W), its grid in world space, modality and units."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=default_direction)
    modality: str = "OT"  # DICOM-style: "CT", "PT", "SEG", "OT"
    units: Units = Units.RAW

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim != 3:
            raise GeometryError(
                f"{self.modality} volume must be 3D (D, H, W), got shape {arr.shape}"
            )
        object.__setattr__(self, "array", arr)
        object.__setattr__(self, "units", Units(self.units))
        grid = Grid(arr.shape, self.spacing, self.origin, self.direction)  # validates
        object.__setattr__(self, "spacing", grid.spacing)
        object.__setattr__(self, "origin", grid.origin)
        object.__setattr__(self, "direction", grid.direction)

    @classmethod
    def on_grid(cls, array: np.ndarray, grid: Grid, modality: str, units: Units) -> Volume:
        if tuple(np.shape(array)) != grid.shape:
            raise GeometryError(f"array shape {np.shape(array)} does not match grid {grid.shape}")
        return cls(array, grid.spacing, grid.origin, grid.direction, modality, units)

    @property
    def grid(self) -> Grid:
        return Grid(self.array.shape, self.spacing, self.origin, self.direction)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def affine(self) -> np.ndarray:
        return self.grid.affine

    def with_array(self, array: np.ndarray, units: Units | None = None) -> Volume:
        """Same geometry, new values (shape must match)."""
        if np.shape(array) != self.array.shape:
            raise GeometryError(f"new array shape {np.shape(array)} != {self.array.shape}")
        return replace(self, array=array, units=self.units if units is None else units)

    def require_units(self, *allowed: Units, purpose: str = "this operation") -> None:
        """Refuse values in the wrong units with a message that says what to do."""
        if self.units in allowed:
            return
        names = " or ".join(u.value for u in allowed)
        hint = ""
        if self.units is Units.RAW and Units.SUVBW in allowed:
            hint = (
                "; raw PET counts carry no SUV calibration — load DICOM with its "
                "radiopharmaceutical tags (or give --weight-kg/--dose-mbq/--injection-time), "
                "or preprocess raw counts with pet.units=raw (configs/preprocess-vimed.yaml)"
            )
        raise UnitsError(
            f"{purpose} needs a {self.modality} volume in {names}, got {self.units.value}{hint}"
        )

    def check_finite(self, source: str | None = None) -> None:
        """Refuse NaN/inf values: they poison resampling and normalisation silently."""
        if np.issubdtype(self.array.dtype, np.floating) and not np.all(np.isfinite(self.array)):
            bad = int(np.count_nonzero(~np.isfinite(self.array)))
            where = f"{source}: " if source else ""
            raise GeometryError(f"{where}{self.modality} volume holds {bad} NaN/inf voxels")

    def describe(self) -> str:
        sp = " x ".join(f"{s:.3g}" for s in self.spacing)
        org = ", ".join(f"{o:.1f}" for o in self.origin)
        ext = " x ".join(f"{e:.0f}" for e in self.grid.extent_mm)
        return (
            f"{self.modality}: shape (D,H,W) {self.shape}, spacing {sp} mm, extent {ext} mm, "
            f"origin LPS ({org}) mm, {self.array.dtype}, units {self.units.value}"
        )
