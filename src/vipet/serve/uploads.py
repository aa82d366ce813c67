"""Uploaded studies, unpacked safely: a zip of a DICOM folder, or NIfTI files.

What is refused, each with a one-line reason (`UploadError`, HTTP 400 / 413):

- more bytes than the cap, in the upload or once a zip is unpacked (zip bombs);
- a zip that is not one, or a member whose name is absolute, climbs out with ``..``,
  is a link, or is not a plain file (zip slip);
- too many members;
- files of another kind than DICOM (in a zip) or NIfTI (``.nii`` / ``.nii.gz``);
- a study the readers cannot load (no CT, no PET, ...): the reader's own message.

Files are written under a fresh folder of the study store with names ViPET chooses, never
the uploaded names, so no upload can name a path on the server.
"""

from __future__ import annotations

import io
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from vipet.errors import ViPetError
from vipet.io.nifti import is_nifti_name

DICOM_MAGIC_OFFSET = 128


class UploadError(ViPetError):
    """An upload the service refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 512 * 1024**2
    """Largest upload, and largest unpacked zip."""
    max_files: int = 5000
    """Most members in a zip (a whole-body DICOM study is a few hundred to ~2000)."""


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes


def _safe_member(info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UploadError(f"zip member {info.filename!r} has an absolute path")
    if any(part == ".." for part in path.parts):
        raise UploadError(f"zip member {info.filename!r} climbs out of the archive (..)")
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the archiver wrote no file type
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        raise UploadError(f"zip member {info.filename!r} is not a plain file")
    return path


def unpack(uploads: list[Upload], folder: Path, limits: UploadLimits | None = None) -> list[Path]:
    """Write ``uploads`` into ``folder``; returns what to load (the DICOM folder, or the
    NIfTI files in upload order)."""
    lim = limits or UploadLimits()
    if not uploads:
        raise UploadError("no file uploaded: send a zip of a DICOM study or NIfTI files")
    total = sum(len(u.data) for u in uploads)
    if total > lim.max_bytes:
        raise UploadError(f"upload of {total} bytes exceeds the {lim.max_bytes}-byte cap", 413)
    folder.mkdir(parents=True, exist_ok=True)
    zips = [u for u in uploads if u.name.lower().endswith(".zip")]
    niftis = [u for u in uploads if is_nifti_name(Path(u.name))]
    others = [u.name for u in uploads if u not in zips and u not in niftis]
    if others:
        raise UploadError(f"{others[0]!r}: upload a .zip of DICOM files or .nii/.nii.gz files")
    if (zips and niftis) or len(zips) > 1:
        raise UploadError("upload one zip of a DICOM study, or NIfTI files, not both")
    if zips:
        return [_unzip(zips[0], folder / "dicom", lim)]
    if len(niftis) != 2:
        raise UploadError(
            f"a NIfTI study is two files, the CT and the PET; got {len(niftis)} "
            "(name them so 'ct' and 'pet' or 'suv' tell them apart, or send the CT first)"
        )
    roles = [_role(u.name) for u in niftis]
    if roles == ["pet", "ct"] or (roles[0] == "pet" and roles[1] != "pet"):
        niftis = niftis[::-1]  # the pair reader takes (CT, PET)
    out = []
    for u, role in zip(niftis, ("ct", "pet"), strict=True):
        suffix = ".nii.gz" if u.name.lower().endswith(".gz") else ".nii"
        path = folder / f"{role}{suffix}"
        path.write_bytes(u.data)
        out.append(path)
    return out


def _role(name: str) -> str:
    low = PurePosixPath(name.replace("\\", "/")).name.lower()
    if "pet" in low or "suv" in low or "_pt" in low or "_0001" in low:
        return "pet"
    if "ct" in low or "_0000" in low:
        return "ct"
    return "unknown"


def _unzip(upload: Upload, dest: Path, lim: UploadLimits) -> Path:
    try:
        archive = zipfile.ZipFile(io.BytesIO(upload.data))
    except zipfile.BadZipFile:
        raise UploadError(f"{upload.name!r} is not a zip file") from None
    with archive:
        members = archive.infolist()
        if len(members) > lim.max_files:
            raise UploadError(
                f"{upload.name!r} holds {len(members)} files (at most {lim.max_files})"
            )
        files = [(m, _safe_member(m)) for m in members if not m.is_dir()]
        unpacked = sum(m.file_size for m, _ in files)
        if unpacked > lim.max_bytes:
            raise UploadError(
                f"{upload.name!r} unpacks to {unpacked} bytes (cap {lim.max_bytes})", 413
            )
        if not files:
            raise UploadError(f"{upload.name!r} is empty")
        dest.mkdir(parents=True, exist_ok=True)
        written = 0
        for i, (member, _) in enumerate(files):
            data = archive.read(member)
            written += len(data)
            if written > lim.max_bytes:  # sizes in the header can lie
                raise UploadError(f"{upload.name!r} unpacks past the {lim.max_bytes}-byte cap", 413)
            if len(data) < DICOM_MAGIC_OFFSET + 4 or data[128:132] != b"DICM":
                if PurePosixPath(member.filename).name.startswith("."):
                    continue  # e.g. macOS resource forks
                raise UploadError(f"zip member {member.filename!r} is not a DICOM file")
            (dest / f"{i:05d}.dcm").write_bytes(data)
    return dest
