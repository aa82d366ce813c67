"""Thorax and neck viscera: lungs split into lobes by fissure planes, the mediastinum, heart
with a left-ventricular myocardial shell, aorta and great vessels, pulmonary vessels,
trachea and bronchi, esophagus, thyroid, and the lymph-node stations around them."""

from __future__ import annotations

import numpy as np

from vipet.phantom.body import JUGULAR_F, JUGULAR_X, JUGULAR_Y
from vipet.phantom.labels import LUNGS, ORGANS
from vipet.phantom.plan import Plan
from vipet.phantom.shapes import Canvas, profile_q, rotation

FAT, MUSCLE, MED = ORGANS["fat"], ORGANS["muscle"], ORGANS["mediastinum"]
HEART, MYO, AORTA, VESSELS = (
    ORGANS["heart"],
    ORGANS["myocardium"],
    ORGANS["aorta"],
    ORGANS["vessels"],
)
AIR = ORGANS["airway"]
SOFT_LUNG = (FAT, MUSCLE, MED, *LUNGS)
Point = tuple[float, float, float]

# Mediastinum between the lungs: f, centre x, centre y, half-width, half-depth (170 cm man).
_ZONE = np.array(
    [
        [0.150, 0, 8, 18, 30],
        [0.170, 0, 2, 24, 42],
        [0.190, 2, -4, 29, 52],
        [0.205, 4, -8, 34, 58],
        [0.220, 10, -14, 48, 62],
        [0.235, 16, -18, 64, 66],
        [0.250, 20, -20, 74, 68],
        [0.265, 22, -20, 72, 66],
        [0.280, 20, -18, 62, 60],
        [0.300, 14, -10, 36, 45],
    ]
)


class Thorax:
    """Thoracic landmarks shared by the builders (carina, airway centre line)."""

    def __init__(self, plan: Plan, rng: np.random.Generator) -> None:
        self.plan, self.rng = plan, rng
        k = plan.kw
        self.k = k
        self.z_carina = plan.vertebra_z("T5") + 6.0 * k
        self.y_carina = float(plan.spine_y(self.z_carina)) - 40.0 * k
        self.heart_c = np.array([20.0 * k, -22.0 * k, plan.z(0.252)]) + rng.normal(0.0, 4.0, 3)
        axis = np.array([0.62, -0.42, -0.66]) + rng.normal(0.0, 0.12, 3)
        self.heart_axis = axis / np.linalg.norm(axis)
        self.heart_scale = float(rng.normal(1.0, 0.05)) * (plan.patient.weight_kg / 65.0) ** 0.1 * k
        self.trachea = [
            (0.0, -18.0 * k, plan.z(0.140)),
            (0.0, -10.0 * k, plan.z(0.160)),
            (1.0 * k, -2.0 * k + 0.4 * (self.y_carina + 2.0 * k), plan.z(0.185)),
            (2.0 * k, self.y_carina, self.z_carina),
        ]

    def spine_y(self, f: float) -> float:
        """Centre y of the vertebral bodies at height fraction ``f``."""
        return float(self.plan.spine_y(self.plan.z(f)))

    def zone(self, z: np.ndarray) -> tuple[np.ndarray, ...]:
        f = self.plan.f(z)
        cols = [
            np.interp(f, _ZONE[:, 0], _ZONE[:, i], left=0.0, right=0.0) * self.k
            for i in range(1, 5)
        ]
        return tuple(cols)


def paint_thorax(cv: Canvas, plan: Plan, rng: np.random.Generator) -> dict[str, Point]:
    """Paint the thoracic and neck viscera; returns the neck and mediastinal node points."""
    th = Thorax(plan, rng)
    _lungs(cv, th)
    _neck(cv, th)
    _heart(cv, th)
    _great_vessels(cv, th)
    _airways(cv, th)
    _esophagus(cv, th)
    _lung_vessels(cv, th)
    return _node_points(th)


