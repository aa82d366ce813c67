"""DICOM PET/CT folders: scan, pick one CT and one PT series, build a `Study`.

A study folder may hold any number of series in any sub-folder layout. Files are grouped
by SeriesInstanceUID; exactly one CT and one PT series are used (``LoadOptions.series``
chooses when there are several). CT values become HU, PET values SUVbw (see
`vipet.io.dicom_pet` for the calibration and `vipet.io.dicom_series` for the geometry).

Importing this module registers the layout ``"dicom"``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from vipet.errors import InputError, LayoutError
from vipet.io.dicom_pet import as_meta, parse_da, pet_scaling
from vipet.io.dicom_series import (
    DicomSeries,
    ensure_transfer_syntax,
    expected_pixel_bytes,
    read_series_volume,
)
from vipet.io.layouts import Layout, StudyPath, register_layout
from vipet.io.study import LoadOptions, Study
from vipet.io.volume import Units

MODALITIES = {"CT": "CT", "PT": "PET"}
IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.128": "PET Image Storage",
    "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET Image Storage",
}
_HEAD_BYTES = 132
# Elements larger than this are not read at header time, only located: PixelData then
# tells its offset and length, which is how a truncated file is caught before decoding.
_DEFER_BYTES = 4096


def _walk_files(folder: Path) -> Iterator[Path]:
    """Every regular file under ``folder``, in a stable order."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(_HEAD_BYTES)
    except OSError:
        return b""


def _has_preamble(head: bytes) -> bool:
    return head[128:132] == b"DICM"


def _looks_like_bare_dicom(head: bytes) -> bool:
    """A file without preamble that starts like a DICOM data set (group 0002 or 0008).

    Cheap guess for old ACR-NEMA-style exports: the first tag is little-endian group 2 or
    8 followed by an explicit two-letter VR or a small implicit length.
    """
    if len(head) < 8 or head[:2] not in (b"\x02\x00", b"\x08\x00") or head[3] != 0:
        return False
    if head[4:6].isalpha() and head[4:6].isupper():
        return True
    return int.from_bytes(head[4:8], "little") < 1024


def _is_image(ds: Dataset) -> bool:
    sop = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
    return sop in IMAGE_SOP_CLASSES or str(ds.get("Modality", "")) in MODALITIES


def _check_complete(ds: Dataset, path: Path) -> None:
    """An image file must carry its series UID and all of its pixel data."""
    if not ds.get("SeriesInstanceUID"):
        raise InputError("DICOM image without SeriesInstanceUID (truncated or corrupt file)", path)
    if "PixelData" not in ds:
        raise InputError("DICOM image without pixel data (truncated file?)", path)
    element = ds.get_item("PixelData", keep_deferred=True)
    value = getattr(element, "value", None)
    if value is not None:
        available = len(value)
    else:  # deferred: only located, so measure it against the file
        start, length = int(element.value_tell), int(element.length)
        available = path.stat().st_size - start
        if length != 0xFFFFFFFF and available < length:
            raise InputError(
                f"truncated DICOM file: pixel data needs {start + length} bytes, "
                f"file has {start + available}",
                path,
            )
    expected = expected_pixel_bytes(ds)
    if expected is not None and available < expected:
        raise InputError(
            f"truncated DICOM file: pixel data holds {available} bytes, {expected} expected",
            path,
        )


def _parse_header(path: Path, preamble: bool) -> Dataset | None:
    ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES, force=not preamble)
    ensure_transfer_syntax(ds)
    if preamble and len(ds) == 0:
        raise InputError("DICOM file holds no data elements (truncated or corrupt file)", path)
    if not _is_image(ds):
        # Other DICOM objects (SR, RTSTRUCT, ...) are listed as series but never loaded.
        return ds if preamble else None
    _check_complete(ds, path)
    return ds


