"""One DICOM image series → one `Volume`: slice geometry, ordering, spacing and pixels.

The DICOM reader (`vipet.io.dicom`) groups files into `DicomSeries`; this module turns
one of them into a float32 ``(D, H, W)`` array in world space (conventions in
`vipet.io.volume`):

- slices are ordered by ImagePositionPatient projected on the slice normal
  (row cosine × column cosine), never by InstanceNumber or file name;
- the slice spacing comes from those positions, not from SliceThickness (slices may
  overlap or leave gaps);
- every slice keeps its own RescaleSlope/RescaleIntercept (PET sets one per slice).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from vipet.errors import GeometryError, InputError, MissingTagError
from vipet.io.study import LoadOptions
from vipet.io.volume import Units, Volume

UNEVEN_TOLERANCE = 0.01
"""Relative deviation of a slice gap from the median above which spacing is 'uneven'."""


@dataclass(frozen=True, eq=False)
class DicomSeries:
    """The image files of one SeriesInstanceUID with their headers (no pixel data)."""

    uid: str
    modality: str
    number: str  # SeriesNumber as text, "" when absent
    description: str
    files: tuple[Path, ...]
    headers: tuple[Dataset, ...] = field(repr=False)

    @property
    def first(self) -> Dataset:
        return self.headers[0]

    def summary(self) -> str:
        """One line naming the series, for error messages and `inspect`."""
        number = self.number or "?"
        desc = self.description or "(no description)"
        return (
            f"{self.modality} series {number} {desc!r}, {len(self.files)} slice(s), "
            f"SeriesInstanceUID {self.uid}"
        )

    def as_meta(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "number": self.number,
            "description": self.description,
            "slices": len(self.files),
        }


@dataclass(frozen=True)
class _Stack:
    """Where the slices of a series lie: sorted order and positions along the normal."""

    order: np.ndarray  # indices into series.files, sorted along the normal
    positions: np.ndarray  # (N,) projection of each sorted slice's IPP on the normal, mm
    origin: np.ndarray  # IPP of the first sorted slice
    direction: np.ndarray  # columns: normal, column cosine, row cosine
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm
    rows: int
    columns: int


def _numbers(ds: Dataset, keyword: str, count: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    if value is None or value == "":
        raise MissingTagError(f"image has no {keyword}", path)
    try:
        arr = np.asarray([float(v) for v in (value if count > 1 else [value])], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise GeometryError(f"{keyword} {value!r} is not numeric", path) from exc
    if arr.shape != (count,) or not np.all(np.isfinite(arr)):
        raise GeometryError(f"{keyword} must hold {count} finite numbers, got {value!r}", path)
    return arr


def _image_size(ds: Dataset, path: Path) -> tuple[int, int]:
    rows, columns = (int(_numbers(ds, k, 1, path)[0]) for k in ("Rows", "Columns"))
    return rows, columns


def _stack_geometry(series: DicomSeries) -> _Stack:
    """Check that every slice shares one in-plane geometry, and sort them along the normal."""
    first_path = series.files[0]
    iop = _numbers(series.first, "ImageOrientationPatient", 6, first_path)
    spacing = _numbers(series.first, "PixelSpacing", 2, first_path)
    size = _image_size(series.first, first_path)
    positions = []
    for ds, path in zip(series.headers, series.files, strict=True):
        if not np.allclose(_numbers(ds, "ImageOrientationPatient", 6, path), iop, atol=1e-4):
            raise GeometryError(f"ImageOrientationPatient differs from {first_path.name}", path)
        if not np.allclose(_numbers(ds, "PixelSpacing", 2, path), spacing, rtol=1e-4):
            raise GeometryError(f"PixelSpacing differs from {first_path.name}", path)
        if _image_size(ds, path) != size:
            raise GeometryError(f"Rows/Columns differ from {first_path.name}", path)
        positions.append(_numbers(ds, "ImagePositionPatient", 3, path))
    row, col = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    if abs(float(row @ col)) > 1e-3:
        raise GeometryError(f"ImageOrientationPatient {iop.tolist()} is not orthogonal", first_path)
    # Cosines are written to a few digits: make them exactly orthonormal for the affine.
    col = col - (col @ row) * row
    col /= np.linalg.norm(col)
    normal = np.cross(row, col)
    ipp = np.asarray(positions)
    along = ipp @ normal
    order = np.argsort(along, kind="stable")
    _check_stack(series, ipp[order], along[order], order, normal, float(min(spacing)))
    return _Stack(
        order=order,
        positions=along[order],
        origin=ipp[order[0]],
        direction=np.column_stack([normal, col, row]),
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        rows=size[0],
        columns=size[1],
    )


def _check_stack(
    series: DicomSeries,
    ipp: np.ndarray,
    along: np.ndarray,
    order: np.ndarray,
    normal: np.ndarray,
    pixel_mm: float,
) -> None:
    """Refuse duplicate slice positions and stacks sheared off the normal (gantry tilt)."""
    gaps = np.diff(along)
    dup = np.flatnonzero(gaps < 1e-3)
    if dup.size:
        a, b = (series.files[order[dup[0]]], series.files[order[dup[0] + 1]])
        raise GeometryError(
            f"{series.summary()}: {dup.size + 1} slices share a position along the slice "
            f"normal ({along[dup[0]]:.3f} mm), e.g. {a.name} and {b.name}; the series holds "
            "several acquisitions — split it or remove the duplicates",
            a.parent,
        )
    # The volume's D axis is the slice normal: a stack that drifts in-plane (gantry tilt)
    # would be placed wrongly by up to the drift, so refuse it rather than shear silently.
    offsets = ipp - ipp[0]
    drift = offsets - np.outer(along - along[0], normal)
    worst = float(np.max(np.linalg.norm(drift, axis=1))) if len(ipp) > 1 else 0.0
    if worst > 0.1 * pixel_mm:
        raise GeometryError(
            f"{series.summary()}: slice positions drift {worst:.2f} mm off the slice normal "
            "(gantry tilt?); tilted stacks are not supported",
            series.files[0].parent,
        )


def _single_slice_spacing(ds: Dataset) -> float:
    """A lone slice has no neighbour: its nominal spacing or thickness is the best guess."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = float(ds.get(keyword) or 0)
        except (TypeError, ValueError):
            continue
        if value > 0:
            return value
    return 1.0