def _lungs(cv: Canvas, th: Thorax) -> None:
    """Lungs fill the thoracic cavity above the diaphragm outside the mediastinum; lobes
    are split by the oblique (both) and horizontal (right) fissures."""
    plan, k, rng = th.plan, th.k, th.rng
    top = plan.z(0.150)
    bottom = plan.z(plan.dome_left_f) - 110.0 * k
    box = cv.box((-170.0 * k, -130.0 * k, bottom), (170.0 * k, 140.0 * k, top))
    if box is None:
        return
    z = box.z[:, 0, 0]
    cx, cy, hw, hd = th.zone(z)
    zone = profile_q(box, cx, cy, hw, hd) <= 1.0
    sub = cv.labels[box.sl]
    lung = (sub == MED) & ~zone
    right = box.x < cx[:, None, None]
    # Oblique fissure: from high posteriorly (T3–T4) to the anterior diaphragm.
    y_post, y_ant = 100.0 * k, -80.0 * k
    lower = {}
    for side, f_post in (("right", 0.197), ("left", 0.190)):
        z_post = plan.z(f_post) + rng.normal(0.0, 6.0)
        z_ant = plan.z(plan.dome_right_f if side == "right" else plan.dome_left_f) - 15.0
        slope = (z_post - z_ant) / (y_post - y_ant) * rng.normal(1.0, 0.06)
        z_fis = (
            z_post - (y_post - box.y) * slope + (np.abs(box.x) - 80.0 * k) * rng.normal(0.08, 0.04)
        )
        lower[side] = box.z < z_fis
    z_h = plan.z(0.232) + rng.normal(0.0, 6.0)
    labels = {
        "lung_right_lower": lung & right & lower["right"],
        "lung_right_middle": lung & right & ~lower["right"] & (box.z < z_h),
        "lung_right_upper": lung & right & ~lower["right"] & (box.z >= z_h),
        "lung_left_lower": lung & ~right & lower["left"],
        "lung_left_upper": lung & ~right & ~lower["left"],
    }
    for name, mask in labels.items():
        sub[mask] = ORGANS[name]


def _neck(cv: Canvas, th: Thorax) -> None:
    """Thyroid lobes and isthmus, carotid arteries and jugular veins."""
    plan, k = th.plan, th.k
    zt = plan.z(0.147)
    ty = -12.0 * k
    thyroid = ORGANS["thyroid"]
    for c, r in (
        ((-17 * k, ty + 2 * k, zt), (8 * k, 11 * k, 20 * k)),
        ((17 * k, ty + 2 * k, zt), (8 * k, 11 * k, 20 * k)),
        ((0.0, ty - 11 * k, zt - 4 * k), (11 * k, cv.thin(4 * k, 1), 6 * k)),
    ):
        cv.blob(thyroid, c, r, over=(FAT, MUSCLE))
    for s in (-1.0, 1.0):
        carotid = [
            (s * 14 * k, -6 * k, plan.z(0.175)),
            (s * 22 * k, -8 * k, plan.z(0.14)),
            (s * 24 * k, -4 * k, plan.z(0.085)),
        ]
        cv.tube(VESSELS, carotid, cv.thin(4.0 * k), over=(FAT, MUSCLE, MED))
        jugular = [
            (s * 26 * k, -8 * k, plan.z(0.178)),
            (s * 32 * k, -2 * k, plan.z(0.14)),
            (s * 34 * k, 4 * k, plan.z(0.085)),
        ]
        cv.tube(VESSELS, jugular, cv.thin(6.5 * k), over=(FAT, MUSCLE, MED))


def _heart(cv: Canvas, th: Thorax) -> None:
    """Heart ellipsoid along its base→apex axis, with a thick-walled left ventricle."""
    s = th.heart_scale
    rot = rotation(th.heart_axis, (1.0, 0.0, 0.0))
    cv.oriented(HEART, th.heart_c, (46 * s, 40 * s, 60 * s), rot, over=SOFT_LUNG)
    lv_c = th.heart_c + 14.0 * s * th.heart_axis + np.array([12.0, 10.0, 0.0]) * s
    outer = (30 * s, 28 * s, 44 * s)
    wall = 10.0 * s * th.rng.uniform(0.9, 1.2)
    cv.oriented(MYO, lv_c, outer, rot, over=(*SOFT_LUNG, HEART))
    cv.oriented(HEART, lv_c, tuple(r - wall for r in outer), rot, over=(MYO,))