def read_header(path: Path) -> Dataset | None:
    """The header of one file (pixel data located, not read), or None if not DICOM.

    Headers are read with ``defer_size`` rather than ``stop_before_pixels``: both skip the
    pixel bytes, but only the first tells where PixelData starts and how long it is, which
    catches a truncated file here instead of halfway through loading.

    A file with the DICOM preamble that cannot be parsed, or an image missing its pixel
    data, raises `InputError` naming it: it is a DICOM file gone bad, not a stray file.
    A preamble-less file that does not parse was a wrong guess and is skipped.
    """
    head = _head(path)
    preamble = _has_preamble(head)
    if not preamble and not _looks_like_bare_dicom(head):
        return None
    try:
        return _parse_header(path, preamble)
    except InputError:
        raise
    except Exception as exc:  # pydicom raises many types on a damaged stream
        if not preamble:
            return None
        raise InputError(
            f"cannot read DICOM header (corrupt or truncated file): {exc}", path
        ) from exc


def _series_number(ds: Dataset) -> str:
    value = ds.get("SeriesNumber")
    try:
        return "" if value in (None, "") else str(int(value))
    except (TypeError, ValueError):
        return str(value).strip()


def scan_dicom_folder(folder: Path) -> list[DicomSeries]:
    """Every image series under ``folder`` (recursively), grouped by SeriesInstanceUID.

    Raises `InputError` for a missing or empty folder, one with no DICOM file at all, or
    a DICOM file that is truncated or corrupt.
    """
    if not folder.is_dir():
        raise InputError("not a folder of DICOM files", folder)
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    count = 0
    for path in _walk_files(folder):
        count += 1
        ds = read_header(path)
        if ds is not None and ds.get("SeriesInstanceUID"):
            groups.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    if count == 0:
        raise InputError("empty folder: no files to read as DICOM", folder)
    if not groups:
        raise InputError(f"no DICOM image files among {count} files", folder)
    series = []
    for uid, members in groups.items():
        first = members[0][1]
        series.append(
            DicomSeries(
                uid=uid,
                modality=str(first.get("Modality", "") or "?").upper(),
                number=_series_number(first),
                description=str(first.get("SeriesDescription", "") or ""),
                files=tuple(p for p, _ in members),
                headers=tuple(d for _, d in members),
            )
        )
    return sorted(series, key=lambda s: (s.modality, s.number.zfill(8), s.uid))


def _listing(series: list[DicomSeries]) -> str:
    # One line: errors are printed as a single line by the CLI.
    return "; ".join(f"[{s.summary()}]" for s in series) or "(no image series)"


def _select_series(
    series: list[DicomSeries], options: LoadOptions, folder: Path
) -> dict[str, DicomSeries]:
    """One CT and one PT series; `LayoutError` listing every series when that fails."""
    wanted = set(options.series)
    unknown = sorted(w for w in wanted if not any(w in (s.uid, s.number) for s in series))
    if unknown:
        raise LayoutError(
            f"no series matches --series {', '.join(unknown)}; the folder holds: "
            + _listing(series),
            folder,
        )
    chosen: dict[str, DicomSeries] = {}
    for modality, name in MODALITIES.items():
        pool = [s for s in series if s.modality == modality]
        picked = [s for s in pool if s.uid in wanted or s.number in wanted]
        pool = picked or pool
        if not pool:
            found = sorted({s.modality for s in series})
            raise LayoutError(
                f"no {name} ({modality}) series found (found {', '.join(found)}); a PET/CT "
                f"study needs one CT and one PT series. The folder holds: " + _listing(series),
                folder,
            )
        if len(pool) > 1:
            raise LayoutError(
                f"{len(pool)} {name} series, choose one with --series <SeriesNumber or "
                f"SeriesInstanceUID>. The folder holds: " + _listing(series),
                folder,
            )
        chosen[modality] = pool[0]
    return chosen


