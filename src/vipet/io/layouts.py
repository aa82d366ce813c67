"""One entry point for every on-disk layout: `load_study` detects which reader fits.

Readers register a `Layout` here (see `vipet.io.dicom`, `vipet.io.nifti`,
`vipet.io.vimed`). Detection asks each layout in registration order, most specific first,
so a ViMed-PET release (which holds npz files) is never mistaken for something else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from vipet.errors import InputError, LayoutError
from vipet.io.study import LoadOptions, Study

StudyPath = Path | tuple[Path, Path]


@dataclass(frozen=True)
class Layout:
    """A reader for one on-disk layout."""

    name: str
    description: str
    detect: Callable[[StudyPath], bool]
    """Cheap check (no pixel data read): is this path a study, or a study collection, of
    this layout?"""
    load: Callable[[StudyPath, LoadOptions], Study]
    list_studies: Callable[[Path], list[str]] | None = None
    """For collection layouts (one root, many studies): the study ids under ``root``,
    which `LoadOptions.study_id` selects. ``None`` for one-study-per-path layouts."""
    is_complete_study: Callable[[Path], bool] | None = None
    """Stricter check used when scanning a dataset folder: does this folder hold one whole
    study (e.g. both a CT and a PT DICOM series), rather than one series of it? Defaults
    to ``detect``. `load` still gives the precise error for an incomplete study."""

    priority: int = 50
    """Detection order, lowest first: specific layouts before generic ones, so a ViMed-PET
    release or an AutoPET folder is never taken for something else, whatever order the
    reader modules happened to be imported in."""
    study_files: Callable[[StudyPath, str | None], list[Path]] | None = None
    """The files one study is read from (for cache keys). Defaults to every file under
    the path; collection layouts give just the study's own files."""

    def holds_study(self, path: Path) -> bool:
        check = self.is_complete_study or self.detect
        return check(path)


@dataclass(frozen=True)
class StudyRef:
    """Where one study of a dataset lives: a path, its layout, and an id inside it."""

    path: StudyPath
    layout: str
    study_id: str | None = None
    root: Path | None = None  # the dataset folder it was found under, for naming

    @property
    def name(self) -> str:
        """The study id in a collection, else the path relative to the dataset root
        (AutoPET's "<patient>/<study>" and not just the repeated study-folder name)."""
        if self.study_id is not None:
            return self.study_id
        p = self.path[0] if isinstance(self.path, tuple) else self.path
        if self.root is not None and p != self.root and p.is_relative_to(self.root):
            return p.relative_to(self.root).as_posix()
        return p.name

    def load(self, options: LoadOptions | None = None) -> Study:
        opts = options or LoadOptions()
        if self.study_id is not None:
            opts = replace(opts, study_id=self.study_id)
        return LAYOUTS[self.layout].load(self.path, opts)


LAYOUTS: dict[str, Layout] = {}


def register_layout(layout: Layout) -> Layout:
    if layout.name in LAYOUTS:
        raise ValueError(f"layout {layout.name!r} registered twice")
    LAYOUTS[layout.name] = layout
    # Keep the registry in detection order (stable for equal priorities).
    ordered = sorted(LAYOUTS.values(), key=lambda lay: lay.priority)
    LAYOUTS.clear()
    LAYOUTS.update((lay.name, lay) for lay in ordered)
    return layout


def _ensure_builtin() -> None:
    # Importing the reader modules registers them (each with its detection priority).
    from vipet.io import dicom, nifti, vimed, vipet_dataset  # noqa: F401


def _normalise(path: str | Path | Sequence[str | Path]) -> StudyPath:
    if isinstance(path, str | Path):
        p = Path(path)
        if not p.exists():
            raise InputError("no such file or folder", p)
        return p
    parts = [Path(p) for p in path]
    if len(parts) == 1:
        return _normalise(parts[0])
    if len(parts) != 2:
        raise InputError(f"give one study path or a (CT, PET) pair, got {len(parts)} paths")
    for p in parts:
        if not p.exists():
            raise InputError("no such file or folder", p)
    return (parts[0], parts[1])


def detect_layout(path: str | Path | Sequence[str | Path]) -> Layout:
    """The layout of a study path, or a `LayoutError` saying what was looked for."""
    _ensure_builtin()
    p = _normalise(path)
    for layout in LAYOUTS.values():
        if layout.detect(p):
            return layout
    shown = " + ".join(str(x) for x in p) if isinstance(p, tuple) else str(p)
    looked = "; ".join(f"{lay.name} ({lay.description})" for lay in LAYOUTS.values())
    raise LayoutError(f"{shown}: not a PET/CT study in any known layout. Looked for: {looked}")


def load_study(
    path: str | Path | Sequence[str | Path],
    options: LoadOptions | None = None,
    layout: str | None = None,
) -> Study:
    """Load one PET/CT study from a DICOM folder, a NIfTI pair, an AutoPET or nnU-Net
    layout, or a ViMed-PET release (``options.study_id`` picks the entry).

    The returned `Study` says which layout was found in ``study.layout``.
    """
    _ensure_builtin()
    p = _normalise(path)
    if layout is not None:
        if layout not in LAYOUTS:
            raise LayoutError(f"unknown layout {layout!r}; choose from {sorted(LAYOUTS)}")
        chosen = LAYOUTS[layout]
    else:
        chosen = detect_layout(p)
    return chosen.load(p, options or LoadOptions())


def find_studies(root: str | Path) -> list[StudyRef]:
    """Every study of a dataset folder, in a stable order.

    A collection layout at ``root`` (ViMed-PET metadata.csv, an nnU-Net images folder)
    lists its own studies; otherwise each sub-folder (searched up to three levels down)
    that a layout recognises is one study; otherwise ``root`` itself must be one study.
    """
    _ensure_builtin()
    root_path = _normalise(root)
    if isinstance(root_path, tuple):
        raise InputError("a dataset is one folder, not a pair of files")
    for layout in LAYOUTS.values():
        if layout.list_studies is not None and layout.detect(root_path):
            return [StudyRef(root_path, layout.name, sid) for sid in layout.list_studies(root_path)]
    if root_path.is_dir():
        refs = _scan_children(root_path, depth=3)
        if refs:
            return [StudyRef(r.path, r.layout, r.study_id, root_path) for r in refs]
    layout = detect_layout(root_path)
    return [StudyRef(root_path, layout.name)]


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan_children(folder: Path, depth: int) -> list[StudyRef]:
    refs: list[StudyRef] = []
    for child in _subdirs(folder):
        found = next((lay for lay in LAYOUTS.values() if lay.holds_study(child)), None)
        if found is not None and found.list_studies is not None:
            refs.extend(StudyRef(child, found.name, s) for s in found.list_studies(child))
        elif found is not None and not _has_study_children(child):
            refs.append(StudyRef(child, found.name))
        elif depth > 1:
            refs.extend(_scan_children(child, depth - 1))
    return refs


def _has_study_children(folder: Path) -> bool:
    """A folder whose own sub-folders are whole studies is a patient/collection level.

    (The DICOM reader searches recursively, so a folder of several DICOM studies would
    otherwise look like one study with many series.)
    """
    hits = sum(1 for d in _subdirs(folder) if any(lay.holds_study(d) for lay in LAYOUTS.values()))
    return hits >= 2