def _slice_targets(
    series: DicomSeries, stack: _Stack, options: LoadOptions
) -> tuple[float, np.ndarray | None, dict[str, Any] | None]:
    """Slice spacing, plus target positions and a meta record when slices must be resampled."""
    if len(stack.positions) == 1:
        return _single_slice_spacing(series.first), None, None
    gaps = np.diff(stack.positions)
    median = float(np.median(gaps))
    deviation = float(np.max(np.abs(gaps - median)) / median)
    if deviation <= UNEVEN_TOLERANCE:
        # Even up to header rounding: the mean gap spans the stack exactly.
        return float((stack.positions[-1] - stack.positions[0]) / len(gaps)), None, None
    where = f"{series.summary()}: uneven slice spacing ({gaps.min():.3f} to {gaps.max():.3f} mm"
    if options.uneven_slices == "refuse":
        gap_text = ", ".join(f"{g:.3f}" for g in gaps[:20]) + (" ..." if len(gaps) > 20 else "")
        raise GeometryError(
            f"{where}, median {median:.3f} mm; gaps: {gap_text}); "
            "use --uneven-slices resample (uneven_slices='resample') to interpolate onto an even grid",
            series.files[0].parent,
        )
    extent = float(stack.positions[-1] - stack.positions[0])
    count = int(np.floor(extent / median + 1e-6)) + 1
    targets = stack.positions[0] + median * np.arange(count)
    record = {
        "series": series.uid,
        "modality": series.modality,
        "action": "resampled",
        "min_mm": float(gaps.min()),
        "max_mm": float(gaps.max()),
        "to_mm": median,
        "slices_in": len(stack.positions),
        "slices_out": count,
    }
    return median, targets, record