def _age_years(text: Any) -> float | None:
    """DICOM AS ``nnnD/W/M/Y`` → years."""
    value = str(text or "").strip().upper()
    per_year = {"Y": 1.0, "M": 12.0, "W": 365.25 / 7.0, "D": 365.25}
    if len(value) < 2 or value[-1] not in per_year or not value[:-1].isdigit():
        return None
    return int(value[:-1]) / per_year[value[-1]]


def _positive_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _patient(ds: Dataset, options: LoadOptions) -> dict[str, Any]:
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    height_m = _positive_float(ds.get("PatientSize"))
    return {
        "sex": sex if sex in ("M", "F") else None,
        "age": _age_years(ds.get("PatientAge")),
        "weight_kg": options.weight_kg or _positive_float(ds.get("PatientWeight")),
        "height_cm": height_m * 100.0 if height_m is not None else None,
    }


def load_dicom_study(path: StudyPath, options: LoadOptions) -> Study:
    """A PET/CT `Study` from a folder of DICOM files (see module doc)."""
    if isinstance(path, tuple):
        raise LayoutError("the DICOM reader takes one folder, not a pair of files")
    folder = Path(path)
    chosen = _select_series(scan_dicom_folder(folder), options, folder)
    ct_series, pt_series = chosen["CT"], chosen["PT"]
    scaling = pet_scaling(pt_series, options)  # before pixels: header problems fail fast
    ct, ct_uneven = read_series_volume(ct_series, options, Units.HU)
    pet_raw, pt_uneven = read_series_volume(pt_series, options, Units.SUVBW)
    pet = pet_raw.with_array(pet_raw.array * float(scaling.factor))
    pet.check_finite(str(pt_series.files[0].parent))
    header, ct_header = pt_series.first, ct_series.first
    day = parse_da(header.get("StudyDate") or ct_header.get("StudyDate"))
    maker = header.get("Manufacturer") or ct_header.get("Manufacturer")
    meta: dict[str, Any] = {
        "ct_series": ct_series.as_meta(),
        "pet_series": pt_series.as_meta(),
        "study_date": day.isoformat() if day is not None else None,
        "manufacturer": str(maker) if maker else None,
        **as_meta(scaling),
    }
    uneven = [r for r in (ct_uneven, pt_uneven) if r is not None]
    if uneven:
        meta["uneven_slices"] = uneven
    return Study(
        id=folder.resolve().name,
        ct=ct,
        pet=pet,
        layout="dicom",
        source=folder,
        suv=scaling.suv,
        meta=meta,
        **_patient(header, options),
    )


def detect_dicom(path: StudyPath) -> bool:
    """Is ``path`` a folder holding at least one DICOM file? (stops at the first one)"""
    if not isinstance(path, Path) or not path.is_dir():
        return False
    for file in _walk_files(path):
        head = _head(file)
        if _has_preamble(head) or _looks_like_bare_dicom(head):
            return True
    return False


def holds_dicom_study(path: Path) -> bool:
    """Does the folder tree hold both a CT and a PT series? Unreadable files are skipped:
    loading the study reports them precisely."""
    if not isinstance(path, Path) or not path.is_dir():
        return False
    seen: set[str] = set()
    for file in _walk_files(path):
        head = _head(file)
        if not (_has_preamble(head) or _looks_like_bare_dicom(head)):
            continue
        try:
            ds = pydicom.dcmread(
                file, stop_before_pixels=True, force=True, specific_tags=["Modality"]
            )
        except Exception:  # a damaged file is reported by load, not by a scan
            continue
        seen.add(str(ds.get("Modality", "")).upper())
        if {"CT", "PT"} <= seen:
            return True
    return False


DICOM_LAYOUT = register_layout(
    Layout(
        name="dicom",
        priority=90,
        description="a folder of DICOM files with one CT and one PT series",
        detect=detect_dicom,
        load=load_dicom_study,
        is_complete_study=holds_dicom_study,
    )
)
