"""Skeleton of the trunk: vertebrae C1–L5 with discs, arches and the spinal canal; the
sacrum; twelve pairs of ribs curving around the thoracic cavity; sternum, clavicles and
scapulae; iliac wings, acetabula, pubic and ischial rami; femoral heads, necks and shafts.

Each builder returns the points that lesions are placed at (vertebral body centres, a
point on the lateral arc of each rib, the iliac wing, the proximal femoral shaft).
"""

from __future__ import annotations

import numpy as np

from vipet.phantom.labels import ORGANS
from vipet.phantom.plan import VERTEBRAE, Plan
from vipet.phantom.shapes import (
    Canvas,
    ellipsoid_q,
    profile_q,
    rot_z,
    rotation,
)
from vipet.phantom.thoracic_wall import paint_ribs, paint_shoulder_girdle

SPINE, DISC, PELVIS, FEMUR = ORGANS["spine"], ORGANS["disc"], ORGANS["pelvis"], ORGANS["femora"]
Point = tuple[float, float, float]

# Vertebral dimensions by level (f below the vertex): body half-width, half-depth,
# canal radius, spinous process length, transverse process span (mm, 170 cm man).
_DIMS = np.array(
    [
        [0.083, 10, 8, 8.5, 14, 24],
        [0.140, 12, 8, 7.5, 22, 26],
        [0.153, 13, 10, 6.5, 28, 34],
        [0.310, 18, 15, 6.5, 30, 32],
        [0.334, 21, 16, 8.5, 30, 40],
        [0.418, 25, 18, 9.0, 28, 42],
        [0.441, 26, 18, 7.0, 15, 45],
    ]
)


def _dims(plan: Plan, z: np.ndarray | float) -> tuple[np.ndarray, ...]:
    f = plan.f(z)
    return tuple(np.interp(f, _DIMS[:, 0], _DIMS[:, i]) * plan.kw for i in range(1, 6))


def canal_centre_y(plan: Plan, z: np.ndarray | float) -> np.ndarray:
    """Centre y of the spinal canal (just behind the vertebral bodies) at each z."""
    _, ry, canal, _, _ = _dims(plan, z)
    return plan.spine_y(z) + ry + canal + 0.5


def paint_skeleton(cv: Canvas, plan: Plan, rng: np.random.Generator) -> tuple[dict, dict]:
    """Paint every bone of the trunk; returns (vertebra centres, bone landmarks)."""
    vertebrae = paint_spine(cv, plan)
    landmarks: dict[str, Point] = {}
    landmarks.update(paint_ribs(cv, plan))
    paint_shoulder_girdle(cv, plan)
    landmarks.update(paint_pelvis(cv, plan))
    landmarks.update(paint_femora(cv, plan))
    return vertebrae, landmarks


def paint_spine(cv: Canvas, plan: Plan) -> dict[str, Point]:
    """Disc column, vertebral bodies with arches and processes, canal and cord, sacrum."""
    levels = [(name, plan.vertebra_z(name)) for name, _ in VERTEBRAE]
    top, bottom = levels[1][1], levels[-1][1]
    box = cv.box((-40.0, -20.0, bottom), (40.0, 140.0, top))
    if box is not None:
        z = box.z[:, 0, 0]
        rx, ry, *_ = _dims(plan, z)
        q = profile_q(box, np.zeros_like(z), plan.spine_y(z), rx, ry)
        cv.fill(DISC, box, q <= 1.0, over=tuple(range(1, cv.n_labels)))
    centres: dict[str, Point] = {}
    zs = [zc for _, zc in levels]
    for i, (name, zc) in enumerate(levels[:-1]):
        step = abs(zs[i + 1] - zc) if i == 0 else 0.5 * abs(zs[i + 1] - zs[i - 1])
        centres[name] = _vertebra(cv, plan, zc, 0.5 * step * (0.72 if name[0] == "L" else 0.78))
    _canal(cv, plan, levels[0][1] + 10.0, bottom)
    centres["S1"] = (0.0, float(plan.spine_y(bottom)), bottom)
    _sacrum(cv, plan, bottom)
    return centres


