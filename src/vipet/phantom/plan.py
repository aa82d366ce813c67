"""The patient and the body plan of one study: levels, widths and fat from height, weight,
sex and a few random draws.

World frame: LPS mm, z = 0 at the vertex and the body toward −z. Craniocaudal positions
are fractions ``f`` of standing height below the vertex (anthropometric averages:
chin ≈ 0.134, sternal notch ≈ 0.18, nipples ≈ 0.265, costal margin ≈ 0.355, iliac
crest ≈ 0.39, greater trochanter ≈ 0.48, crotch ≈ 0.53), so they scale with height.
Widths are tables for a 170 cm man of BMI 24, scaled by frame size (height) and sex; fat
is added on top from the BMI, which is how a heavier patient of the same frame differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

REF_HEIGHT_MM = 1700.0
TRUNK_P = 2.3
"""Superellipse exponent of trunk and cavity cross-sections: a rounded box, flatter than an
ellipse."""

# Muscle/skeleton core of the trunk (no subcutaneous fat), man of 170 cm, BMI 24:
# f below the vertex, half-width, half-depth, centre y (mm, +y posterior).
_CORE = np.array(
    [
        [0.095, 48, 52, 16],
        [0.130, 50, 52, 16],
        [0.146, 54, 54, 18],
        [0.152, 64, 58, 20],
        [0.159, 88, 64, 22],
        [0.166, 118, 74, 22],
        [0.175, 146, 88, 20],
        [0.186, 160, 98, 17],
        [0.200, 164, 103, 14],
        [0.230, 158, 108, 10],
        [0.260, 153, 112, 8],
        [0.290, 149, 108, 6],
        [0.320, 142, 101, 6],
        [0.350, 136, 97, 6],
        [0.380, 134, 96, 7],
        [0.410, 140, 98, 9],
        [0.440, 148, 100, 12],
        [0.470, 152, 102, 16],
        [0.500, 146, 100, 20],
        [0.520, 122, 90, 26],
        [0.535, 80, 68, 32],
        [0.545, 1, 1, 36],
    ]
)

# Body cavity inside the rib cage / abdominal wall / bony pelvis (same units).
_CAVITY = np.array(
    [
        [0.150, 16, 16, 30],
        [0.160, 42, 32, 30],
        [0.172, 70, 48, 28],
        [0.185, 94, 62, 26],
        [0.200, 110, 72, 22],
        [0.230, 125, 82, 16],
        [0.260, 133, 86, 10],
        [0.290, 135, 88, 8],
        [0.320, 130, 85, 6],
        [0.350, 124, 82, 4],
        [0.380, 120, 80, 4],
        [0.410, 120, 80, 6],
        [0.440, 108, 76, 10],
        [0.470, 82, 66, 14],
        [0.500, 56, 52, 20],
        [0.515, 1, 1, 24],
    ]
)

# Centre y of the vertebral bodies (kyphosis / lordosis), f → y.
_SPINE_Y = np.array(
    [
        [0.070, 6],
        [0.100, 8],
        [0.130, 16],
        [0.150, 26],
        [0.180, 42],
        [0.220, 52],
        [0.260, 57],
        [0.300, 54],
        [0.334, 44],
        [0.376, 33],
        [0.410, 34],
        [0.441, 50],
        [0.480, 80],
        [0.510, 92],
    ]
)

# Women relative to men, half-width by level (narrower shoulders and waist, wider hips).
_FEMALE_WIDTH = np.array(
    [
        [0.10, 0.92],
        [0.17, 0.88],
        [0.22, 0.90],
        [0.30, 0.92],
        [0.36, 0.88],
        [0.42, 1.0],
        [0.47, 1.05],
        [0.6, 1.05],
    ]
)

# Subcutaneous fat relative to the abdomen, by level; women carry more at hips and thighs.
_FAT_REGION = np.array(
    [
        [0.10, 0.3],
        [0.15, 0.35],
        [0.19, 0.5],
        [0.25, 0.6],
        [0.32, 0.9],
        [0.38, 1.0],
        [0.45, 1.0],
        [0.52, 0.9],
        [0.6, 0.75],
    ]
)
_FAT_REGION_F = np.array(
    [
        [0.10, 0.3],
        [0.15, 0.35],
        [0.19, 0.5],
        [0.25, 0.6],
        [0.32, 0.9],
        [0.38, 1.0],
        [0.45, 1.25],
        [0.52, 1.3],
        [0.6, 1.2],
    ]
)

VERTEBRAE: tuple[tuple[str, float], ...] = (
    ("C1", 0.083),
    ("C2", 0.093),
    *((f"C{i}", 0.103 + 0.010 * (i - 3)) for i in range(3, 8)),
    *((f"T{i}", 0.153 + 0.0147 * (i - 1)) for i in range(1, 13)),
    *((f"L{i}", 0.334 + 0.021 * (i - 1)) for i in range(1, 6)),
    ("S1", 0.441),
)
"""Vertebral levels and the height fraction of each body's centre."""


