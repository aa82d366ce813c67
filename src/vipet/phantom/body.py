"""Body wall: skin outline, subcutaneous fat, muscle core, the body cavity, the diaphragm,
the big trunk muscles (paraspinal, psoas, iliacus), breasts and the fat pads that hold
lymph nodes (axillae, jugular chains)."""

from __future__ import annotations

import numpy as np

from vipet.phantom.labels import ORGANS
from vipet.phantom.plan import TRUNK_P, Plan
from vipet.phantom.shapes import Canvas, profile_q

FAT, MUSCLE, MED = ORGANS["fat"], ORGANS["muscle"], ORGANS["mediastinum"]
# Fat column along each jugular chain (cervical nodes II–IV): f, |x|, y at 170 cm.
JUGULAR_F, JUGULAR_X, JUGULAR_Y = (
    [0.095, 0.13, 0.165],
    [40.0, 38.0, 46.0],
    [0.0, -2.0, -4.0],
)  # superellipse exponent of the trunk: a rounded box, flatter than an ellipse


def paint_trunk(cv: Canvas, plan: Plan) -> None:
    """Skin → fat, core → muscle, cavity → mediastinal tissue above the diaphragm and
    visceral fat below it, with a 5 mm muscular diaphragm between them."""
    top, bottom = plan.z(0.095), plan.z(0.545)
    zs = np.linspace(bottom, top, 64)
    _, cy, hw, hd = plan.outline(zs)
    reach_x, reach_y = float(hw.max()) + 5, float(np.abs(cy).max() + hd.max()) + 5
    box = cv.box((-reach_x, -reach_y, bottom), (reach_x, reach_y, top))
    if box is None:
        return
    z = box.z[:, 0, 0]
    for label, profile in ((FAT, plan.outline), (MUSCLE, plan.core)):
        cx, cy, hw, hd = profile(z)
        cv.fill(label, box, profile_q(box, cx, cy, hw, hd, TRUNK_P) <= 1.0)
    cx, cy, hw, hd = plan.cavity(z)
    inside = profile_q(box, cx, cy, hw, hd, TRUNK_P) <= 1.0
    dome = plan.dome(box.x, box.y)  # (1, h, w)
    sub = cv.labels[box.sl]
    above = box.z > dome + np.float32(5.0)
    sub[inside] = np.where(above, np.int16(MED), np.int16(FAT))[inside]
    cv.fill(MUSCLE, box, inside & ~above & (box.z > dome))


def paint_thighs(cv: Canvas, plan: Plan) -> None:
    """Two thighs below the hips: fat only where there was air, muscle over that fat."""
    top = plan.z(0.47)
    bottom = float(cv.z[0]) - 1.0
    if bottom >= top:
        return
    k = plan.kw
    fat_k = 1.25 if plan.patient.sex == "F" else 0.8
    for side in (-1.0, 1.0):
        box = cv.box((side * 5.0, -150.0 * k, bottom), (side * 200.0 * k, 150.0 * k, top))
        if box is None:
            continue
        z = box.z[:, 0, 0]
        f = plan.f(z)
        cx = side * k * np.interp(f, [0.47, 0.52, 0.65], [82.0, 80.0, 72.0])
        cy = np.full_like(f, -4.0 * k)
        ax = k * np.interp(f, [0.47, 0.50, 0.54, 0.66], [40.0, 70.0, 72.0, 60.0])
        ay = k * np.interp(f, [0.47, 0.50, 0.54, 0.66], [50.0, 74.0, 75.0, 63.0])
        t = plan.fat_mm * fat_k * (0.6 + 0.4 * plan.patient.bmi / 24.0) * 0.8
        cv.fill(FAT, box, profile_q(box, cx, cy, ax + t, ay + t) <= 1.0, over=(0,))
        cv.fill(MUSCLE, box, profile_q(box, cx, cy, ax, ay) <= 1.0, over=(0, FAT))