def _vertebra(cv: Canvas, plan: Plan, zc: float, half_h: float) -> Point:
    """One vertebra: flat-ended body, arch around the canal, spinous process tilted down
    (steeply in the thorax), transverse processes; returns the body centre."""
    rx, ry, canal, spin, trans = (float(v) for v in _dims(plan, zc))
    sy = float(plan.spine_y(zc))
    c = (0.0, sy, zc)
    box = cv.box((-rx, sy - ry, zc - half_h), (rx, sy + ry, zc + half_h))
    if box is not None:
        cv.fill(SPINE, box, ellipsoid_q(box, c, (rx, ry, half_h), (2.4, 2.4, 6.0)) <= 1.0)
    # Arch: a ring around the canal, a little shorter than the body.
    cy = sy + ry + canal + 0.5
    ring = canal + 5.5 * plan.kw
    box = cv.box((-ring, cy - ring, zc - half_h), (ring, cy + ring, zc + half_h))
    if box is not None:
        q_out = ellipsoid_q(box, (0.0, cy, zc), (ring, ring, half_h * 0.85), (2, 2, 4))
        q_in = ellipsoid_q(box, (0.0, cy, zc), (canal, canal, 1e3))
        cv.fill(SPINE, box, (q_out <= 1.0) & (q_in > 1.0))
    f = float(plan.f(zc))
    tilt = np.radians(np.interp(f, [0.083, 0.15, 0.2, 0.3, 0.33, 0.45], [15, 25, 50, 45, 8, 5]))
    axis = (0.0, np.cos(tilt), -np.sin(tilt))
    rot = rotation(axis, (1.0, 0.0, 0.0))
    r = (4.0 * plan.kw, 5.5 * plan.kw, spin / 2)
    sc = np.array([0.0, cy + ring - 2.0, zc]) + np.asarray(axis) * spin / 2
    cv.oriented(SPINE, sc, r, rot)
    for side in (-1.0, 1.0):
        ang = side * np.radians(np.interp(f, [0.15, 0.31, 0.33], [-25, -25, 0]))
        rot_t = rot_z(ang)
        tc = (side * (rx * 0.6 + trans / 2), cy - 2.0, zc)
        cv.oriented(SPINE, tc, (trans / 2, 5.5 * plan.kw, 6.0 * plan.kw), rot_t)
    return c


def _canal(cv: Canvas, plan: Plan, top: float, bottom: float) -> None:
    """CSF in the canal; the spinal cord from the foramen magnum to L1."""
    box = cv.box((-20.0, 0.0, bottom), (20.0, 160.0, top))
    if box is None:
        return
    z = box.z[:, 0, 0]
    _, _, canal, _, _ = _dims(plan, z)
    cy = canal_centre_y(plan, z)
    zero = np.zeros_like(z)
    cv.fill(ORGANS["csf"], box, profile_q(box, zero, cy, canal, canal) <= 1.0)
    cord = np.where(z > plan.vertebra_z("L1"), cv.thin(4.5), 0.0)
    cv.fill(ORGANS["spinal_cord"], box, profile_q(box, zero, cy, cord, cord) <= 1.0)


def _sacrum(cv: Canvas, plan: Plan, z_s1: float) -> None:
    """Sacrum and coccyx: a wedge curving backward from S1, painted as pelvis."""
    k = plan.kw
    top, bottom = z_s1 + 14.0 * k, plan.z(0.515)
    box = cv.box((-60.0 * k, 0.0, bottom), (60.0 * k, 160.0 * k, top))
    if box is None:
        return
    z = box.z[:, 0, 0]
    f = plan.f(z)
    hw = k * np.interp(f, [0.43, 0.45, 0.47, 0.495, 0.515], [50, 46, 36, 16, 5])
    hd = k * np.interp(f, [0.43, 0.45, 0.49, 0.515], [19, 17, 11, 5])
    q = profile_q(box, np.zeros_like(z), plan.spine_y(z), hw, hd, 2.6)
    cv.fill(PELVIS, box, q <= 1.0, over=tuple(range(1, cv.n_labels)))


def hip_centre(plan: Plan, side: float) -> tuple[np.ndarray, float]:
    """Centre and radius of the femoral head on one side (women: wider pelvis)."""
    k = plan.kw
    female = plan.patient.sex == "F"
    hx = (93.0 if female else 88.0) * k
    return np.array([side * hx, -8.0 * k, plan.z(0.473)]), (21.0 if female else 24.0) * k


def paint_pelvis(cv: Canvas, plan: Plan) -> dict[str, Point]:
    """Iliac wings, acetabula, ischia, pubic rami and symphysis."""
    marks = {}
    for side, name in ((-1.0, "right"), (1.0, "left")):
        marks[f"bone:pelvic:{name}"] = _iliac_wing(cv, plan, side)
        _hip_bone(cv, plan, side)
    return marks