@dataclass(frozen=True)
class Patient:
    """Who is scanned: sex ("M"/"F"), age (years), height (cm), weight (kg)."""

    sex: str
    age: float
    height_cm: float
    weight_kg: float

    def __post_init__(self) -> None:
        if self.sex not in ("M", "F"):
            raise ValueError(f"patient sex must be 'M' or 'F', got {self.sex!r}")
        if not (100.0 <= self.height_cm <= 230.0 and 25.0 <= self.weight_kg <= 250.0):
            raise ValueError(
                f"implausible patient: height {self.height_cm} cm, weight {self.weight_kg} kg"
            )

    @property
    def bmi(self) -> float:
        return self.weight_kg / (self.height_cm / 100.0) ** 2


def sample_patient(rng: np.random.Generator) -> Patient:
    """An adult oncology patient: ages 25–85 (median ~60), heights N(168, 7) cm for men
    and N(157, 6) cm for women, BMI 17–35."""
    sex = "M" if rng.random() < 0.5 else "F"
    age = float(np.clip(rng.normal(60.0, 13.0), 25.0, 85.0))
    height = float(rng.normal(168.0, 7.0) if sex == "M" else rng.normal(157.0, 6.0))
    height = float(np.clip(height, 140.0, 195.0))
    bmi = float(np.clip(rng.normal(23.0, 3.5), 17.0, 35.0))
    weight = bmi * (height / 100.0) ** 2
    return Patient(sex, round(age, 1), round(height, 1), round(weight, 1))


def _interp(table: np.ndarray, f: np.ndarray, col: int, outside: float | None = None) -> np.ndarray:
    """Linear interpolation of one column of a level table (``outside`` beyond its ends)."""
    return np.interp(f, table[:, 0], table[:, col], left=outside, right=outside)