def _great_vessels(cv: Canvas, th: Thorax) -> None:
    """Aorta (root, arch, descending, abdominal), arch branches, SVC, pulmonary arteries."""
    plan, k = th.plan, th.k
    z = plan.z
    sy = th.spine_y
    aorta = [
        (8 * k, -24 * k, z(0.233)),
        (0.0, -28 * k, z(0.215)),
        (2 * k, -22 * k, z(0.198)),
        (8 * k, -8 * k, z(0.190)),
        (18 * k, 14 * k, z(0.193)),
        (20 * k, sy(0.205) - 24 * k, z(0.205)),
        (18 * k, sy(0.25) - 26 * k, z(0.25)),
        (10 * k, sy(0.29) - 27 * k, z(0.29)),
        (5 * k, sy(0.31) - 28 * k, z(0.31)),
        (4 * k, sy(0.35) - 28 * k, z(0.35)),
        (2 * k, sy(0.395) - 26 * k, z(0.395)),
    ]
    radii = np.array([14, 16, 15, 14, 13, 12.5, 12, 11.5, 11, 10, 9]) * k * th.rng.normal(1.0, 0.06)
    cv.tube(AORTA, aorta, radii, over=SOFT_LUNG)
    branches = [
        [(2 * k, -12 * k, z(0.190)), (-12 * k, -6 * k, z(0.176)), (-14 * k, -6 * k, z(0.175))],
        [(10 * k, -8 * k, z(0.190)), (14 * k, -6 * k, z(0.175))],
        [(18 * k, 6 * k, z(0.192)), (36 * k, 6 * k, z(0.170)), (75 * k, 12 * k, z(0.166))],
    ]
    for path in branches:
        cv.tube(VESSELS, path, cv.thin(5.5 * k), over=SOFT_LUNG)
    veins = [
        ([(40 * k, -8 * k, z(0.172)), (0.0, -24 * k, z(0.18)), (-24 * k, -16 * k, z(0.182))], 6.5),
        ([(-32 * k, -6 * k, z(0.172)), (-24 * k, -16 * k, z(0.182))], 7.0),
        ([(-24 * k, -16 * k, z(0.182)), (-27 * k, -18 * k, z(0.232))], 10.0),  # SVC
    ]
    for path, r in veins:
        cv.tube(VESSELS, path, cv.thin(r * k), over=SOFT_LUNG)
    hx, hy, _ = th.heart_c
    zc, yc = th.z_carina, th.y_carina
    trunk = [(hx - 4 * k, hy - 26 * k, z(0.236)), (8 * k, yc - 18 * k, zc - 10 * k)]
    cv.tube(VESSELS, trunk, 13.0 * k, over=(*SOFT_LUNG, HEART))
    for path in (
        [
            (8 * k, yc - 18 * k, zc - 10 * k),
            (-20 * k, yc - 10 * k, zc - 16 * k),
            (-44 * k, yc - 6 * k, zc - 22 * k),
        ],
        [
            (8 * k, yc - 18 * k, zc - 10 * k),
            (30 * k, yc - 4 * k, zc - 6 * k),
            (46 * k, yc + 6 * k, zc - 14 * k),
        ],
    ):
        cv.tube(VESSELS, path, [11 * k, 10 * k, 8 * k], over=SOFT_LUNG)


def _airways(cv: Canvas, th: Thorax) -> None:
    """Larynx and trachea to the carina, main and lobar bronchi."""
    k, zc, yc = th.k, th.z_carina, th.y_carina
    over = (*SOFT_LUNG, ORGANS["thyroid"], VESSELS, ORGANS["esophagus"])
    cv.tube(AIR, th.trachea, cv.thin(8.5 * k), over=over)
    c = th.trachea[-1]
    rm = (-44 * k, yc + 8 * k, zc - 30 * k)
    lm = (48 * k, yc + 10 * k, zc - 44 * k)
    tree = [
        ([c, (-22 * k, yc + 4 * k, zc - 18 * k), rm], 7.0),
        ([(-40 * k, yc + 6 * k, zc - 24 * k), (-62 * k, yc + 4 * k, zc - 4 * k)], 4.5),
        ([rm, (-46 * k, yc + 12 * k, zc - 60 * k), (-56 * k, yc + 26 * k, zc - 95 * k)], 5.0),
        ([(-45 * k, yc + 9 * k, zc - 50 * k), (-56 * k, yc - 24 * k, zc - 70 * k)], 3.5),
        ([c, (25 * k, yc + 6 * k, zc - 26 * k), lm], 6.5),
        ([lm, (62 * k, yc - 10 * k, zc - 22 * k)], 4.5),
        ([lm, (60 * k, yc + 28 * k, zc - 92 * k)], 4.5),
    ]
    for path, r in tree:
        cv.tube(AIR, path, cv.thin(r * k), over=over)


