"""Write a ViPET-Phantom dataset in a real on-disk layout, with ground truth and splits.

```
DIR/
  dataset.json              seed, config, layout, splits, one entry per study, class balance
  ground_truth/<id>.json    patient, physiology, lesions, VI/EN reports, VI/EN questions
  ground_truth/<id>_lesions.nii.gz   lesion labels on the PET grid (ids as in the JSON)
  ground_truth/<id>_organs.nii.gz    organ labels on the CT grid (vipet.phantom.anatomy.ORGANS)
  + the images in the chosen layout:
    vimed  (default)  metadata.csv, <year>/THANG <m>/{CT,PET,reports}/<id>.*  (PET raw int16)
    nifti             <id>/study/{CT,CTres,SUV,SEG}.nii.gz                     (AutoPET-like)
    dicom             <id>/{CT,PT}/*.dcm  (PET in Bq/mL with radiopharmaceutical tags)
```

Splits are fixed by the seed (70 / 15 / 15 %). In the ViMed-PET layout the month folders
follow the release's temporal split (train months 1–9, validation 10, test 11–12), so
either reading of the split gives the same studies.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vipet.config import to_dict
from vipet.errors import InputError
from vipet.io.atomic import atomic_write_bytes
from vipet.io.dicom_writer import PetAcquisition, write_dicom_study
from vipet.io.nifti import write_nifti_volume
from vipet.io.vimed import update_vimed_metadata, write_vimed_files
from vipet.io.vipet_dataset import DATASET_FILE
from vipet.phantom.simulate import PhantomCase, PhantomConfig, simulate_case
from vipet.preprocess.resample import resample_like
from vipet.reports.questions import make_questions
from vipet.reports.render import render_report

LAYOUT_CHOICES = ("vimed", "nifti", "dicom")
SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
_MONTHS = {"train": (1, 9), "val": (10, 10), "test": (11, 12)}


def assign_splits(n: int, seed: int) -> list[str]:
    """Split name per study index: a seeded permutation cut 70/15/15 (val/test ≥ 1 each
    when n ≥ 3)."""
    order = np.random.default_rng([seed, 7919]).permutation(n)
    n_val = max(1, round(n * SPLIT_FRACTIONS["val"])) if n >= 3 else 0
    n_test = max(1, round(n * SPLIT_FRACTIONS["test"])) if n >= 3 else 0
    out = ["train"] * n
    for rank, idx in enumerate(order):
        if rank < n_test:
            out[idx] = "test"
        elif rank < n_test + n_val:
            out[idx] = "val"
    return out


@dataclass(frozen=True)
class _Job:
    index: int
    seed: int
    split: str
    layout: str
    out: Path
    config: PhantomConfig


def _texts(case: PhantomCase, seed: int, index: int) -> dict[str, Any]:
    """Reports and questions, from their own random stream (wording never moves anatomy)."""
    rng = np.random.default_rng([seed, index, 1])
    out: dict[str, Any] = {}
    for lang in ("vi", "en"):
        out[f"report_{lang}"] = render_report(case.lesions, lang, rng, case.physiology)
        out[f"questions_{lang}"] = [q.__dict__ for q in make_questions(case.lesions, lang, rng)]
    return out


def _write_images(case: PhantomCase, job: _Job, texts: dict[str, Any]) -> dict[str, Any]:
    """Images in the job's layout; returns how to find them again (relative path, id)."""
    study, sid = case.study, case.study.id
    if job.layout == "vimed":
        lo, hi = _MONTHS[job.split]
        month = int(np.random.default_rng([job.seed, job.index, 2]).integers(lo, hi + 1))
        row = write_vimed_files(
            job.out,
            study.replace(report=texts["report_vi"], report_en=texts["report_en"]),
            sid,
            year=2025,
            month=month,
        )
        return {"path": ".", "study_id": sid, "metadata_row": row}
    if job.layout == "nifti":
        folder = job.out / sid / "study"
        write_nifti_volume(study.ct, folder / "CT.nii.gz")
        write_nifti_volume(
            resample_like(study.ct, study.pet, fill=-1024.0), folder / "CTres.nii.gz"
        )
        write_nifti_volume(study.pet, folder / "SUV.nii.gz")
        write_nifti_volume(study.lesion_mask, folder / "SEG.nii.gz")
        return {"path": f"{sid}/study", "study_id": None}
    rng = np.random.default_rng([job.seed, job.index, 3])
    scan = datetime(2025, 1, 1, 8, 0) + timedelta(
        days=int(rng.integers(0, 365)), minutes=int(rng.integers(0, 600))
    )
    acq = PetAcquisition(
        injected_dose_bq=float(rng.uniform(250e6, 400e6)),
        injection_time=scan - timedelta(minutes=float(rng.uniform(55, 75))),
        series_time=scan,
    )
    write_dicom_study(
        study, job.out / sid, pet_acquisition=acq, uid_seed=f"vipet-phantom-{job.seed}-{sid}"
    )
    return {"path": sid, "study_id": None}