@dataclass
class Plan:
    """Per-study body measurements: levels, width scales, fat, and the random draws that
    every structure shares (diaphragm heights, spine curve)."""

    patient: Patient
    rng: np.random.Generator
    height_mm: float = field(init=False)
    kw: float = field(init=False)  # frame width scale (skeleton, muscle)
    fat_mm: float = field(init=False)  # abdominal subcutaneous fat thickness
    visceral_mm: float = field(init=False)  # abdominal cavity growth from visceral fat
    dome_right_f: float = field(init=False)
    dome_left_f: float = field(init=False)
    level_scale: float = field(init=False)
    vary: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        p, rng = self.patient, self.rng
        self.height_mm = p.height_cm * 10.0
        self.kw = self.height_mm / REF_HEIGHT_MM * float(rng.normal(1.0, 0.025))
        bmi = p.bmi
        fat = float(np.clip(1.5 + 2.4 * (bmi - 17.0), 2.0, 55.0))
        self.fat_mm = fat * (1.25 if p.sex == "F" else 1.0) * float(rng.normal(1.0, 0.1))
        vis = float(np.clip((bmi - 21.0) * 3.5, 0.0, 45.0))
        self.visceral_mm = vis * (1.0 if p.sex == "M" else 0.55)
        self.dome_right_f = 0.277 + float(rng.normal(0.0, 0.006))
        self.dome_left_f = self.dome_right_f + 0.01 + float(rng.normal(0.0, 0.003))
        self.level_scale = float(rng.normal(1.0, 0.012))
        self.vary = {k: float(rng.normal(1.0, 0.035)) for k in ("chest", "waist", "hips")}

    # ---- levels ---------------------------------------------------------------------------
    def z(self, f: float) -> float:
        """World z of a height fraction below the vertex."""
        return -f * self.height_mm

    def f(self, z: np.ndarray | float) -> np.ndarray:
        """Height fraction below the vertex of world z."""
        return -np.asarray(z, np.float64) / self.height_mm

    def vertebra_z(self, level: str) -> float:
        f = dict(VERTEBRAE)[level]
        return self.z(0.083 + (f - 0.083) * self.level_scale)

    # ---- trunk cross-sections -------------------------------------------------------------
    def _width_scale(self, f: np.ndarray) -> np.ndarray:
        k = np.full_like(f, self.kw)
        if self.patient.sex == "F":
            k *= _interp(_FEMALE_WIDTH, f, 1)
        v = self.vary
        k *= np.interp(f, [0.2, 0.26, 0.36, 0.46], [1.0, v["chest"], v["waist"], v["hips"]])
        return k

    def _visceral(self, f: np.ndarray) -> np.ndarray:
        """Growth of the abdomen by visceral fat, peaking at the umbilicus."""
        return self.visceral_mm * np.interp(f, [0.30, 0.36, 0.42, 0.48], [0.0, 1.0, 1.0, 0.0])

    def core(self, z: np.ndarray) -> tuple[np.ndarray, ...]:
        """(cx, cy, half-width, half-depth) of the muscle core of the trunk at each z."""
        f = self.f(z)
        kd = self.kw * (0.94 if self.patient.sex == "F" else 1.0)
        vis = self._visceral(f)
        hw = _interp(_CORE, f, 1, 0.0) * self._width_scale(f) + 0.5 * vis
        hd = _interp(_CORE, f, 2, 0.0) * kd + 0.6 * vis
        cy = _interp(_CORE, f, 3) * kd - 0.6 * vis
        return np.zeros_like(f), cy, hw, hd

    def fat(self, z: np.ndarray) -> np.ndarray:
        """Subcutaneous fat thickness at each z."""
        table = _FAT_REGION_F if self.patient.sex == "F" else _FAT_REGION
        return self.fat_mm * _interp(table, self.f(z), 1)

    def outline(self, z: np.ndarray) -> tuple[np.ndarray, ...]:
        """(cx, cy, half-width, half-depth) of the skin of the trunk: core plus fat, the
        belly carrying extra fat in front."""
        cx, cy, hw, hd = self.core(z)
        t = self.fat(z)
        belly = 0.35 * t * np.interp(self.f(z), [0.30, 0.36, 0.44, 0.50], [0, 1, 1, 0])
        has = hw > 0  # no fat shell beyond the ends of the trunk
        return cx, cy - belly, hw + t * has, hd + (t + belly) * has

    def cavity(self, z: np.ndarray) -> tuple[np.ndarray, ...]:
        """(cx, cy, half-width, half-depth) of the thoracic/abdominal/pelvic cavity."""
        f = self.f(z)
        vis = self._visceral(f)
        kd = self.kw * (0.95 if self.patient.sex == "F" else 1.0)
        hw = _interp(_CAVITY, f, 1, 0.0) * self._width_scale(f) + 0.5 * vis
        hd = _interp(_CAVITY, f, 2, 0.0) * kd + 0.6 * vis
        cy = _interp(_CAVITY, f, 3) * kd - 0.6 * vis
        return np.zeros_like(f), cy, hw, hd

    def spine_y(self, z: np.ndarray | float) -> np.ndarray:
        """Centre y of the vertebral bodies (and the sacrum below S1) at each z."""
        return _interp(_SPINE_Y, self.f(z), 1) * self.kw

    def dome(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """World z of the diaphragm surface over (x, y): two domes (the right one higher)
        falling off toward the deep posterior and lateral costophrenic recesses."""
        k = self.kw
        out = None
        for side, f in ((-1.0, self.dome_right_f), (1.0, self.dome_left_f)):
            u = (x - side * 62.0 * k) / (95.0 * k)
            v = (y - 5.0 * k) / (85.0 * k)
            q = u * u + v * v + 0.35 * np.maximum(v, 0.0) ** 2  # deeper posteriorly
            zd = self.z(f) - 55.0 * k * q
            out = zd if out is None else np.maximum(out, zd)
        return out