def _esophagus(cv: Canvas, th: Thorax) -> None:
    plan, k = th.plan, th.k
    sy = th.spine_y
    path = [
        (0.0, 0.0, plan.z(0.135)),
        (3 * k, sy(0.16) - 18 * k, plan.z(0.16)),
        (6 * k, sy(0.2) - 18 * k, plan.z(0.20)),
        (8 * k, sy(0.24) - 22 * k, plan.z(0.24)),
        (12 * k, sy(0.28) - 30 * k, plan.z(0.28)),
        (25 * k, sy(0.305) - 40 * k, plan.z(0.305)),
        (45 * k, sy(0.315) - 45 * k, plan.z(0.318)),
    ]
    cv.tube(ORGANS["esophagus"], path, cv.thin(8.0 * k), over=SOFT_LUNG)


def _lung_vessels(cv: Canvas, th: Thorax, per_lung: int = 36) -> None:
    """Pulmonary vessels: gently curving tubes from each hilum to random points of the
    lung, thinning toward the periphery; near the hilum they overlap into trunks (painted
    over lung only, so they stop at the pleura)."""
    rng, k = th.rng, th.k
    zc, yc = th.z_carina, th.y_carina
    box = cv.box((-200.0 * k, -150.0 * k, zc - 200.0 * k), (200.0 * k, 150.0 * k, zc + 120.0 * k))
    if box is None:
        return
    lut = cv.lut(LUNGS)
    idx = np.argwhere(lut[cv.labels[box.sl]])
    if len(idx) == 0:
        return
    pts = np.column_stack([box.x[0, 0, idx[:, 2]], box.y[0, idx[:, 1], 0], box.z[idx[:, 0], 0, 0]])
    radii = [cv.thin(5.0 * k), cv.thin(3.2 * k), cv.thin(2.0 * k), cv.thin(1.0)]
    for side in (-1.0, 1.0):
        hilum = np.array([side * 46 * k, yc + 4 * k, zc - 26 * k])
        mine = pts[pts[:, 0] * side > 0]
        if len(mine) == 0:
            continue
        for target in mine[rng.choice(len(mine), size=min(per_lung, len(mine)), replace=False)]:
            span = target - hilum
            bend = rng.normal(0.0, 0.08, (2, 3)) * np.linalg.norm(span)
            path = [hilum, hilum + 0.35 * span + bend[0], hilum + 0.7 * span + bend[1], target]
            cv.tube(VESSELS, path, radii, over=LUNGS)


def _node_points(th: Thorax) -> dict[str, Point]:
    """Lymph-node stations of the neck and mediastinum (snapped to soft tissue later)."""
    plan, k, zc, yc = th.plan, th.k, th.z_carina, th.y_carina
    z = plan.z
    out: dict[str, Point] = {}
    for side, name in ((-1.0, "right"), (1.0, "left")):
        for level, f in (("II", 0.112), ("III", 0.125), ("IV", 0.14)):
            x = np.interp(f, JUGULAR_F, JUGULAR_X) * k
            y = np.interp(f, JUGULAR_F, JUGULAR_Y) * k
            out[f"node:cervical_{level}:{name}"] = (side * x, y, z(f))
        out[f"node:cervical:{name}"] = out[f"node:cervical_III:{name}"]
        out[f"node:paratracheal:{name}"] = (side * 16 * k, -2 * k + 0.4 * yc, z(0.183))
    out["node:prevascular"] = (0.0, -46 * k, z(0.2))
    out["node:subcarinal"] = (2 * k, yc + 10 * k, zc - 22 * k)
    out["node:hilar:right"] = (-42 * k, yc + 4 * k, zc - 30 * k)
    out["node:hilar:left"] = (46 * k, yc + 6 * k, zc - 42 * k)
    return out