def _run(job: _Job) -> dict[str, Any]:
    case = simulate_case(job.index, job.seed, job.config)
    texts = _texts(case, job.seed, job.index)
    where = _write_images(case, job, texts)
    sid, gt = case.study.id, job.out / "ground_truth"
    write_nifti_volume(case.study.lesion_mask, gt / f"{sid}_lesions.nii.gz")
    write_nifti_volume(case.organs, gt / f"{sid}_organs.nii.gz")
    p = case.patient
    record = {
        "id": sid,
        "split": job.split,
        "patient": {"sex": p.sex, "age": p.age, "height_cm": p.height_cm, "weight_kg": p.weight_kg},
        "physiology": case.physiology,
        "lesions": [les.to_dict() for les in case.lesions],
        **texts,
    }
    atomic_write_bytes(
        gt / f"{sid}.json", json.dumps(record, ensure_ascii=False, indent=1).encode()
    )
    return {
        "id": sid,
        "split": job.split,
        "n_lesions": len(case.lesions),
        "normal": not case.lesions,
        "lesions": record["lesions"],
        **where,
    }


def write_dataset(
    out: Path,
    n: int,
    seed: int = 0,
    layout: str = "vimed",
    workers: int = 1,
    config: PhantomConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate ``n`` studies into ``out``; returns the dataset description it wrote."""
    if layout not in LAYOUT_CHOICES:
        raise InputError(f"unknown phantom layout {layout!r}; choose from {list(LAYOUT_CHOICES)}")
    if n < 1:
        raise InputError(f"--n must be at least 1, got {n}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("output folder is not empty; give a new folder", out)
    # Build in a hidden sibling and rename at the end: an interrupted run leaves no
    # half-written dataset under the requested name.
    work = out.parent / f".{out.name}.partial"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    cfg = config or PhantomConfig()
    splits = assign_splits(n, seed)
    jobs = [_Job(i, seed, splits[i], layout, work, cfg) for i in range(n)]
    bar = tqdm(total=n, desc="phantom", unit="study", disable=not progress)
    rows: list[dict[str, Any]] = []
    if workers > 1 and n > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for row in pool.map(_run, jobs, chunksize=1):
                rows.append(row)
                bar.update(1)
    else:
        for job in jobs:
            rows.append(_run(job))
            bar.update(1)
    bar.close()
    if layout == "vimed":
        update_vimed_metadata(work, [r.pop("metadata_row") for r in rows])
    description = _describe(rows, n, seed, layout, cfg)
    atomic_write_bytes(
        work / DATASET_FILE, json.dumps(description, ensure_ascii=False, indent=1).encode()
    )
    if out.exists():
        out.rmdir()  # empty (checked above)
    work.rename(out)
    return description


def _describe(
    rows: list[dict[str, Any]], n: int, seed: int, layout: str, cfg: PhantomConfig
) -> dict[str, Any]:
    lesions = [les for r in rows for les in r["lesions"]]
    return {
        "name": "ViPET-Phantom",
        "version": 1,
        "seed": seed,
        "n": n,
        "layout": layout,
        "config": to_dict(cfg),
        "splits": {s: [r["id"] for r in rows if r["split"] == s] for s in SPLIT_FRACTIONS},
        "studies": [{k: v for k, v in r.items() if k != "lesions"} for r in rows],
        "balance": class_balance(lesions, rows),
    }


def class_balance(lesions: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of lesion types, location classes, fine locations, regions and avidity."""
    count = lambda key: dict(Counter(str(les[key]) for les in lesions).most_common())  # noqa: E731
    return {
        "studies": len(rows),
        "normal_studies": sum(r["normal"] for r in rows),
        "lesions": len(lesions),
        "type": count("type"),
        "location": count("location"),
        "location_detail": count("location_detail"),
        "region": count("region"),
        "fdg_avid": count("fdg_avid"),
    }
