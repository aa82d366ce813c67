"""ViPET's own dataset format: studies in any layout plus ground truth, one folder.

```
ROOT/
  dataset.json              name, splits, and per study: id, split, path (relative),
                            study_id (inside a collection layout), n_lesions, ...
  ground_truth/<id>.json    lesions (the findings schema), reports, questions, patient
  ground_truth/<id>_lesions.nii.gz   lesion labels (ids as in the JSON)
```

The ViPET-Phantom writes it (`vipet phantom`); a converted real dataset with annotations
could too. PET written as raw counts with a recorded scale (the ViMed-PET layout's
``pet_raw_per_suv`` column) is returned in SUVbw. Registered as the layout "vipet-dataset" ahead of every other layout, so
`load_study(ROOT, LoadOptions(study_id=ID))` returns the study read through its own
layout *with* its lesion list, lesion mask and reports attached, and `find_studies` and
the preprocessing cache see the lesion masks.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from vipet.errors import InputError, LayoutError
from vipet.io.layouts import LAYOUTS, Layout, StudyPath, register_layout
from vipet.io.nifti import read_nifti_volume
from vipet.io.study import LoadOptions, Study
from vipet.io.volume import Units

DATASET_FILE = "dataset.json"
GROUND_TRUTH = "ground_truth"


def read_dataset(root: str | Path) -> dict[str, Any]:
    """The parsed dataset.json of ``root`` (an `InputError` naming it when unreadable)."""
    path = Path(root) / DATASET_FILE
    if not path.is_file():
        raise InputError(f"no {DATASET_FILE}: not a ViPET dataset", root)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"unreadable dataset description ({exc})", path) from exc
    if not isinstance(data, dict) or not isinstance(data.get("studies"), list):
        raise InputError("dataset description has no 'studies' list", path)
    return data


def _entry(root: Path, study_id: str | None) -> dict[str, Any]:
    studies = read_dataset(root)["studies"]
    ids = [s["id"] for s in studies]
    if study_id is None:
        if len(studies) == 1:
            return studies[0]
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        raise LayoutError(
            f"dataset holds {len(ids)} studies; choose one with --study ID: {shown}", root
        )
    if study_id not in ids:
        raise LayoutError(f"no study {study_id!r} in this dataset", root / DATASET_FILE)
    return studies[ids.index(study_id)]


def ground_truth(root: str | Path, study_id: str) -> dict[str, Any]:
    path = Path(root) / GROUND_TRUTH / f"{study_id}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"unreadable ground truth ({exc})", path) from exc


def load_dataset_study(path: StudyPath, options: LoadOptions) -> Study:
    """One study of a ViPET dataset, read through its own layout, ground truth attached."""
    if not isinstance(path, Path):
        raise LayoutError("a ViPET dataset is one folder, not a pair of files")
    entry = _entry(path, options.study_id)
    inner = path / entry["path"]
    inner_opts = replace(options, study_id=entry.get("study_id"))
    layout = _inner_layout(inner)
    study = layout.load(inner, inner_opts)
    per_suv = study.meta.get("pet_raw_per_suv")
    if study.pet.units is Units.RAW and per_suv:
        # The dataset wrote raw counts with a known scale (ViMed-PET style): undo it, so a
        # ViPET dataset always yields SUV. Load with layout="vimed" to get the raw counts.
        pet = study.pet.with_array(study.pet.array / float(per_suv), units=Units.SUVBW)
        study = study.replace(pet=pet)
    gt = ground_truth(path, entry["id"])
    mask_path = path / GROUND_TRUTH / f"{entry['id']}_lesions.nii.gz"
    mask = read_nifti_volume(mask_path, "SEG", Units.LABEL) if mask_path.is_file() else None
    return study.replace(
        id=entry["id"],
        layout=f"vipet-dataset/{study.layout}",
        lesions=tuple(gt.get("lesions", ())),
        lesion_mask=mask if mask is not None else study.lesion_mask,
        report=study.report or gt.get("report_vi"),
        report_en=study.report_en or gt.get("report_en"),
        meta={**study.meta, "split": entry.get("split")},
    )


def _inner_layout(inner: Path) -> Layout:
    """The layout of a study inside the dataset (a ViMed-PET release shares the dataset's
    root folder, so the dataset layout itself is skipped)."""
    for layout in LAYOUTS.values():
        if layout.name != "vipet-dataset" and layout.detect(inner):
            return layout
    raise LayoutError("dataset entry is not a study in any known layout", inner)


def _detect(path: StudyPath) -> bool:
    return isinstance(path, Path) and path.is_dir() and (path / DATASET_FILE).is_file()


def _list(root: Path) -> list[str]:
    return [s["id"] for s in read_dataset(root)["studies"]]


def _files(path: StudyPath, study_id: str | None) -> list[Path]:
    """The study's own image files (via its layout) plus its ground-truth files."""
    assert isinstance(path, Path)
    entry = _entry(path, study_id)
    inner = path / entry["path"]
    layout = _inner_layout(inner)
    if layout.study_files is not None:
        files = list(layout.study_files(inner, entry.get("study_id")))
    else:
        files = sorted(f for f in inner.rglob("*") if f.is_file()) if inner.is_dir() else [inner]
    gt = path / GROUND_TRUTH
    files += [
        p for p in (gt / f"{entry['id']}.json", gt / f"{entry['id']}_lesions.nii.gz") if p.is_file()
    ]
    return files


DATASET_LAYOUT = register_layout(
    Layout(
        name="vipet-dataset",
        description="ViPET dataset: dataset.json + studies + ground_truth/ (e.g. vipet phantom output)",
        detect=_detect,
        load=load_dataset_study,
        list_studies=_list,
        study_files=_files,
        priority=5,
    )
)

__all__ = ["DATASET_FILE", "LAYOUTS", "ground_truth", "load_dataset_study", "read_dataset"]