def paint_breasts(cv: Canvas, plan: Plan, rng: np.random.Generator) -> None:
    """Women: two breasts on the anterior chest wall, fat with a glandular core."""
    if plan.patient.sex != "F":
        return
    k = plan.kw
    size = float(rng.uniform(0.8, 1.25)) * np.sqrt(plan.patient.bmi / 23.0)
    zc = plan.z(0.255)
    _, cy, _, hd = plan.core(zc)
    front = float(cy - hd)
    for side in (-1.0, 1.0):
        c = (side * 78.0 * k, front + 4.0, zc)
        r = (62.0 * k * size**0.5, 42.0 * size, 55.0 * k * size**0.5)
        cv.blob(FAT, c, r, over=(0, FAT))
        gland_c = (c[0] + side * 8.0, c[1] - 0.25 * r[1], zc + 10.0)
        gland_r = (0.55 * r[0], 0.5 * r[1], 0.5 * r[2])
        cv.blob(ORGANS["breast"], gland_c, gland_r, over=(FAT,))


def paint_trunk_muscles(cv: Canvas, plan: Plan) -> None:
    """Paraspinal columns beside the spine, psoas and iliacus in the retroperitoneum."""
    k = plan.kw
    top, bottom = plan.z(0.14), plan.z(0.47)
    box = cv.box((-90.0 * k, 0.0, bottom), (90.0 * k, 160.0 * k, top))
    if box is not None:
        z = box.z[:, 0, 0]
        f = plan.f(z)
        sy = plan.spine_y(z)
        levels = [0.14, 0.20, 0.26, 0.33, 0.40, 0.47]
        half_w = k * np.interp(f, levels, [16, 22, 26, 30, 32, 20])
        half_d = k * np.interp(f, levels, [14, 18, 20, 20, 20, 14])
        dy = k * np.interp(f, levels, [34, 38, 40, 40, 50, 40])
        for side in (-1.0, 1.0):
            cx = side * (half_w + 8.0 * k)
            q = profile_q(box, cx, sy + dy, half_w, half_d)
            cv.fill(MUSCLE, box, q <= 1.0, over=(FAT, MED))
    for side in (-1.0, 1.0):
        path = []
        for f, x, dy in ((0.33, 22, 2), (0.37, 34, 2), (0.40, 44, -2), (0.43, 56, -18)):
            z = plan.z(f)
            path.append((side * x * k, float(plan.spine_y(z)) + dy * k, z))
        path += [(side * 66 * k, -22.0 * k, plan.z(0.46)), (side * 72 * k, -42.0 * k, plan.z(0.49))]
        radii = np.array([8, 17, 23, 24, 21, 17]) * k
        cv.tube(MUSCLE, path, radii, over=(FAT,))
        c = (side * 82.0 * k, 2.0 * k, plan.z(0.425))
        r = (26.0 * k, 34.0 * k, 34.0 * k)
        cv.blob(MUSCLE, c, r, over=(FAT,))


def paint_fat_pads(cv: Canvas, plan: Plan) -> dict[str, tuple[float, float, float]]:
    """Fat where lymph nodes live: axillae, supraclavicular fossae and the jugular chains
    of the neck. Returns the axillary and supraclavicular node points."""
    k = plan.kw
    z = plan.z(0.205)
    _, cy, hw, _ = plan.cavity(z)
    marks = {}
    for side, name in ((-1.0, "right"), (1.0, "left")):
        pads = [
            (
                (side * (float(hw) + 30.0 * k), float(cy) + 5.0 * k, z),
                (16.0 * k, 28.0 * k, 30.0 * k),
            ),
            ((side * 60.0 * k, 4.0 * k, plan.z(0.163)), (18.0 * k, 15.0 * k, 12.0 * k)),
        ]
        for c, r in pads:
            cv.blob(FAT, c, r, over=(MUSCLE,))
        marks[f"node:axillary:{name}"] = pads[0][0]
        marks[f"node:supraclavicular:{name}"] = pads[1][0]
        top, bottom = plan.z(0.095), plan.z(0.165)
        box = cv.box((side * 20.0 * k, -30.0 * k, bottom), (side * 55.0 * k, 25.0 * k, top))
        if box is not None:
            zz = box.z[:, 0, 0]
            f = plan.f(zz)
            cx = side * k * np.interp(f, JUGULAR_F, JUGULAR_X)
            cyy = k * np.interp(f, JUGULAR_F, JUGULAR_Y)
            q = profile_q(box, cx, cyy, np.full_like(f, 9.0 * k), np.full_like(f, 13.0 * k))
            cv.fill(FAT, box, q <= 1.0, over=(MUSCLE,))
    return marks
