"""NIfTI volumes and the NIfTI-based study layouts: AutoPET, nnU-Net and explicit pairs.

NIfTI stores voxels x-fastest as ``(i, j, k)`` with an affine to **RAS** world space.
ViPET holds arrays as ``(D, H, W)`` in **LPS** (see `vipet.io.volume`). The reader turns
one into the other without resampling or reorienting the voxels:

- the array is transposed ``(i, j, k) → (k, j, i)``, so D = k, H = j, W = i;
- the affine column of NIfTI axis ``a`` becomes the direction column of our axis
  ``2 - a`` with x and y negated (RAS → LPS), its norm the spacing;
- the origin is the LPS position of voxel 0, i.e. the affine translation with x, y negated.

`write_nifti_volume` is the exact inverse. NIfTI-1 keeps the affine in float32, so a
round trip reproduces geometry to float32 precision (~1e-7 relative).

Layouts registered here (detection order: autopet, nnunet, nifti-pair):

- ``autopet``: ``Patient/Study/{CTres,SUV[,SEG]}.nii.gz`` (DOMAIN §6).
- ``nnunet``: a folder of ``<case>_0000`` (CT) / ``<case>_0001`` (PET) files, or one such
  file; labels from a sibling ``labels*`` folder.
- ``nifti-pair``: an explicit ``(ct_path, pet_path)`` tuple.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from vipet.errors import GeometryError, InputError, LayoutError
from vipet.io.atomic import atomic_output
from vipet.io.layouts import Layout, StudyPath, register_layout
from vipet.io.study import LoadOptions, Study
from vipet.io.volume import Units, Volume

NIFTI_SUFFIXES = (".nii.gz", ".nii")
# RAS ↔ LPS: negate x and y. Its own inverse.
_FLIP_XY = np.diag([-1.0, -1.0, 1.0])
# Errors nibabel and the gzip/zlib layers raise for broken or foreign files.
_READ_ERRORS = (
    nib.filebasedimages.ImageFileError,
    nib.spatialimages.HeaderDataError,
    nib.spatialimages.ImageDataError,
    OSError,
    EOFError,
    ValueError,
    zlib.error,
    gzip.BadGzipFile,
)


def is_nifti_name(path: Path) -> bool:
    """True for file names ending in ``.nii`` or ``.nii.gz`` (no file access)."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: Path) -> str:
    """File name without its ``.nii`` / ``.nii.gz`` suffix."""
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


# --------------------------------------------------------------------------- volumes


def _load_image(path: Path) -> nib.Nifti1Pair:
    if not path.is_file():
        raise InputError("no such NIfTI file", path)
    try:
        img = nib.load(str(path), mmap=False)
    except _READ_ERRORS as exc:
        raise InputError(f"not a readable NIfTI file ({exc})", path) from exc
    if not isinstance(img, nib.Nifti1Pair):  # covers NIfTI-1/2, single file or pair
        raise InputError(f"not a NIfTI file (nibabel read it as {type(img).__name__})", path)
    return img


def _read_voxels(img: nib.Nifti1Pair, path: Path, label: bool) -> np.ndarray:
    """Voxels as (i, j, k), scaled by scl_slope/inter; integer labels for masks."""
    shape = img.shape
    if len(shape) < 3 or any(s != 1 for s in shape[3:]):
        raise InputError(f"expected a 3D volume, got shape {shape}", path)
    try:
        data = np.asanyarray(img.dataobj) if label else img.get_fdata(dtype=np.float32)
    except _READ_ERRORS as exc:  # a truncated file fails here, not at nib.load
        raise InputError(
            f"cannot read voxel data, file truncated or corrupt ({exc})", path
        ) from exc
    data = np.asarray(data).reshape(shape[:3])
    return _as_labels(data, path) if label else data


def _as_labels(data: np.ndarray, path: Path) -> np.ndarray:
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            raise GeometryError("label mask holds NaN/inf voxels", path)
        rounded = np.rint(data)
        # Masks saved as float (common) are fine; soft/probabilistic masks are not labels.
        if np.any(np.abs(rounded - data) > 1e-3):
            raise InputError("label mask holds non-integer values", path)
        data = rounded
    lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
    dtype = np.uint8 if lo >= 0 and hi <= 255 else np.int32
    return data.astype(dtype)