def _resample_slices(data: np.ndarray, positions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Linear interpolation along axis 0 from sorted ``positions`` onto ``targets`` (mm)."""
    upper = np.clip(np.searchsorted(positions, targets, side="right"), 1, len(positions) - 1)
    lower = upper - 1
    weight = (targets - positions[lower]) / (positions[upper] - positions[lower])
    weight = np.clip(weight, 0.0, 1.0).astype(np.float32)[:, None, None]
    return (1.0 - weight) * data[lower] + weight * data[upper]


def ensure_transfer_syntax(ds: Dataset) -> None:
    """Give a preamble-less file (no file meta) the transfer syntax it was parsed with,
    so its pixel data can be sized and decoded like any other file's."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    if implicit is None or not little:
        return  # big-endian or unknown: leave it to pydicom to refuse at decode time
    ds.ensure_file_meta()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian


def expected_pixel_bytes(ds: Dataset) -> int | None:
    """Bytes of uncompressed pixel data the header promises; None when compressed/unknown."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or syntax.is_compressed:
        return None
    try:
        count = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
        count *= int(ds.get("NumberOfFrames", 1) or 1)
        return (count * int(ds.get("BitsAllocated", 16)) + 7) // 8
    except (AttributeError, TypeError, ValueError):
        return None


def _rescale(ds: Dataset, keyword: str, default: float, path: Path) -> float:
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{keyword} {value!r} is not a number", path) from exc
    if not np.isfinite(number) or (keyword == "RescaleSlope" and number == 0):
        raise InputError(f"{keyword} {value!r} is not usable", path)
    return number


def _read_slice(path: Path, rows: int, columns: int) -> np.ndarray:
    """Rescaled pixel values of one slice as float32 (H, W); corrupt files → `InputError`."""
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:  # pydicom raises many types for a damaged file
        raise InputError(f"cannot read DICOM file: {exc}", path) from exc
    ensure_transfer_syntax(ds)
    if "PixelData" not in ds:
        raise InputError("DICOM image has no pixel data (truncated file?)", path)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and not syntax.is_compressed:
        # pydicom pads or warns on short native pixel data; a short buffer is a cut file.
        bits = int(ds.get("BitsAllocated", 16))
        expected = rows * columns * int(ds.get("SamplesPerPixel", 1)) * bits // 8
        if len(ds.PixelData) < expected:
            raise InputError(
                f"pixel data holds {len(ds.PixelData)} bytes, {expected} expected (truncated file)",
                path,
            )
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # missing codec plugins, corrupt compressed streams, ...
        raise InputError(f"cannot decode pixel data: {exc}", path) from exc
    if pixels.shape != (rows, columns):
        raise GeometryError(f"pixel array {pixels.shape} != Rows x Columns", path)
    slope = _rescale(ds, "RescaleSlope", 1.0, path)
    intercept = _rescale(ds, "RescaleIntercept", 0.0, path)
    return (pixels.astype(np.float64) * slope + intercept).astype(np.float32)


def read_series_volume(
    series: DicomSeries, options: LoadOptions, units: Units
) -> tuple[Volume, dict[str, Any] | None]:
    """The series as a float32 `Volume` in ``units`` (values after per-slice rescale).

    Returns the volume and, when uneven slices were resampled, a record of it (else None).
    Raises `GeometryError` for inconsistent or duplicate slices, or uneven spacing with
    ``options.uneven_slices == "refuse"``; `InputError` for unreadable pixel data.
    """
    for ds, path in zip(series.headers, series.files, strict=True):
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise InputError("multi-frame (enhanced) images are not supported", path)
    stack = _stack_geometry(series)
    slice_mm, targets, record = _slice_targets(series, stack, options)
    data = np.empty((len(stack.order), stack.rows, stack.columns), dtype=np.float32)
    for k, index in enumerate(stack.order):
        data[k] = _read_slice(series.files[index], stack.rows, stack.columns)
    if targets is not None:
        data = _resample_slices(data, stack.positions, targets)
    volume = Volume(
        array=data,
        spacing=(slice_mm, *stack.pixel_spacing),
        origin=tuple(stack.origin),
        direction=stack.direction,
        modality=series.modality,
        units=units,
    )
    return volume, record
