"""The ViMed-PET release (DOMAIN §2): reader, writer and the ``vimed`` layout.

On disk a release is a root folder with ``metadata.csv`` (one row per study; columns
``name, sex, height, weight, year, pet_path, ct_path, report_path, report_en_path``,
paths relative to the root), one ``.npz`` per volume (key ``data``, shape (D, H, W),
int16) and one report JSON per language.

Conventions ViPET's reader and writer share:

- **Values.** CT npz holds HU. PET npz holds raw scanner values in [0, 32767], *not*
  SUV, so the reader returns PET in `Units.RAW`. ViPET's writer turns SUVbw into raw with
  ``raw = SUV × PET_RAW_PER_SUV`` (SUV 0..`RAW_SUV_MAX` → 0..32767, negatives clipped
  to 0) and records the constant in an extra ``pet_raw_per_suv`` column; the reader still
  returns raw (the release's convention) and reports the constant in
  ``study.meta["pet_raw_per_suv"]`` so a caller may recover SUV.
- **Axes.** ``(D, H, W)`` with D increasing toward the feet (slice 0 at the head end),
  H toward the patient's posterior, W toward the patient's left. So direction columns
  are D = (0, 0, −1), H = (0, 1, 0), W = (1, 0, 0) in LPS (`VIMED_DIRECTION`). The writer
  reorients axis-aligned volumes into this order (no resampling); oblique ones are refused.
- **Geometry.** The public release stores no spacing. ViPET's writer adds optional
  columns ``ct_spacing`` / ``pet_spacing`` ("z y x", mm) and ``ct_origin`` /
  ``pet_origin`` ("x y z", LPS mm, centre of voxel 0); with them the geometry is
  ``study.meta["geometry"] = "from metadata"``. Without them it is ``"assumed"``: like
  the reference preprocessing, which resizes CT and PET to one grid, both volumes are
  taken to span the same physical box — an in-plane field of view of `DEFAULT_FOV_MM`
  and CT slices `DEFAULT_SLICE_MM` thick, the PET slice spacing scaled so it covers the
  same z extent, both boxes centred on LPS (0, 0, 0). Absolute positions are then
  meaningless, but CT and PET stay aligned with each other, which is what fusion needs.
- **Text.** Report JSON is read as UTF-8 and every string NFC-normalised, so Vietnamese
  compares exactly whatever normal form the file used.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vipet.errors import GeometryError, InputError, LayoutError
from vipet.io.atomic import atomic_output
from vipet.io.layouts import Layout, StudyPath, register_layout
from vipet.io.study import LoadOptions, Study
from vipet.io.volume import Units, Volume

METADATA = "metadata.csv"
REQUIRED_COLUMNS = (
    "name", "sex", "height", "weight", "year",
    "pet_path", "ct_path", "report_path", "report_en_path",
)  # fmt: skip
EXTRA_COLUMNS = ("ct_spacing", "pet_spacing", "ct_origin", "pet_origin", "pet_raw_per_suv")

RAW_MAX = 32767  # int16 ceiling of the release's PET values
RAW_SUV_MAX = 80.0  # SUV mapped to RAW_MAX by the writer: above tumours (≤ 25) and urine (≤ ~50)
PET_RAW_PER_SUV = RAW_MAX / RAW_SUV_MAX  # 409.6 raw units per SUV (0.0024 SUV steps)
CT_HU_RANGE = (-2000, 4095)  # the release's CT value range

DEFAULT_FOV_MM = 500.0
DEFAULT_SLICE_MM = 3.0
VIMED_DIRECTION = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
"""Direction columns D = (0,0,-1) (toward the feet), H = +y, W = +x, in LPS."""

_SEX = {"m": "M", "male": "M", "nam": "M", "f": "F", "female": "F", "nữ": "F", "nu": "F"}
_MONTH_RE = re.compile(r"TH[AÁ]NG[\s_-]*(\d{1,2})\b")


def nfc(value: Any) -> Any:
    """NFC-normalise every string in a JSON-like structure (keys included)."""
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, dict):
        return {nfc(k): nfc(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nfc(v) for v in value]
    return value


# --------------------------------------------------------------------------- metadata


def _metadata_path(path: Path) -> Path:
    return path if path.name == METADATA and path.is_file() else path / METADATA


def _read_metadata(root: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(columns, rows) of metadata.csv, every cell stripped and NFC-normalised."""
    meta_path = root / METADATA
    try:
        text = meta_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read ViMed-PET metadata ({exc})", meta_path) from exc
    reader = csv.DictReader(io.StringIO(text))
    columns = [nfc(c.strip()) for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InputError(f"metadata.csv lacks columns: {', '.join(missing)}", meta_path)
    reader.fieldnames = columns
    rows = [{k: nfc((v or "").strip()) for k, v in row.items() if k} for row in reader]
    return columns, rows


def _row_ids(rows: list[dict[str, str]]) -> list[str]:
    """Study ids: the name, with ``#2``, ``#3`` … for repeats so each row stays reachable."""
    seen: dict[str, int] = {}
    ids = []
    for row in rows:
        name = row["name"]
        seen[name] = seen.get(name, 0) + 1
        ids.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return ids


def _parse_float(text: str, what: str, meta_path: Path) -> float | None:
    if not text:
        return None
    try:
        value = float(text.replace(",", "."))  # Vietnamese decimal comma
    except ValueError as exc:
        raise InputError(f"{what} is not a number: {text!r}", meta_path) from exc
    return value if value > 0 else None  # 0 is how anonymised exports write "unknown"


def _parse_triplet(text: str, what: str, meta_path: Path) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        values = ()
    if len(values) != 3 or not all(np.isfinite(values)):
        raise InputError(f"{what} must be three numbers, got {text!r}", meta_path)
    return values  # type: ignore[return-value]


def _parse_month(*paths: str) -> int | None:
    for rel in paths:
        for segment in rel.replace("\\", "/").split("/"):
            m = _MONTH_RE.search(unicodedata.normalize("NFC", segment).upper())
            if m and 1 <= int(m[1]) <= 12:
                return int(m[1])
    return None


# --------------------------------------------------------------------------- files


def _read_npz(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError("ViMed-PET volume file not found", path)
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):  # a bare .npy array
            raise InputError("not an npz archive (expected key 'data')", path)
        with archive:
            if "data" not in archive.files:
                raise InputError(f"npz has no 'data' array (keys: {archive.files})", path)
            data = archive["data"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"cannot read npz ({exc})", path) from exc
    if data.ndim != 3:
        raise InputError(f"'data' must be 3D (D, H, W), got shape {data.shape}", path)
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise InputError(f"'data' must be numeric, got {data.dtype}", path)
    return data.astype(np.float32)


def _read_report(root: Path, rel: str) -> dict[str, Any] | None:
    if not rel:
        return None
    path = root / rel
    try:
        report = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read report JSON ({exc})", path) from exc
    if not isinstance(report, dict):
        raise InputError("report JSON must be an object", path)
    return nfc(report)


def _volume_paths(root: Path, row: dict[str, str], meta_path: Path) -> tuple[Path, Path]:
    for key in ("ct_path", "pet_path"):
        if not row[key]:
            raise InputError(f"row {row['name']!r} has an empty {key}", meta_path)
    return root / row["ct_path"], root / row["pet_path"]


# --------------------------------------------------------------------------- geometry


def _centred_origin(shape: tuple[int, ...], spacing: tuple[float, ...]) -> tuple[float, ...]:
    """Voxel-0 origin that puts the grid's centre at LPS (0, 0, 0)."""
    half = np.asarray(spacing) * (np.asarray(shape) - 1) / 2.0
    return tuple((-(VIMED_DIRECTION @ half)).tolist())


def _geometry(
    row: dict[str, str], ct_shape: tuple[int, ...], pet_shape: tuple[int, ...], meta_path: Path
) -> tuple[tuple, tuple, tuple, tuple, str]:
    """(ct_spacing, ct_origin, pet_spacing, pet_origin, how) for one row."""
    name = row["name"]
    ct_sp, pet_sp = row.get("ct_spacing", ""), row.get("pet_spacing", "")
    if bool(ct_sp) != bool(pet_sp):
        raise InputError(f"row {name!r} gives only one of ct_spacing / pet_spacing", meta_path)
    if ct_sp:
        ct_spacing = _parse_triplet(ct_sp, f"row {name!r} ct_spacing", meta_path)
        pet_spacing = _parse_triplet(pet_sp, f"row {name!r} pet_spacing", meta_path)
        how = "from metadata"
    else:
        # One physical box for both (see module doc): FOV in-plane, CT slice thickness.
        z_extent = ct_shape[0] * DEFAULT_SLICE_MM
        ct_spacing = (DEFAULT_SLICE_MM, DEFAULT_FOV_MM / ct_shape[1], DEFAULT_FOV_MM / ct_shape[2])
        pet_spacing = (
            z_extent / pet_shape[0],
            DEFAULT_FOV_MM / pet_shape[1],
            DEFAULT_FOV_MM / pet_shape[2],
        )
        how = "assumed"
    origins = []
    for key, shape, spacing in (("ct", ct_shape, ct_spacing), ("pet", pet_shape, pet_spacing)):
        text = row.get(f"{key}_origin", "")
        if text:
            origins.append(_parse_triplet(text, f"row {name!r} {key}_origin", meta_path))
        else:
            origins.append(_centred_origin(shape, spacing))
    return ct_spacing, origins[0], pet_spacing, origins[1], how


# --------------------------------------------------------------------------- layout


def _vimed_detect(path: StudyPath) -> bool:
    if not isinstance(path, Path):
        return False
    meta_path = _metadata_path(path)
    if not meta_path.is_file():
        return False
    try:
        with meta_path.open(encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    columns = {nfc(c.strip()) for c in header}
    return all(c in columns for c in REQUIRED_COLUMNS)


def _root(path: Path) -> Path:
    return path.parent if path.name == METADATA and path.is_file() else path


def _vimed_list(root: Path) -> list[str]:
    return _row_ids(_read_metadata(_root(root))[1])


def _pick_row(root: Path, rows: list[dict[str, str]], study_id: str | None) -> tuple[str, dict]:
    ids = _row_ids(rows)
    shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
    if study_id is None:
        if len(rows) == 1:
            return ids[0], rows[0]
        raise LayoutError(
            f"release holds {len(rows)} studies; choose one with --study NAME: {shown or 'none'}",
            root / METADATA,
        )
    wanted = nfc(study_id)
    if wanted not in ids:
        raise LayoutError(
            f"no study named {study_id!r}; available: {shown or 'none'}", root / METADATA
        )
    index = ids.index(wanted)
    return wanted, rows[index]


def _patient_fields(row: dict[str, str], meta_path: Path) -> dict[str, Any]:
    name = row["name"]
    sex_text = row["sex"]
    year_text = row["year"]
    try:
        year = int(float(year_text)) if year_text else None
    except ValueError as exc:
        raise InputError(f"row {name!r} year is not a number: {year_text!r}", meta_path) from exc
    return {
        "sex": _SEX.get(sex_text.lower()) if sex_text else None,
        "height_cm": _parse_float(row["height"], f"row {name!r} height", meta_path),
        "weight_kg": _parse_float(row["weight"], f"row {name!r} weight", meta_path),
        "year": year,
    }


def _vimed_load(path: StudyPath, options: LoadOptions) -> Study:
    if not isinstance(path, Path):
        raise LayoutError("a ViMed-PET release is one folder, not a pair of files")
    root = _root(path)
    meta_path = root / METADATA
    _, rows = _read_metadata(root)
    study_id, row = _pick_row(root, rows, options.study_id)
    ct_file, pet_file = _volume_paths(root, row, meta_path)
    ct_data, pet_data = _read_npz(ct_file), _read_npz(pet_file)
    ct_sp, ct_org, pet_sp, pet_org, how = _geometry(row, ct_data.shape, pet_data.shape, meta_path)
    try:
        ct = Volume(ct_data, ct_sp, ct_org, VIMED_DIRECTION, "CT", Units.HU)
        pet = Volume(pet_data, pet_sp, pet_org, VIMED_DIRECTION, "PT", Units.RAW)
    except GeometryError as exc:
        raise GeometryError(f"row {row['name']!r}: {exc}", meta_path) from exc
    patient = _patient_fields(row, meta_path)
    meta: dict[str, Any] = {
        "year": patient["year"],
        "month": _parse_month(row["pet_path"], row["ct_path"]),
        "geometry": how,
        **{k: row[k] for k in ("pet_path", "ct_path", "report_path", "report_en_path")},
    }
    per_suv = _parse_float(row.get("pet_raw_per_suv", ""), "pet_raw_per_suv", meta_path)
    if per_suv is not None:
        meta["pet_raw_per_suv"] = per_suv
    return Study(
        id=study_id,
        ct=ct,
        pet=pet,
        layout="vimed",
        source=root,
        sex=patient["sex"],
        weight_kg=patient["weight_kg"],
        height_cm=patient["height_cm"],
        report=_read_report(root, row["report_path"]),
        report_en=_read_report(root, row["report_en_path"]),
        meta=meta,
    )


def _vimed_files(path: StudyPath, study_id: str | None) -> list[Path]:
    """metadata.csv plus the row's volumes and reports, for cache keys (not the whole
    release: one study's key must not depend on the other 2,756)."""
    assert isinstance(path, Path)
    root = _root(path)
    _, row = _pick_row(root, _read_metadata(root)[1], study_id)
    files = [root / METADATA, *_volume_paths(root, row, root / METADATA)]
    files += [root / row[k] for k in ("report_path", "report_en_path") if row.get(k)]
    return [f for f in files if f.is_file()]


VIMED = register_layout(
    Layout(
        name="vimed",
        priority=10,
        description="ViMed-PET release: folder with metadata.csv (name, ..., pet_path, ct_path)",
        detect=_vimed_detect,
        load=_vimed_load,
        list_studies=_vimed_list,
        study_files=_vimed_files,
    )
)


# --------------------------------------------------------------------------- writer


def to_vimed_axes(volume: Volume) -> Volume:
    """The same voxels permuted/flipped into the ViMed axis order (`VIMED_DIRECTION`).

    Exact (no interpolation); refuses volumes whose axes are not aligned with LPS axes.
    """
    m = VIMED_DIRECTION.T @ volume.direction  # m[t, k]: target axis t · source axis k
    perm = [int(np.argmax(np.abs(m[t]))) for t in range(3)]
    signs = [float(np.sign(m[t, perm[t]])) for t in range(3)]
    if sorted(perm) != [0, 1, 2] or min(abs(m[t, perm[t]]) for t in range(3)) < 1 - 1e-3:
        raise GeometryError(
            f"{volume.modality} volume is oblique; resample it onto an axis-aligned grid "
            "before writing a ViMed-PET entry"
        )
    array = np.transpose(volume.array, perm)
    flips = tuple(t for t in range(3) if signs[t] < 0)
    if flips:
        array = np.flip(array, axis=flips)
    first = [0 if signs[t] > 0 else volume.shape[perm[t]] - 1 for t in range(3)]
    source_index = np.zeros(3)
    for t in range(3):
        source_index[perm[t]] = first[t]
    origin = volume.grid.index_to_world(source_index)
    spacing = tuple(volume.spacing[k] for k in perm)
    return Volume(
        np.ascontiguousarray(array), spacing, origin, VIMED_DIRECTION, volume.modality, volume.units
    )


def _pet_to_raw(pet: Volume, meta: dict[str, Any]) -> tuple[np.ndarray, str]:
    """int16 raw PET and the pet_raw_per_suv cell ('' when unknown)."""
    pet.require_units(Units.SUVBW, Units.RAW, purpose="writing a ViMed-PET entry")
    if pet.units is Units.SUVBW:
        values, per_suv = pet.array * PET_RAW_PER_SUV, repr(PET_RAW_PER_SUV)
    else:
        known = meta.get("pet_raw_per_suv")
        values, per_suv = pet.array, ("" if known is None else repr(float(known)))
    raw = np.clip(np.rint(np.asarray(values, dtype=np.float32)), 0, RAW_MAX).astype(np.int16)
    return raw, per_suv


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write via ``write(binary_file)``, atomically (see `vipet.io.atomic`)."""
    with atomic_output(path) as tmp, tmp.open("wb") as fh:
        write(fh)


def _write_npz(path: Path, data: np.ndarray) -> None:
    """An npz with one array ``data`` (what `np.load` reads), deflated at level 1: about
    5x faster than `np.savez_compressed`'s default level for a few % more bytes, and with
    a fixed timestamp so the same array gives the same bytes."""

    def write(fh: Any) -> None:
        info = zipfile.ZipInfo("data.npy", date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        info._compresslevel = 1  # a ZipInfo carries its own level (the archive's is ignored)
        with (
            zipfile.ZipFile(fh, "w", compresslevel=1) as zf,
            zf.open(info, "w", force_zip64=True) as f,
        ):
            np.lib.format.write_array(f, np.ascontiguousarray(data), allow_pickle=False)

    _atomic_write(path, write)


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    text = json.dumps(obj, ensure_ascii=False, indent=2) + "\n"
    _atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def _fmt_triplet(values: Any) -> str:
    return " ".join(repr(float(v)) for v in values)


def _fmt_number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def update_vimed_metadata(root: Path, new_rows: list[dict[str, str]]) -> None:
    """Add or replace rows of ``root/metadata.csv`` (by name), in one atomic rewrite.

    Kept apart from the file writing so parallel writers can write their volumes and a
    single process then records all rows at once (no read-modify-write race)."""
    root = Path(root)
    meta_path = root / METADATA
    columns, rows = _read_metadata(root) if meta_path.is_file() else ([], [])
    columns += [c for c in (*REQUIRED_COLUMNS, *EXTRA_COLUMNS) if c not in columns]
    for row in new_rows:
        names = [r["name"] for r in rows]
        if row["name"] in names:
            rows[names.index(row["name"])] = {**rows[names.index(row["name"])], **row}
        else:
            rows.append(row)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    _atomic_write(meta_path, lambda fh: fh.write(buffer.getvalue().encode("utf-8")))


def write_vimed_entry(
    root: Path, study: Study, name: str, *, year: int, month: int | None = None
) -> None:
    """Add (or replace) one study in a ViMed-PET release under ``root``.

    Writes CT (int16 HU, clipped to `CT_HU_RANGE`) and PET (int16 raw, see module doc)
    npz files reoriented to the ViMed axis order, the report JSONs, and the metadata row
    with ViPET's geometry columns. Every file is written atomically.
    """
    update_vimed_metadata(root, [write_vimed_files(root, study, name, year=year, month=month)])


def write_vimed_files(
    root: Path, study: Study, name: str, *, year: int, month: int | None = None
) -> dict[str, str]:
    """The files of one entry (volumes, reports), without touching metadata.csv; returns
    the metadata row for `update_vimed_metadata`."""
    root = Path(root)
    name = nfc(name)
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise InputError(f"ViMed-PET entry name must be a plain file name, got {name!r}", root)
    if month is not None and not 1 <= month <= 12:
        raise InputError(f"month must be 1..12, got {month}", root)
    folder = f"{year}/THANG {month}" if month is not None else f"{year}"
    ct, pet = to_vimed_axes(study.ct), to_vimed_axes(study.pet)
    # float32 holds every int16 exactly and halves the memory of float64 for 512² CTs.
    ct_raw = np.clip(np.rint(ct.array.astype(np.float32)), *CT_HU_RANGE).astype(np.int16)
    pet_raw, per_suv = _pet_to_raw(pet, study.meta)
    row = {
        "name": name,
        "sex": study.sex or "",
        "height": _fmt_number(study.height_cm),
        "weight": _fmt_number(study.weight_kg),
        "year": str(year),
        "ct_path": f"{folder}/CT/{name}.npz",
        "pet_path": f"{folder}/PET/{name}.npz",
        "report_path": f"{folder}/reports/{name}.json" if study.report is not None else "",
        "report_en_path": f"{folder}/reports/{name}_en.json" if study.report_en is not None else "",
        "ct_spacing": _fmt_triplet(ct.spacing),
        "pet_spacing": _fmt_triplet(pet.spacing),
        "ct_origin": _fmt_triplet(ct.origin),
        "pet_origin": _fmt_triplet(pet.origin),
        "pet_raw_per_suv": per_suv,
    }
    _write_npz(root / row["ct_path"], ct_raw)
    _write_npz(root / row["pet_path"], pet_raw)
    if study.report is not None:
        _write_json(root / row["report_path"], nfc(study.report))
    if study.report_en is not None:
        _write_json(root / row["report_en_path"], nfc(study.report_en))
    return row