def _geometry_from_affine(
    affine: np.ndarray, path: Path
) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray]:
    """RAS (i,j,k) affine → LPS (D,H,W) spacing, origin, direction."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise GeometryError("affine is not a finite 4x4 matrix", path)
    # Column for our axis n is NIfTI column 2 - n, in LPS.
    cols = _FLIP_XY @ affine[:3, :3][:, ::-1]
    spacing = np.linalg.norm(cols, axis=0)
    if np.any(spacing < 1e-6) or abs(np.linalg.det(cols)) < 1e-9 * float(np.prod(spacing)):
        raise GeometryError(f"degenerate affine (voxel sizes {spacing.round(6).tolist()})", path)
    direction = cols / spacing[None, :]
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
        raise GeometryError("affine axes are not orthogonal (sheared grid)", path)
    origin = _FLIP_XY @ affine[:3, 3]
    return tuple(spacing.tolist()), tuple(origin.tolist()), direction


def read_nifti_volume(path: str | Path, modality: str, units: Units) -> Volume:
    """Read one NIfTI file as a `Volume` in (D, H, W) + LPS, keeping its voxel order.

    Images are read as float32 (scl_slope/inter applied); ``units=Units.LABEL`` reads
    integer labels instead. Raises `InputError` for a missing, foreign, truncated or non-3D
    file and `GeometryError` for NaN/inf voxels or a degenerate affine; both name the file.
    """
    p = Path(path)
    img = _load_image(p)
    units = Units(units)
    data = _read_voxels(img, p, label=units is Units.LABEL)
    spacing, origin, direction = _geometry_from_affine(img.affine, p)
    array = np.ascontiguousarray(data.transpose(2, 1, 0))
    try:
        volume = Volume(array, spacing, origin, direction, modality, units)
    except GeometryError as exc:
        raise GeometryError(str(exc), p) from exc
    volume.check_finite(str(p))
    return volume


def volume_affine_ras(volume: Volume) -> np.ndarray:
    """The NIfTI (RAS, (i,j,k) = (W,H,D)) affine of a volume: inverse of the reader."""
    lps = volume.affine
    out = np.eye(4)
    out[:3, :3] = _FLIP_XY @ lps[:3, :3][:, ::-1]
    out[:3, 3] = _FLIP_XY @ lps[:3, 3]
    return out


def write_nifti_volume(volume: Volume, path: str | Path) -> None:
    """Write a `Volume` as NIfTI-1 (``.nii.gz`` or ``.nii``), atomically.

    The voxel type is kept (bool becomes uint8) without intensity scaling, so
    `read_nifti_volume` returns the same array and geometry.
    """
    p = Path(path)
    if not is_nifti_name(p):
        raise InputError("NIfTI output must end in .nii.gz or .nii", p)
    array = volume.array.astype(np.uint8) if volume.array.dtype == bool else volume.array
    data = np.ascontiguousarray(array.transpose(2, 1, 0))
    affine = volume_affine_ras(volume)
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.header.set_xyzt_units("mm")
    # Both forms, "scanner" code: readers that prefer qform (some ITK builds) agree.
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    suffix = ".nii.gz" if p.name.lower().endswith(".nii.gz") else ".nii"
    with atomic_output(p, suffix=suffix) as tmp:
        nib.save(img, tmp)


def _pet_units(options: LoadOptions) -> Units:
    return options.pet_units if options.pet_units is not None else Units.SUVBW


def _read_ct(path: Path) -> Volume:
    return read_nifti_volume(path, "CT", Units.HU)


def _read_mask(path: Path) -> Volume:
    return read_nifti_volume(path, "SEG", Units.LABEL)


def _require_same_grid(a: Volume, a_path: Path, b: Volume, b_path: Path) -> None:
    if a.grid.same_as(b.grid):
        return
    what = "shapes differ" if a.shape != b.shape else "shapes match but affines differ"
    raise GeometryError(
        f"{a_path} (shape {a.shape}) and {b_path} (shape {b.shape}) must share one grid: {what}"
    )


# --------------------------------------------------------------------------- AutoPET

AUTOPET_CT = "CTres.nii.gz"
AUTOPET_PET = "SUV.nii.gz"
AUTOPET_SEG = "SEG.nii.gz"


def _autopet_detect(path: StudyPath) -> bool:
    return (
        isinstance(path, Path)
        and path.is_dir()
        and (path / AUTOPET_CT).is_file()
        and (path / AUTOPET_PET).is_file()
    )


def _autopet_load(path: StudyPath, options: LoadOptions) -> Study:
    if not isinstance(path, Path) or not path.is_dir():
        raise LayoutError(f"an AutoPET study is one folder, got {path}")
    ct_path, pet_path, seg_path = (path / n for n in (AUTOPET_CT, AUTOPET_PET, AUTOPET_SEG))
    for needed in (ct_path, pet_path):
        if not needed.is_file():
            raise InputError(f"AutoPET study folder lacks {needed.name}", needed)
    ct = _read_ct(ct_path)
    pet = read_nifti_volume(pet_path, "PT", _pet_units(options))
    _require_same_grid(ct, ct_path, pet, pet_path)
    mask = None
    if seg_path.is_file():
        mask = _read_mask(seg_path)
        _require_same_grid(pet, pet_path, mask, seg_path)
    parts = Path(os.path.abspath(path)).parts  # abspath, not resolve: keep symlinked names
    study_id = "/".join(parts[-2:])
    files = {"ct": ct_path.name, "pet": pet_path.name}
    if mask is not None:
        files["seg"] = seg_path.name
    return Study(
        id=study_id,
        ct=ct,
        pet=pet,
        layout="autopet",
        source=path,
        lesion_mask=mask,
        meta={"files": files},
    )


# --------------------------------------------------------------------------- nnU-Net

_NNUNET_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.nii(?:\.gz)?$", re.IGNORECASE)
NNUNET_CT_CHANNEL = "0000"
NNUNET_PET_CHANNEL = "0001"


def _nnunet_match(path: Path) -> tuple[str, str] | None:
    """(case, channel) for a CT/PET channel file name, else None."""
    m = _NNUNET_RE.match(path.name)
    if m is None or m["channel"] not in (NNUNET_CT_CHANNEL, NNUNET_PET_CHANNEL):
        return None
    return m["case"], m["channel"]


def _nnunet_channels(folder: Path) -> dict[str, dict[str, Path]]:
    """case → {channel: file} for the CT/PET channel files directly in ``folder``."""
    cases: dict[str, dict[str, Path]] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            hit = _nnunet_match(Path(entry.name))
            if hit is not None and entry.is_file():
                cases.setdefault(hit[0], {})[hit[1]] = folder / entry.name
    return cases


def _nnunet_detect(path: StudyPath) -> bool:
    if not isinstance(path, Path):
        return False
    if path.is_file():
        return _nnunet_match(path) is not None
    if not path.is_dir():
        return False
    with os.scandir(path) as entries:  # stop at the first channel file: keep it cheap
        return any(_nnunet_match(Path(e.name)) is not None and e.is_file() for e in entries)


def _nnunet_list(root: Path) -> list[str]:
    """Case ids with both channels. For a single channel file: that file's case (if its
    sibling exists), so `find_studies` on one file still yields one loadable reference."""
    if root.is_file():
        hit = _nnunet_match(root)
        if hit is None:
            return []
        channels = _nnunet_channels(root.parent).get(hit[0], {})
        return [hit[0]] if len(channels) == 2 else []
    cases = _nnunet_channels(root)
    return sorted(c for c, ch in cases.items() if len(ch) == 2)


def _nnunet_pick(folder: Path, options: LoadOptions) -> str:
    cases = _nnunet_channels(folder)
    complete = sorted(c for c, ch in cases.items() if len(ch) == 2)
    shown = ", ".join(complete[:5]) + (", ..." if len(complete) > 5 else "")
    if options.study_id is not None:
        if options.study_id not in cases:
            raise LayoutError(
                f"no nnU-Net case {options.study_id!r} here; available: {shown or 'none'}",
                folder,
            )
        return options.study_id
    if len(cases) == 1:
        return next(iter(cases))
    if not cases:
        raise LayoutError("no <case>_0000 / <case>_0001 NIfTI files here", folder)
    raise LayoutError(
        f"folder holds {len(cases)} nnU-Net cases; choose one with --study NAME: {shown}", folder
    )


def _channel_file(folder: Path, case: str, channel: str) -> Path:
    for suffix in NIFTI_SUFFIXES:
        candidate = folder / f"{case}_{channel}{suffix}"
        if candidate.is_file():
            return candidate
    missing = folder / f"{case}_{channel}.nii.gz"
    kind = "CT" if channel == NNUNET_CT_CHANNEL else "PET"
    raise InputError(f"nnU-Net case {case!r} lacks its {kind} channel file", missing)


def _nnunet_label(folder: Path, case: str) -> Path | None:
    # nnU-Net pairs imagesTr/labelsTr, imagesTs/labelsTs under one dataset folder.
    if not folder.name.startswith("images"):
        return None
    labels = folder.parent / ("labels" + folder.name[len("images") :])
    for suffix in NIFTI_SUFFIXES:
        candidate = labels / f"{case}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _nnunet_load(path: StudyPath, options: LoadOptions) -> Study:
    if not isinstance(path, Path):
        raise LayoutError("an nnU-Net study is a folder or one channel file, not a pair")
    if path.is_file():
        hit = _nnunet_match(path)
        if hit is None:
            raise LayoutError("not an nnU-Net <case>_0000/_0001 NIfTI file", path)
        folder, case = path.parent, hit[0]
        if options.study_id is not None and options.study_id != case:
            raise LayoutError(f"file belongs to case {case!r}, not {options.study_id!r}", path)
    else:
        folder, case = path, _nnunet_pick(path, options)
    ct_path = _channel_file(folder, case, NNUNET_CT_CHANNEL)
    pet_path = _channel_file(folder, case, NNUNET_PET_CHANNEL)
    label_path = _nnunet_label(folder, case)
    mask = _read_mask(label_path) if label_path is not None else None
    files = {"ct": ct_path.name, "pet": pet_path.name}
    if label_path is not None:
        files["seg"] = str(label_path.relative_to(folder.parent))
    return Study(
        id=case,
        ct=_read_ct(ct_path),
        pet=read_nifti_volume(pet_path, "PT", _pet_units(options)),
        layout="nnunet",
        source=path,
        lesion_mask=mask,
        meta={"files": files},
    )


# --------------------------------------------------------------------------- NIfTI pair


def _nnunet_files(path: StudyPath, study_id: str | None) -> list[Path]:
    """The channel (and label) files of one case, for cache keys."""
    assert isinstance(path, Path)
    folder = path.parent if path.is_file() else path
    case = study_id if study_id is not None else _nnunet_pick(folder, LoadOptions())
    files = [_channel_file(folder, case, ch) for ch in (NNUNET_CT_CHANNEL, NNUNET_PET_CHANNEL)]
    label = _nnunet_label(folder, case)
    return files + ([label] if label is not None else [])


def _pair_detect(path: StudyPath) -> bool:
    return (
        isinstance(path, tuple)
        and len(path) == 2
        and all(is_nifti_name(p) and p.is_file() for p in path)
    )


def _pair_load(path: StudyPath, options: LoadOptions) -> Study:
    if not isinstance(path, tuple) or len(path) != 2:
        raise LayoutError(f"a NIfTI pair is a (CT, PET) tuple of files, got {path}")
    ct_path, pet_path = path
    ct = _read_ct(ct_path)
    # Different grids are expected: preprocessing aligns them in world space.
    pet = read_nifti_volume(pet_path, "PT", _pet_units(options))
    return Study(
        id=nifti_stem(ct_path),
        ct=ct,
        pet=pet,
        layout="nifti-pair",
        source=ct_path.parent,
        meta={"files": {"ct": str(ct_path), "pet": str(pet_path)}},
    )


AUTOPET = register_layout(
    Layout(
        name="autopet",
        priority=20,
        description="AutoPET study folder with CTres.nii.gz + SUV.nii.gz [+ SEG.nii.gz]",
        detect=_autopet_detect,
        load=_autopet_load,
    )
)
NNUNET = register_layout(
    Layout(
        name="nnunet",
        priority=30,
        description="nnU-Net folder of <case>_0000 (CT) / <case>_0001 (PET) NIfTI files",
        detect=_nnunet_detect,
        load=_nnunet_load,
        list_studies=_nnunet_list,
        study_files=_nnunet_files,
    )
)
NIFTI_PAIR = register_layout(
    Layout(
        name="nifti-pair",
        priority=40,
        description="(CT, PET) pair of NIfTI files",
        detect=_pair_detect,
        load=_pair_load,
    )
)
