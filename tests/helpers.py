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


def phantom_with_cache(
    base: Path, n: int, grid: tuple[int, int, int], seed: int = 3
) -> tuple[Path, Path]:
    """A small phantom dataset (coarse test scanner) and its preprocessed-sample cache."""
    from tests.phantom.test_dataset import SMALL
    from vipet.io import find_studies
    from vipet.phantom.dataset import write_dataset
    from vipet.preprocess import PreprocessConfig
    from vipet.preprocess.cache import build_cache

    root, cache = base / "phantom", base / "cache"
    write_dataset(root, n, seed=seed, layout="vimed", workers=1, config=SMALL, progress=False)
    report = build_cache(find_studies(root), cache, PreprocessConfig(grid=grid), progress=False)
    assert not report.failed, report.failed
    return root, cache
