"""CT numbers (HU) and true FDG uptake (SUV) for an organ label volume (DOMAIN §7).

Each study draws its own physiology from the published ranges — brain cortex 6–10,
myocardium 1.5–10 (fasting suppresses it, so it is bimodal), blood pool 1.5–2, liver
2–2.5, spleen 1.5–2 (below liver), urine 5–50, bowel 1–4 patchy, muscle 0.5–1, lung
0.3–0.7, marrow 1–2, fat 0.3 — and the CT numbers likewise. On top of the flat
per-organ values: bones get a cortical shell (one voxel) around a cancellous marrow
core, lungs get denser and slightly warmer toward the dependent (posterior) side, bowel
uptake is modulated by a smooth random field, and every tissue gets mild smooth texture.
Noise, blur and resampling belong to the scanner simulation, not here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from vipet.phantom.labels import BONES, LUNGS, N_LABELS, ORGANS

if TYPE_CHECKING:
    from vipet.phantom.anatomy import Anatomy

F32 = np.float32


def draw_physiology(rng: np.random.Generator, sex: str, age: float) -> dict[str, float]:
    """SUVmean per tissue for one study (bowel is the base before its patchy field)."""

    def u(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    liver = u(2.0, 2.5)
    urine = float(np.exp(rng.uniform(np.log(6.0), np.log(50.0))))
    brain = u(6.0, 10.0)
    marrow = u(1.0, 2.0)
    phys = {
        "brain": brain,
        "brain_white": brain * u(0.3, 0.4),
        "myocardium": u(1.5, 3.0) if rng.random() < 0.45 else u(3.0, 10.0),
        "blood_pool": u(1.5, 2.0),
        "liver": liver,
        "spleen": u(1.5, min(2.0, liver - 0.05)),
        "kidneys": u(5.0, 12.0),
        "renal_pelvis": max(5.0, urine * u(0.5, 1.0)),
        "ureter": max(5.0, urine * u(0.3, 0.8)),
        "bladder": urine,
        "bowel": u(1.2, 2.4),
        "stomach": u(1.3, 3.0),
        "esophagus": u(1.2, 2.2),
        "muscle": u(0.5, 1.0),
        "lung": u(0.3, 0.7),
        "marrow": marrow,
        "bone_cortex": marrow * u(0.2, 0.35),
        "fat": u(0.25, 0.35),
        "mediastinum": u(0.4, 0.7),
        "thyroid": u(1.0, 2.0),
        "tonsils": u(2.0, 4.5),
        "salivary": u(1.5, 3.0),
        "pancreas": u(1.2, 1.8),
        "gallbladder": u(0.3, 0.8),
        "spinal_cord": u(1.2, 2.0),
        "eyes": u(0.3, 0.6),
        "csf": u(0.1, 0.2),
        "disc": u(0.5, 0.8),
        "breast": u(0.6, 1.2),
    }
    if sex == "M":
        phys["prostate"] = u(1.2, 2.2)
    else:
        phys["uterus"] = u(1.2, 2.0) if age > 55 else u(1.5, 4.0)
    return phys


def _draw_hu(rng: np.random.Generator) -> dict[str, float]:
    """CT numbers per tissue for one study (unenhanced CT)."""

    def u(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    grey = u(35.0, 45.0)
    blood = u(35.0, 45.0)
    urine = u(0.0, 12.0)
    return {
        "fat": u(-110.0, -90.0),
        "muscle": u(40.0, 60.0),
        "brain": grey,
        "brain_white": grey - u(6.0, 10.0),
        "csf": u(3.0, 10.0),
        "lung": u(-860.0, -820.0),
        "liver": u(50.0, 65.0),
        "spleen": u(40.0, 50.0),
        "kidney": u(28.0, 38.0),
        "urine": urine,
        "gallbladder": u(0.0, 15.0),
        "blood": blood,
        "myocardium": u(45.0, 55.0),
        "mediastinum": u(-80.0, -50.0),
        "bowel": u(10.0, 35.0),
        "stomach": u(5.0, 35.0),
        "pancreas": u(35.0, 45.0),
        "thyroid": u(80.0, 110.0),
        "cortical": u(900.0, 1400.0),
        "cancellous": u(200.0, 400.0),
    }


def _tables(phys: dict[str, float], hu: dict[str, float]) -> tuple[np.ndarray, ...]:
    """Per-label look-up tables: HU, SUV, HU texture amplitude, relative SUV texture."""
    b = phys["blood_pool"]
    rows = {  # label: (HU, SUV, HU texture SD, SUV texture SD relative)
        "fat": (hu["fat"], phys["fat"], 8, 0.08),
        "muscle": (hu["muscle"], phys["muscle"], 6, 0.08),
        "brain": (hu["brain"], phys["brain"], 3, 0.06),
        "brain_white": (hu["brain_white"], phys["brain_white"], 3, 0.06),
        "csf": (hu["csf"], phys["csf"], 2, 0.0),
        "skull": (hu["cortical"] + 200.0, phys["bone_cortex"], 40, 0.05),
        "spine": (hu["cortical"], phys["bone_cortex"], 40, 0.05),
        "disc": (80.0, phys["disc"], 5, 0.05),
        "ribs": (hu["cortical"] * 0.85, phys["bone_cortex"], 40, 0.05),
        "sternum": (hu["cortical"] * 0.85, phys["bone_cortex"], 40, 0.05),
        "clavicles": (hu["cortical"], phys["bone_cortex"], 40, 0.05),
        "scapulae": (hu["cortical"] * 0.9, phys["bone_cortex"], 40, 0.05),
        "pelvis": (hu["cortical"], phys["bone_cortex"], 40, 0.05),
        "femora": (hu["cortical"] * 1.05, phys["bone_cortex"], 40, 0.05),
        "airway": (-1000.0, 0.0, 5, 0.0),
        "heart": (hu["blood"], b, 3, 0.04),
        "myocardium": (hu["myocardium"], phys["myocardium"], 4, 0.12),
        "mediastinum": (hu["mediastinum"], phys["mediastinum"], 15, 0.1),
        "aorta": (hu["blood"], b, 3, 0.04),
        "vessels": (hu["blood"], b, 3, 0.04),
        "liver": (hu["liver"], phys["liver"], 4, 0.08),
        "gallbladder": (hu["gallbladder"], phys["gallbladder"], 3, 0.05),
        "spleen": (hu["spleen"], phys["spleen"], 4, 0.06),
        "stomach": (hu["stomach"], phys["stomach"], 12, 0.2),
        "pancreas": (hu["pancreas"], phys["pancreas"], 5, 0.06),
        "kidney_right": (hu["kidney"], phys["kidneys"], 4, 0.1),
        "kidney_left": (hu["kidney"], phys["kidneys"], 4, 0.1),
        "renal_pelvis": (hu["urine"], phys["renal_pelvis"], 3, 0.1),
        "ureter": (hu["urine"], phys["ureter"], 3, 0.3),
        "bladder": (hu["urine"], phys["bladder"], 2, 0.02),
        "bowel": (hu["bowel"], phys["bowel"], 20, 0.0),
        "bowel_gas": (-980.0, 0.0, 10, 0.0),
        "esophagus": (40.0, phys["esophagus"], 5, 0.1),
        "thyroid": (hu["thyroid"], phys["thyroid"], 6, 0.08),
        "spinal_cord": (35.0, phys["spinal_cord"], 3, 0.05),
        "eyes": (10.0, phys["eyes"], 2, 0.05),
        "salivary": (20.0, phys["salivary"], 8, 0.08),
        "tonsils": (50.0, phys["tonsils"], 5, 0.1),
        "breast": (25.0, phys["breast"], 15, 0.1),
        "prostate": (40.0, phys.get("prostate", 1.5), 5, 0.08),
        "uterus": (45.0, phys.get("uterus", 1.5), 5, 0.1),
    }
    for name in ORGANS:
        if name.startswith("lung_"):
            rows[name] = (hu["lung"], phys["lung"], 18, 0.08)
    tables = np.zeros((4, N_LABELS), F32)
    tables[0, 0] = -1000.0
    for name, values in rows.items():
        tables[:, ORGANS[name]] = values
    return tuple(tables)


def smooth_field(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    corr_mm: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Zero-mean, unit-variance random field smooth on the scale ``corr_mm``, shape (D, H, W).

    White noise on a coarse lattice (one knot per ``corr_mm``) interpolated with Gaussian
    kernels along each axis in turn: three small matrix products instead of a 3-D filter.
    """
    mats = []
    for n, step in zip(shape, spacing, strict=True):
        pos = np.arange(n) * step
        knots = np.arange(-2.0 * corr_mm, n * step + 2.0 * corr_mm, corr_mm)
        m = np.exp(-0.5 * ((pos[:, None] - knots[None, :]) / corr_mm) ** 2)
        m /= np.sqrt((m**2).sum(axis=1, keepdims=True))  # unit variance at every point
        mats.append(m.astype(F32))
    mz, my, mx = mats
    c = rng.standard_normal((mz.shape[1], my.shape[1], mx.shape[1]), dtype=F32)
    c = c @ mx.T  # (kz, ky, W)
    c = np.matmul(my[None], c)  # (kz, H, W)
    out = mz @ c.reshape(mz.shape[1], -1)
    return out.reshape(shape)


