"""Phantom anatomy: organs present and in place, scaling with height, landmarks in the
right tissue, physiology within DOMAIN §7, determinism — on coarse 8 mm grids."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vipet.errors import GeometryError
from vipet.io.volume import Grid, default_direction
from vipet.phantom.anatomy import (
    ORGANS,
    Anatomy,
    Patient,
    build_anatomy,
    sample_patient,
    tissue_values,
)
from vipet.phantom.labels import BONES, LUNGS

STEP = 8.0
SEX_ONLY = {"M": {"breast", "uterus"}, "F": {"prostate"}}


def coarse_grid(patient: Patient, step: float = STEP, fov: float = 520.0) -> Grid:
    """Vertex to mid-thigh, slice 0 at the feet (as a scanner sorts them)."""
    top, bottom = 15.0, -0.63 * patient.height_cm * 10.0
    n = int(np.ceil((top - bottom) / step)) + 1
    m = int(fov / step)
    origin = (-fov / 2 + step / 2, -fov / 2 + step / 2, top - (n - 1) * step)
    return Grid((n, m, m), (step, step, step), origin, default_direction())


def build(patient: Patient, seed: int = 0) -> Anatomy:
    return build_anatomy(patient, coarse_grid(patient), np.random.default_rng(seed))


@pytest.fixture(scope="module", params=[Patient("M", 62, 172, 74), Patient("F", 48, 158, 63)])
def anatomy(request: pytest.FixtureRequest) -> Anatomy:
    return build(request.param, seed=7)


def centroid(anatomy: Anatomy, *names: str) -> np.ndarray:
    """World (x, y, z) centroid of the voxels of the named organs."""
    idx = np.argwhere(np.isin(anatomy.labels, [ORGANS[n] for n in names]))
    assert len(idx), f"no voxels of {names}"
    return anatomy.grid.index_to_world(idx.mean(axis=0))


def label_at(anatomy: Anatomy, point: tuple[float, float, float]) -> int:
    idx = np.round(anatomy.grid.world_to_index(np.asarray(point))).astype(int)
    assert np.all(idx >= 0) and np.all(idx < anatomy.labels.shape), f"{point} outside the grid"
    return int(anatomy.labels[tuple(idx)])


def test_every_organ_label_present(anatomy: Anatomy) -> None:
    present = set(np.unique(anatomy.labels).tolist())
    expected = {n for n in ORGANS if n not in SEX_ONLY[anatomy.patient.sex]}
    missing = sorted(n for n in expected if ORGANS[n] not in present)
    assert not missing, f"missing organs: {missing}"
    assert anatomy.labels.dtype == np.int16
    assert anatomy.labels.shape == anatomy.grid.shape


def test_left_right_in_lps(anatomy: Anatomy) -> None:
    # LPS: x grows toward the patient's left.
    assert centroid(anatomy, "liver")[0] < -20
    assert centroid(anatomy, "lung_right_upper", "lung_right_middle", "lung_right_lower")[0] < -40
    assert centroid(anatomy, "lung_left_upper", "lung_left_lower")[0] > 40
    assert centroid(anatomy, "spleen")[0] > 40
    assert centroid(anatomy, "kidney_left")[0] > 30 > -30 > centroid(anatomy, "kidney_right")[0]
    assert centroid(anatomy, "heart", "myocardium")[0] > 0
    assert centroid(anatomy, "spine")[1] > centroid(anatomy, "heart")[1]  # spine posterior


def test_craniocaudal_order(anatomy: Anatomy) -> None:
    z = {n: centroid(anatomy, n)[2] for n in ("brain", "thyroid", "heart", "liver", "bladder")}
    lung = centroid(anatomy, *[n for n in ORGANS if n.startswith("lung_")])[2]
    assert z["brain"] > z["thyroid"] > lung > z["liver"] > z["bladder"]
    assert lung > z["heart"] > z["liver"]
    upper, lower = (
        centroid(anatomy, "lung_right_upper")[2],
        centroid(anatomy, "lung_right_lower")[2],
    )
    assert upper > lower
    top = -0.0
    assert np.all(anatomy.grid.index_to_world(np.argwhere(anatomy.labels > 0))[:, 2] <= top + STEP)


def test_taller_patient_has_lower_bladder() -> None:
    short = build(Patient("M", 60, 155, 55), seed=3)
    tall = build(Patient("M", 60, 192, 84), seed=3)
    assert centroid(tall, "bladder")[2] < centroid(short, "bladder")[2] - 60
    assert centroid(tall, "liver")[2] < centroid(short, "liver")[2] - 30


def body_width(anatomy: Anatomy) -> float:
    """Left–right extent of the body in voxels."""
    return float(np.ptp(np.nonzero(anatomy.labels.any(axis=(0, 1)))[0]))


def test_heavier_patient_is_wider_with_more_fat() -> None:
    thin = build(Patient("F", 50, 160, 45), seed=4)
    heavy = build(Patient("F", 50, 160, 88), seed=4)
    assert np.count_nonzero(heavy.labels == ORGANS["fat"]) > 1.5 * np.count_nonzero(
        thin.labels == ORGANS["fat"]
    )
    assert body_width(heavy) > body_width(thin)


def test_landmarks_lie_in_the_right_tissue(anatomy: Anatomy) -> None:
    keys = set(anatomy.landmarks)
    for side in ("right", "left"):
        for station in (
            "cervical",
            "cervical_II",
            "cervical_III",
            "cervical_IV",
            "supraclavicular",
            "axillary",
            "paratracheal",
            "hilar",
            "iliac",
            "inguinal",
        ):
            assert f"node:{station}:{side}" in keys
        assert {f"bone:pelvic:{side}", f"bone:femur:{side}"} <= keys
        assert {f"rib:{n}:{side}" for n in range(3, 11)} <= keys
    assert {"node:prevascular", "node:subcarinal", "node:paraaortic", "node:mesenteric"} <= keys
    not_soft = {0, *BONES, *LUNGS, ORGANS["airway"], ORGANS["bowel_gas"]}
    for key, point in anatomy.landmarks.items():
        label = label_at(anatomy, point)
        if key.startswith("node:"):
            assert label not in not_soft, f"{key} lies in label {label}"
        elif key.startswith("rib:"):
            assert label == ORGANS["ribs"], key
        elif key.startswith("bone:pelvic"):
            assert label == ORGANS["pelvis"], key
        elif key.startswith("bone:femur"):
            assert label == ORGANS["femora"], key
    right = [p for k, p in anatomy.landmarks.items() if k.endswith(":right")]
    left = [p for k, p in anatomy.landmarks.items() if k.endswith(":left")]
    assert all(p[0] < 0 for p in right) and all(p[0] > 0 for p in left)


def test_vertebrae_levels_in_order_and_in_bone(anatomy: Anatomy) -> None:
    levels = [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)]
    levels += [f"L{i}" for i in range(1, 6)] + ["S1"]
    assert list(anatomy.vertebrae) == levels
    z = [anatomy.vertebrae[lv][2] for lv in levels]
    assert all(a > b for a, b in itertools.pairwise(z))
    for level in levels:
        assert label_at(anatomy, anatomy.vertebrae[level]) in (ORGANS["spine"], ORGANS["pelvis"])


def test_tissue_values_follow_domain_ranges(anatomy: Anatomy) -> None:
    hu, suv, phys = tissue_values(anatomy, np.random.default_rng(1))
    assert hu.dtype == suv.dtype == np.float32
    assert hu.shape == suv.shape == anatomy.grid.shape
    ranges = {
        "brain": (6, 10),
        "myocardium": (1.5, 10),
        "blood_pool": (1.5, 2),
        "liver": (2, 2.5),
        "spleen": (1.5, 2),
        "kidneys": (5, 50),
        "bladder": (5, 50),
        "bowel": (1, 4),
        "muscle": (0.5, 1),
        "lung": (0.3, 0.7),
        "marrow": (1, 2),
        "fat": (0.2, 0.4),
    }
    for organ, (lo, hi) in ranges.items():
        assert lo <= phys[organ] <= hi, (organ, phys[organ])
    lab = anatomy.labels

    def mean(vol: np.ndarray, *names: str) -> float:
        return float(vol[np.isin(lab, [ORGANS[n] for n in names])].mean())

    assert -900 < mean(hu, *[n for n in ORGANS if n.startswith("lung_")]) < -650
    assert -130 < mean(hu, "fat") < -70
    assert 45 < mean(hu, "liver") < 70
    assert mean(hu, "spine") > 200 and mean(hu, "femora") > 200
    assert np.all(hu[lab == 0] == -1000) and np.all(suv[lab == 0] == 0)
    assert mean(suv, "brain") > mean(suv, "liver") > mean(suv, "muscle") > mean(suv, "fat")
    assert mean(suv, "bladder") >= 5
    assert np.all(np.isfinite(hu)) and np.all(np.isfinite(suv)) and suv.min() >= 0


def test_same_seed_same_phantom() -> None:
    patient = Patient("F", 40, 163, 58)
    a, b = build(patient, seed=11), build(patient, seed=11)
    assert np.array_equal(a.labels, b.labels)
    assert a.landmarks == b.landmarks and a.vertebrae == b.vertebrae
    hu_a, suv_a, phys_a = tissue_values(a, np.random.default_rng(2))
    hu_b, suv_b, phys_b = tissue_values(b, np.random.default_rng(2))
    assert np.array_equal(hu_a, hu_b) and np.array_equal(suv_a, suv_b) and phys_a == phys_b
    c = build(patient, seed=12)
    assert not np.array_equal(a.labels, c.labels)


def test_sample_patient_ranges() -> None:
    rng = np.random.default_rng(0)
    patients = [sample_patient(rng) for _ in range(300)]
    assert {p.sex for p in patients} == {"M", "F"}
    assert all(25 <= p.age <= 85 and 16.9 <= p.bmi <= 35.1 for p in patients)
    men = np.mean([p.height_cm for p in patients if p.sex == "M"])
    women = np.mean([p.height_cm for p in patients if p.sex == "F"])
    assert 165 < men < 171 and 154 < women < 160


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="sex"):
        Patient("X", 50, 170, 70)
    patient = Patient("M", 50, 170, 70)
    g = coarse_grid(patient)
    tilted = Grid(g.shape, g.spacing, g.origin, np.eye(3))
    with pytest.raises(GeometryError, match="axis-aligned"):
        build_anatomy(patient, tilted, np.random.default_rng(0))
