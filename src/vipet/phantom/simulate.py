"""One phantom study: anatomy → lesions → CT and PET as a scanner would give them.

CT is sampled on its own grid (fine in-plane, 4 mm slices) with quantum noise. PET
starts as the true activity on the CT grid; it is integrated onto PET's own coarser grid
(different field of view, matrix and slice positions, as on a real scanner), blurred by
the ~6 mm FWHM point spread, and given spatially correlated, Poisson-like noise whose
standard deviation grows with the square root of the activity. Ground truth is then
*measured* on that simulated PET — each lesion's SUVmax is the highest PET value inside
its mask on the PET grid, and a lesion counts as FDG-avid only if that value stands out
(≥ 2.5 and ≥ 1.5 × its local background) — so small lesions lose contrast to partial
volume exactly as in real data, and the reports state what the image shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from vipet.io.study import Study
from vipet.io.volume import Grid, Units, Volume, default_direction
from vipet.phantom.anatomy import (
    ORGANS,
    Anatomy,
    Patient,
    build_anatomy,
    sample_patient,
    tissue_values,
)
from vipet.phantom.lesions import LesionConfig, LesionPlan, paint_lesions, plan_lesions
from vipet.preprocess.regions import REGION_NAMES, RegionConfig
from vipet.preprocess.resample import resample_labels, resample_to_grid
from vipet.reports.schema import Lesion


@dataclass(frozen=True)
class ScannerConfig:
    ct_matrix: int = 176
    ct_fov_mm: float = 500.0
    ct_slice_mm: float = 4.0
    ct_noise_hu: float = 12.0
    pet_matrix: int = 128
    pet_fov_mm: float = 650.0
    pet_slice_mm: float = 4.0
    pet_fwhm_mm: float = 6.0
    pet_noise: float = 0.15
    """Noise SD at SUV 1 (scales with sqrt(SUV), like counting statistics)."""
    coverage: float = 0.63
    """Scan length as a fraction of height below the vertex (vertex to mid-thigh)."""

    def __post_init__(self) -> None:
        if (
            min(self.ct_matrix, self.pet_matrix) < 16
            or min(self.ct_slice_mm, self.pet_slice_mm) <= 0
        ):
            raise ValueError("scanner matrices must be >= 16 and slice spacings positive")


@dataclass(frozen=True)
class PhantomConfig:
    scanner: ScannerConfig = field(default_factory=ScannerConfig)
    lesions: LesionConfig = field(default_factory=LesionConfig)
    avid_suv: float = 2.5
    """A lesion is FDG-avid when its measured SUVmax is at least this..."""
    avid_ratio: float = 1.5
    """...and at least this multiple of its local background."""


@dataclass
class PhantomCase:
    """A simulated study with everything known about it."""

    study: Study  # CT (HU, CT grid), PET (SUVbw, PET grid), lesion mask (PET grid), lesions
    lesions: list[Lesion]
    organs: Volume  # organ labels on the CT grid (ids in vipet.phantom.anatomy.ORGANS)
    physiology: dict[str, float]
    patient: Patient


def scan_grids(patient: Patient, cfg: ScannerConfig) -> tuple[Grid, Grid]:
    """CT and PET grids for this patient: same body coverage, different sampling."""
    top, bottom = 15.0, -cfg.coverage * patient.height_cm * 10.0
    grids = []
    for matrix, fov, step, shift in (
        (cfg.ct_matrix, cfg.ct_fov_mm, cfg.ct_slice_mm, 0.0),
        (cfg.pet_matrix, cfg.pet_fov_mm, cfg.pet_slice_mm, cfg.pet_slice_mm / 2),  # offset slices
    ):
        n = int(np.ceil((top - bottom) / step)) + 1
        pix = fov / matrix
        origin = (-fov / 2 + pix / 2, -fov / 2 + pix / 2, top + shift - (n - 1) * step)
        grids.append(Grid((n, matrix, matrix), (step, pix, pix), origin, default_direction()))
    return grids[0], grids[1]


def simulate_pet(
    activity: Volume, pet_grid: Grid, cfg: ScannerConfig, rng: np.random.Generator
) -> np.ndarray:
    """True activity (fine grid) → PET image on ``pet_grid``: integrate, blur, add noise."""
    pet = resample_to_grid(activity, pet_grid, order=1, fill=0.0).array
    sigma = cfg.pet_fwhm_mm / 2.3548 / np.asarray(pet_grid.spacing)
    pet = ndimage.gaussian_filter(pet, sigma, mode="constant")
    noise = ndimage.gaussian_filter(rng.standard_normal(pet.shape, dtype=np.float32), 0.7)
    noise *= np.float32(1.0 / max(float(noise.std()), 1e-6))  # unit variance, spatially correlated
    pet += np.float32(cfg.pet_noise) * np.sqrt(np.maximum(pet, 0.0)) * noise
    return np.maximum(pet, 0.0, out=pet)


def _lesion_mask_on_pet(labels_ct: Volume, pet_grid: Grid, plans: list[LesionPlan]) -> np.ndarray:
    """Lesion labels on the PET grid; a lesion smaller than a PET voxel keeps the voxel at
    its centre, so every lesion has a mask to measure SUVmax in."""
    out = resample_labels(labels_ct, pet_grid).array.astype(np.int16)
    present = set(np.unique(out).tolist())
    for i, plan in enumerate(plans, start=1):
        if i in present or not np.any(labels_ct.array == i):
            continue
        idx = np.round(pet_grid.world_to_index(plan.centre)).astype(int)
        if np.all(idx >= 0) and np.all(idx < np.asarray(pet_grid.shape)) and out[tuple(idx)] == 0:
            out[tuple(idx)] = i
    return out


def _measure(pet: np.ndarray, mask: np.ndarray, i: int) -> tuple[float, float]:
    """SUVmax inside lesion ``i`` and the median of a 2-voxel shell around it."""
    inside = mask == i
    box = tuple(slice(max(0, a.min() - 3), a.max() + 4) for a in np.nonzero(inside))
    local, sub = inside[box], pet[box]
    shell = ndimage.binary_dilation(local, iterations=2) & ~local & (mask[box] == 0)
    background = float(np.median(sub[shell])) if shell.any() else 0.0
    return float(sub[local].max()), background


def _region_of(z: float, patient: Patient, top: float) -> str:
    """Primary body region of a point, by the region split's height fractions (no overlap)."""
    frac = (top - z) / (patient.height_cm * 10.0)
    edges = RegionConfig().boundaries
    for name, lo in zip(REGION_NAMES[::-1], edges[-2::-1], strict=False):
        if frac >= lo:
            return name
    return REGION_NAMES[0]