def _body_box(labels: np.ndarray) -> tuple[slice, slice, slice]:
    """Bounding box of the body (non-air voxels), so textures skip the air around it."""
    body = labels != 0
    spans = []
    for axis in range(3):
        hit = np.flatnonzero(body.any(axis=tuple(a for a in range(3) if a != axis)))
        spans.append(slice(int(hit[0]), int(hit[-1]) + 1) if hit.size else slice(0, 0))
    return spans[0], spans[1], spans[2]


def tissue_values(
    anatomy: Anatomy, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """CT (HU) and true activity (SUV), float32 on ``anatomy.grid``, and the organ → SUVmean
    physiology actually used for this study."""
    p = anatomy.patient
    phys = draw_physiology(rng, p.sex, p.age)
    ct_numbers = _draw_hu(rng)
    hu_t, suv_t, hu_tex, suv_tex = _tables(phys, ct_numbers)
    labels = anatomy.labels
    hu = hu_t[labels]
    suv = suv_t[labels]
    spacing = anatomy.grid.spacing
    _bone_marrow(labels, hu, suv, ct_numbers["cancellous"], phys["marrow"])
    _lung_gradient(anatomy, hu, suv, float(rng.uniform(80.0, 140.0)))
    box = _body_box(labels)
    sub = labels[box]
    if sub.size:  # textures only where the body is: the air around it stays exact
        shape = sub.shape
        hu[box] += hu_tex[sub] * smooth_field(shape, spacing, 12.0, rng)
        suv[box] *= 1.0 + suv_tex[sub] * smooth_field(shape, spacing, 20.0, rng)
        phys["bowel"] = _bowel_patches(sub, suv[box], spacing, phys["bowel"], rng)
    np.maximum(suv, 0.0, out=suv)
    return hu, suv, phys


def _bone_marrow(
    labels: np.ndarray, hu: np.ndarray, suv: np.ndarray, cancellous: float, marrow: float
) -> None:
    """Inside each bone (all six neighbours bone too), cancellous bone with red marrow;
    the skull's diploë and femoral shafts carry less marrow uptake."""
    lut = np.zeros(N_LABELS, bool)
    lut[list(BONES)] = True
    bone = lut[labels]
    inner = bone.copy()
    inner[1:] &= bone[:-1]
    inner[:-1] &= bone[1:]
    inner[:, 1:] &= bone[:, :-1]
    inner[:, :-1] &= bone[:, 1:]
    inner[:, :, 1:] &= bone[:, :, :-1]
    inner[:, :, :-1] &= bone[:, :, 1:]
    idx = np.flatnonzero(inner)
    lab = labels.ravel()[idx]
    hu_c = np.full(N_LABELS, cancellous, F32)
    hu_c[ORGANS["skull"]] = cancellous + 300.0  # diploë between two thick tables
    suv_c = np.full(N_LABELS, marrow, F32)
    suv_c[ORGANS["skull"]] = 0.6 * marrow
    suv_c[ORGANS["femora"]] = 0.7 * marrow  # yellow marrow in the shafts
    hu.ravel()[idx] = hu_c[lab]
    suv.ravel()[idx] = suv_c[lab]


def _lung_gradient(anatomy: Anatomy, hu: np.ndarray, suv: np.ndarray, rise: float) -> None:
    """Dependent (posterior) lung is denser and slightly warmer in a supine patient."""
    lut = np.zeros(N_LABELS, bool)
    lut[list(LUNGS)] = True
    idx = np.flatnonzero(lut[anatomy.labels])
    if idx.size == 0:
        return
    _, h, w = anatomy.grid.shape
    y = anatomy.grid.origin[1] + ((idx // w) % h) * anatomy.grid.spacing[1]
    s = anatomy.patient.height_cm / 170.0
    frac = np.clip((y + 95.0 * s) / (200.0 * s), 0.0, 1.0).astype(F32)
    hu.ravel()[idx] += rise * frac * frac
    gain = 0.85 + 0.3 * frac
    suv.ravel()[idx] *= gain / gain.mean()  # keeps the lung's mean at its drawn SUV


def _bowel_patches(
    labels: np.ndarray,
    suv: np.ndarray,
    spacing: tuple[float, float, float],
    base: float,
    rng: np.random.Generator,
) -> float:
    """Patchy bowel uptake: base × a smooth log-normal field, kept within 1–4 SUV.
    Returns the mean actually painted."""
    bowel = ORGANS["bowel"]
    mask = labels == bowel
    if not mask.any():
        return base
    spans = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        spans.append(slice(int(hit[0]), int(hit[-1]) + 1))
    box = tuple(spans)
    m = mask[box]
    field = smooth_field(m.shape, spacing, 18.0, rng)
    values = np.clip(base * np.exp(0.45 * field - 0.1), 1.0, 4.0)
    suv[box][m] = values[m]
    return float(values[m].mean())