def _iliac_wing(cv: Canvas, plan: Plan, side: float) -> Point:
    """Curved plate flaring from the sacroiliac joint to the crest and the anterior spine."""
    k = plan.kw * (1.04 if plan.patient.sex == "F" else 1.0)
    yc = 5.0 * k
    top, bottom = plan.z(0.388), plan.z(0.466)
    box = cv.box((side * 20.0, yc - 120.0 * k, bottom), (side * 150.0 * k, yc + 120.0 * k, top))
    if box is None:
        return (side * 110.0 * k, yc, plan.z(0.415))
    f = plan.f(box.z)  # (d, 1, 1)
    a = k * np.interp(f, [0.39, 0.42, 0.445, 0.466], [128, 120, 102, 88]).astype(np.float32)
    b = k * np.interp(f, [0.39, 0.42, 0.445, 0.466], [88, 84, 78, 72]).astype(np.float32)
    t = k * np.interp(f, [0.39, 0.40, 0.43, 0.466], [13, 9, 7, 14]).astype(np.float32)
    dy = box.y - np.float32(yc)
    ax = np.abs(box.x)
    theta = np.arctan2(ax, dy)  # 0 posterior, π/2 lateral, π anterior
    rho = np.hypot(ax, dy)
    rb = 1.0 / np.sqrt((np.sin(theta) / a) ** 2 + (np.cos(theta) / b) ** 2)
    deg = np.degrees(theta)
    f_top = np.where(
        deg > 70, 0.392 + 0.05 * ((deg - 70) / 48) ** 2, 0.392 + 0.018 * ((70 - deg) / 40) ** 2
    )
    lo = np.interp(f, [0.39, 0.466], [28.0, 42.0])
    hi = np.interp(f, [0.39, 0.44, 0.466], [118.0, 112.0, 100.0])
    mask = (rho <= rb) & (rho >= rb - t) & (deg >= lo) & (deg <= hi) & (f >= f_top)
    cv.fill(PELVIS, box, mask)
    zm = plan.z(0.418)
    am, bm = 120.0 * k, 84.0 * k
    th = np.radians(75.0)
    rm = 1.0 / np.sqrt((np.sin(th) / am) ** 2 + (np.cos(th) / bm) ** 2) - 4.5 * k
    return (side * rm * np.sin(th), yc + rm * np.cos(th), zm)


def _hip_bone(cv: Canvas, plan: Plan, side: float) -> None:
    """Acetabular cup over the femoral head, iliac body, ischium, symphysis, pubic rami."""
    k = plan.kw
    hc, rh = hip_centre(plan, side)
    hx, yh, zh = hc
    box = cv.box(hc - rh - 14.0, hc + rh + 14.0)
    if box is not None:
        q_out = ellipsoid_q(box, hc, (rh + 12.0,) * 3)
        q_in = ellipsoid_q(box, hc, (rh + 1.5,) * 3)
        roof = ((box.x - hx) * side < 6.0 * k) | (box.z > zh + 6.0 * k)
        cv.fill(PELVIS, box, (q_out <= 1) & (q_in > 1) & roof)
    blobs = [
        ((hx - side * 16 * k, yh + 10 * k, zh + 32 * k), (18 * k, 26 * k, 30 * k)),
        ((hx - side * 24 * k, yh + 30 * k, zh - 36 * k), (13 * k, 18 * k, 28 * k)),
    ]
    sym_y, sym_z = -58.0 * k, plan.z(0.487)
    blobs.append(((side * 8 * k, sym_y, sym_z), (9 * k, 10 * k, 20 * k)))
    for c, r in blobs:
        cv.blob(PELVIS, c, r)
    superior = [
        (hx - side * 20 * k, yh - 16 * k, zh + 2 * k),
        (side * 40 * k, sym_y + 6 * k, sym_z + 6 * k),
        (side * 6 * k, sym_y, sym_z),
    ]
    cv.tube(PELVIS, superior, [cv.thin(10 * k), cv.thin(8 * k), cv.thin(8 * k)])
    inferior = [
        (side * 6 * k, sym_y + 4 * k, sym_z - 16 * k),
        (hx - side * 30 * k, yh + 26 * k, zh - 58 * k),
    ]
    cv.tube(PELVIS, inferior, cv.thin(7 * k))


def paint_femora(cv: Canvas, plan: Plan) -> dict[str, Point]:
    """Femoral heads, necks, trochanters and shafts (the shaft angles in toward the knee)."""
    k = plan.kw
    marks = {}
    for side, name in ((-1.0, "right"), (1.0, "left")):
        hc, rh = hip_centre(plan, side)
        hx, yh, zh = hc
        cv.blob(FEMUR, hc, (rh,) * 3)
        neck_end = (hx + side * 32 * k, yh + 6 * k, zh - 22 * k)
        cv.tube(FEMUR, [hc, neck_end], [15 * k, 16 * k])
        for c, r in (
            ((hx + side * 45 * k, yh + 10 * k, zh - 14 * k), (15 * k, 20 * k, 24 * k)),
            ((hx + side * 18 * k, yh + 16 * k, zh - 52 * k), (9 * k, 9 * k, 10 * k)),
        ):
            cv.blob(FEMUR, c, r)
        top = np.array([hx + side * 36 * k, yh + 8 * k, zh - 40 * k])
        knee = np.array([hx - side * 8 * k, yh - 2 * k, plan.z(0.75)])
        cv.tube(FEMUR, [neck_end, top, knee], [16 * k, 14 * k, 13 * k])
        t = 80.0 * k / (top[2] - knee[2])
        marks[f"bone:femur:{name}"] = tuple(float(v) for v in top + (knee - top) * t)
    return marks