def _ground_truth(
    plans: list[LesionPlan], pet: np.ndarray, mask: np.ndarray, anatomy: Anatomy, cfg: PhantomConfig
) -> list[Lesion]:
    lesions = []
    for i, plan in enumerate(plans, start=1):
        if not np.any(mask == i):  # entirely outside the PET field of view
            continue
        suvmax, background = _measure(pet, mask, i)
        avid = suvmax >= cfg.avid_suv and suvmax >= cfg.avid_ratio * background
        long_mm, short_mm = plan.diameters_mm
        typ = plan.type
        if plan.detail in ("spine", "rib", "pelvic_bone", "femur"):
            typ = "hypermetabolism" if avid else "other"  # bone: named by what PET shows
        elif typ in ("nodule", "mass"):
            typ = "mass" if long_mm >= 30.0 else "nodule"  # by the size actually drawn
        elif typ == "effusion":
            long_mm = short_mm = 2.0 * float(plan.semi_axes[1])  # an effusion's depth
        lesions.append(
            Lesion.at(
                len(lesions) + 1,
                typ,
                plan.detail,
                plan.laterality,
                size_mm=float(round(long_mm)),
                short_mm=float(round(short_mm)),
                suvmax=round(suvmax, 1),
                fdg_avid=bool(avid),
                level=plan.level,
                region=_region_of(float(plan.centre[2]), anatomy.patient, anatomy.body_top_z),
                centre_mm=tuple(round(float(c), 1) for c in plan.centre),
            )
        )
    return lesions


def simulate_case(index: int, seed: int, config: PhantomConfig | None = None) -> PhantomCase:
    """Study ``index`` of the benchmark with base ``seed`` (independent of worker order)."""
    cfg = config or PhantomConfig()
    rng = np.random.default_rng([seed, index])
    patient = sample_patient(rng)
    ct_grid, pet_grid = scan_grids(patient, cfg.scanner)
    anatomy: Anatomy = build_anatomy(patient, ct_grid, rng)
    hu, activity, physiology = tissue_values(anatomy, rng)
    plans = plan_lesions(anatomy, physiology, rng, cfg.lesions)
    labels = paint_lesions(plans, anatomy, hu, activity)
    hu += rng.normal(0.0, cfg.scanner.ct_noise_hu, hu.shape).astype(np.float32)
    ct = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    labels_ct = Volume.on_grid(labels, ct_grid, "SEG", Units.LABEL)
    pet = simulate_pet(
        Volume.on_grid(activity, ct_grid, "PT", Units.SUVBW), pet_grid, cfg.scanner, rng
    )
    mask = _lesion_mask_on_pet(labels_ct, pet_grid, plans)
    lesions = _ground_truth(plans, pet, mask, anatomy, cfg)
    # Renumber the PET-grid mask to the ground-truth ids (lesions outside the FOV dropped).
    keep = [i for i in range(1, len(plans) + 1) if np.any(mask == i)]
    remap = np.zeros(len(plans) + 1, np.int16)
    remap[keep] = np.arange(1, len(keep) + 1)
    study = Study(
        id=f"phantom_{index:05d}",
        ct=Volume.on_grid(ct, ct_grid, "CT", Units.HU),
        pet=Volume.on_grid(pet, pet_grid, "PT", Units.SUVBW),
        layout="phantom",
        sex=patient.sex,
        age=patient.age,
        weight_kg=patient.weight_kg,
        height_cm=patient.height_cm,
        lesion_mask=Volume.on_grid(remap[mask], pet_grid, "SEG", Units.LABEL),
        lesions=tuple(les.to_dict() for les in lesions),
        meta={"seed": seed, "index": index},
    )
    organs = Volume.on_grid(anatomy.labels, ct_grid, "SEG", Units.LABEL)
    return PhantomCase(study, lesions, organs, physiology, patient)


__all__ = ["ORGANS", "PhantomCase", "PhantomConfig", "ScannerConfig", "simulate_case"]
