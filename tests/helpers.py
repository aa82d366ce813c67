"""Small on-disk studies for tests, written with ViPET's own writers."""

from __future__ import annotations

from pathlib import Path

from vipet.io.example import make_example_study
from vipet.io.nifti import write_nifti_volume
from vipet.io.study import Study
from vipet.preprocess.resample import resample_labels, resample_like


def small_study(seed: int = 0, study_id: str = "example") -> Study:
    """A whole-body example study at coarse resolution (fast to write and preprocess)."""
    return make_example_study(
        ct_shape=(60, 64, 64), pet_shape=(45, 40, 40), slice_mm=15.0, seed=seed, study_id=study_id
    )


def write_autopet(folder: Path, study: Study) -> Path:
    """An AutoPET study folder: CTres (CT on the PET grid), SUV, SEG."""
    folder.mkdir(parents=True, exist_ok=True)
    write_nifti_volume(resample_like(study.ct, study.pet, fill=-1024.0), folder / "CTres.nii.gz")
    write_nifti_volume(study.pet, folder / "SUV.nii.gz")
    write_nifti_volume(resample_labels(study.lesion_mask, study.pet.grid), folder / "SEG.nii.gz")
    return folder
