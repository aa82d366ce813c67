"""Abdominal and pelvic viscera: liver with gallbladder and veins, spleen, kidneys with
their collecting systems and ureters, stomach, pancreas, abdominal and iliac vessels,
bladder, prostate or uterus, and the lymph-node stations of the abdomen and groin.

Paint order encodes what displaces what: vessels and kidneys first, then solid organs
painted only over visceral fat (so they wrap around what is already there), then the
hollow organs (`vipet.phantom.bowel`), then the bladder, which pushes bowel aside.
"""

from __future__ import annotations

import numpy as np

from vipet.phantom.labels import ORGANS
from vipet.phantom.plan import TRUNK_P, Plan
from vipet.phantom.shapes import (
    Box,
    Canvas,
    ellipsoid_q,
    oriented_q,
    rot_z,
    rotation,
)
from vipet.phantom.skeleton import hip_centre

FAT, MUSCLE = ORGANS["fat"], ORGANS["muscle"]
VESSELS, LIVER = ORGANS["vessels"], ORGANS["liver"]
BOWEL, GAS = ORGANS["bowel"], ORGANS["bowel_gas"]
Point = tuple[float, float, float]


class Abdomen:
    """Per-study abdominal geometry shared by the builders."""

    def __init__(self, plan: Plan, rng: np.random.Generator) -> None:
        self.plan, self.rng = plan, rng
        k = self.k = plan.kw
        self.z_right = plan.z(plan.dome_right_f)
        self.z_left = plan.z(plan.dome_left_f)
        self.liver_k = float(rng.uniform(0.9, 1.15)) * k
        self.spleen_k = float(rng.uniform(0.85, 1.2)) * k
        volume_ml = float(np.exp(rng.uniform(np.log(60.0), np.log(450.0))))
        r0 = (3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
        self.bladder_r = np.array([1.2, 0.9, 0.95]) * r0 / (1.2 * 0.9 * 0.95) ** (1 / 3)
        z_bottom = plan.z(0.482)
        self.bladder_c = np.array(
            [0.0, -46.0 * k + 0.9 * self.bladder_r[1], z_bottom + self.bladder_r[2]]
        )

    def sy(self, f: float) -> float:
        return float(self.plan.spine_y(self.plan.z(f)))

    def aorta_at(self, f: float) -> tuple[float, float]:
        """(x, y) of the abdominal aorta's centre line at level f (as painted in thorax)."""
        k = self.k
        fs, xs = [0.29, 0.31, 0.35, 0.395], [10 * k, 5 * k, 4 * k, 2 * k]
        dys = [27 * k, 28 * k, 28 * k, 26 * k]
        return float(np.interp(f, fs, xs)), self.sy(f) - float(np.interp(f, fs, dys))


def paint_abdomen(
    cv: Canvas, plan: Plan, rng: np.random.Generator
) -> tuple[Abdomen, dict[str, Point]]:
    """Solid abdominal organs, urinary tract and vessels; returns the shared geometry (for
    the pelvic organs painted after the bowel) and the abdominal node stations."""
    ab = Abdomen(plan, rng)
    _vessels(cv, ab)
    pelves = _kidneys(cv, ab)
    _ureters(cv, ab, pelves)
    _gallbladder(cv, ab)
    _liver(cv, ab)
    _liver_veins(cv, ab)
    _spleen(cv, ab)
    _pancreas(cv, ab)
    return ab, _node_points(ab)


def _vessels(cv: Canvas, ab: Abdomen) -> None:
    """IVC, iliac arteries and veins down the thighs, portal and splenic veins."""
    plan, k, z, sy = ab.plan, ab.k, ab.plan.z, ab.sy
    over = (FAT, MUSCLE, ORGANS["mediastinum"])
    ivc = [
        (-22 * k, -8 * k, z(0.272)),
        (-22 * k, 10 * k, z(0.292)),
        (-20 * k, sy(0.32) - 22 * k, z(0.32)),
        (-20 * k, sy(0.36) - 22 * k, z(0.36)),
        (-14 * k, sy(0.395) - 20 * k, z(0.395)),
        (-6 * k, sy(0.405) - 18 * k, z(0.405)),
    ]
    cv.tube(VESSELS, ivc, 12.0 * k, over=over)
    bif = (2 * k, sy(0.395) - 26 * k, z(0.395))
    for s in (-1.0, 1.0):
        hx = float(hip_centre(plan, s)[0][0])
        artery = [
            bif,
            (s * 40 * k, sy(0.43) - 35 * k, z(0.43)),
            (s * 62 * k, -25 * k, z(0.465)),
            (hx - s * 4 * k, -46 * k, z(0.495)),
            (s * 80 * k, -40 * k, z(0.56)),
            (s * 74 * k, -28 * k, z(0.66)),
        ]
        cv.tube(
            VESSELS, artery, [cv.thin(8 * k), cv.thin(6.5 * k), *[cv.thin(5 * k)] * 4], over=over
        )
        cv.tube(VESSELS, [artery[1], (s * 52 * k, 38 * k, z(0.462))], cv.thin(4 * k), over=over)
        vein = [
            ivc[-1],
            (s * 38 * k, sy(0.43) - 22 * k, z(0.435)),
            (s * 58 * k, -14 * k, z(0.47)),
            (hx - s * 18 * k, -40 * k, z(0.50)),
            (s * 70 * k, -34 * k, z(0.58)),
            (s * 66 * k, -20 * k, z(0.66)),
        ]
        cv.tube(VESSELS, vein, [cv.thin(9 * k), *[cv.thin(7 * k)] * 5], over=over)
    confluence = (-4 * k, 2 * k, z(0.338))
    cv.tube(
        VESSELS,
        [confluence, (-30 * k, 8 * k, z(0.318)), (-50 * k, 12 * k, z(0.31))],
        cv.thin(7 * k),
        over=over,
    )
    cv.tube(
        VESSELS,
        [confluence, (45 * k, 22 * k, z(0.33)), (78 * k, 35 * k, z(0.315))],
        cv.thin(4.5 * k),
        over=over,
    )


def _kidneys(cv: Canvas, ab: Abdomen) -> dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Bean-shaped kidneys (upper pole medial and posterior, hilum anteromedial) with the
    renal pelvis in the hilum and renal vessels to the IVC and aorta."""
    plan, k, rng = ab.plan, ab.k, ab.rng
    out = {}
    for s, f in ((-1.0, 0.350), (1.0, 0.338)):
        kk = float(rng.normal(1.0, 0.06)) * k
        c = np.array([s * 67 * k, ab.sy(f) + 6 * k, plan.z(f)]) + rng.normal(0.0, 4.0, 3)
        axis = np.array([-s * 0.22, 0.18, 1.0]) + rng.normal(0.0, 0.05, 3)
        hilum = np.array([-s * np.cos(np.radians(35)), -np.sin(np.radians(35)), 0.0])
        rot = rotation(axis, hilum)
        r = np.array([28.0, 24.0, 55.0]) * kk
        label = ORGANS["kidney_right" if s < 0 else "kidney_left"]
        cv.oriented(label, c, r, rot, over=(FAT, MUSCLE))
        pc = c + rot[0] * 0.55 * r[0]
        cv.oriented(
            ORGANS["renal_pelvis"],
            pc,
            np.array([13.0, 10.0, 27.0]) * kk,
            rot,
            over=(label, FAT),
        )
        out[s] = (c, rot, r)
        target = (*ab.aorta_at(f), c[2])
        vein_end = (-20 * k, ab.sy(f) - 22 * k, c[2] + 4 * k)
        cv.tube(VESSELS, [pc + rot[0] * 10 * kk, vein_end], cv.thin(5 * k), over=(FAT,))
        cv.tube(
            VESSELS, [pc + rot[0] * 8 * kk - rot[1] * 6 * kk, target], cv.thin(3 * k), over=(FAT,)
        )
    return out


def _ureters(
    cv: Canvas, ab: Abdomen, kidneys: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> None:
    """Ureters from each renal pelvis along the psoas, over the pelvic brim, to the bladder."""
    k, z = ab.k, ab.plan.z
    bc, br = ab.bladder_c, ab.bladder_r
    for s, (c, rot, r) in kidneys.items():
        start = c + rot[0] * 0.8 * r[0] - rot[2] * 0.35 * r[2]
        path = [
            start,
            (s * 42 * k, ab.sy(0.375) - 10 * k, z(0.375)),
            (s * 44 * k, ab.sy(0.405) - 14 * k, z(0.405)),
            (s * 50 * k, 24 * k, z(0.44)),
            (s * 46 * k, 40 * k, z(0.462)),
            (s * 20 * k, bc[1] + 0.6 * br[1], bc[2] - 0.6 * br[2]),
        ]
        cv.tube(ORGANS["ureter"], path, cv.thin(3.0 * k), over=(FAT,))


def _gallbladder(cv: Canvas, ab: Abdomen) -> None:
    """Pear-shaped gallbladder under the liver, fundus pointing anteroinferiorly."""
    k = ab.k
    c = np.array([-48 * k, -42 * k, ab.z_right - 115 * ab.liver_k])
    rot = rotation((0.2, -0.5, -0.85), (1.0, 0.0, 0.0))
    size = ab.rng.uniform(0.8, 1.2)
    cv.oriented(ORGANS["gallbladder"], c, np.array([15.0, 15.0, 36.0]) * k * size, rot, over=(FAT,))


def _liver(cv: Canvas, ab: Abdomen) -> None:
    """Right lobe under the right dome, left lobe tapering across the midline, the
    inferior border rising from the right tip toward the left."""
    plan, k, kl, zr = ab.plan, ab.k, ab.liver_k, ab.z_right
    box = cv.box((-170 * k, -130 * k, zr - 210 * kl), (110 * k, 130 * k, zr + 5))
    if box is None:
        return
    right = ellipsoid_q(box, (-62 * k, 8 * k, zr - 62 * kl), (90 * kl, 96 * kl, 86 * kl), 2.2) <= 1
    left = ellipsoid_q(box, (5 * k, -40 * k, zr - 40 * kl), (78 * kl, 48 * kl, 42 * kl)) <= 1
    dome = plan.dome(box.x, box.y)
    z_inf = zr - 170 * kl + 0.6 * (box.x + 120 * k)
    mask = (right | left) & (box.z < dome - 4.0) & (box.z > z_inf)
    cv.fill(LIVER, box, mask, over=(FAT,))


def _liver_veins(cv: Canvas, ab: Abdomen) -> None:
    """Hepatic veins fanning from the IVC, portal branches (blood is darker than liver on
    unenhanced CT and colder on PET)."""
    k, z = ab.k, ab.plan.z
    root = (-20 * k, 12 * k, z(0.293))
    for end in (
        (-75 * k, -5 * k, z(0.305)),
        (-35 * k, -40 * k, z(0.300)),
        (5 * k, -32 * k, z(0.295)),
    ):
        cv.tube(VESSELS, [root, end], [cv.thin(5.5 * k), cv.thin(2.5 * k)], over=(LIVER,))
    hilum = (-50 * k, 12 * k, z(0.31))
    for end in ((-85 * k, 20 * k, z(0.32)), (-10 * k, -25 * k, z(0.30))):
        cv.tube(VESSELS, [hilum, end], [cv.thin(5 * k), cv.thin(2.5 * k)], over=(LIVER,))


def _spleen(cv: Canvas, ab: Abdomen) -> None:
    """Spleen along the posterolateral left wall, concave toward stomach and kidney."""
    plan, k, ks = ab.plan, ab.k, ab.spleen_k
    ang = np.radians(35.0 + ab.rng.normal(0.0, 6.0))
    rot = rot_z(ang)  # local u: outward (lateral-posterior), v: the long axis
    c = np.array([96 * k, 48 * k, ab.z_left - 58 * ks]) + ab.rng.normal(0.0, 4.0, 3)
    hollow = c - rot[0] * 40 * k

    def keep(box: Box) -> np.ndarray:
        dent = oriented_q(box, hollow, (30 * k, 52 * k, 70 * k), rot) > 1.0
        return dent & (box.z < plan.dome(box.x, box.y) - 4.0)

    cv.oriented(ORGANS["spleen"], c, np.array([30.0, 64.0, 56.0]) * ks, rot, over=(FAT,), keep=keep)


def _pancreas(cv: Canvas, ab: Abdomen) -> None:
    """Head in the duodenal loop, body across the spine, tail to the splenic hilum."""
    k, z = ab.k, ab.plan.z
    path = [
        (-28 * k, -2 * k, z(0.358)),
        (0.0, -14 * k, z(0.345)),
        (40 * k, 8 * k, z(0.335)),
        (78 * k, 32 * k, z(0.322)),
    ]
    cv.tube(ORGANS["pancreas"], path, np.array([16.0, 11.0, 11.0, 9.0]) * k, over=(FAT,))


def paint_pelvic_organs(cv: Canvas, ab: Abdomen) -> None:
    """Bladder (pushes bowel aside), then prostate or uterus."""
    k, rng = ab.k, ab.rng
    bc, br = ab.bladder_c, ab.bladder_r
    cv.blob(ORGANS["bladder"], bc, br, over=(FAT, BOWEL, GAS, MUSCLE), p=2.2)
    if ab.plan.patient.sex == "M":
        c, r = (0.0, -36 * k, bc[2] - br[2] - 14 * k), np.array([19.0, 15.0, 16.0]) * k
        cv.blob(ORGANS["prostate"], c, r, over=(FAT, MUSCLE, BOWEL))
        return
    size = rng.uniform(0.85, 1.15) * (0.75 if ab.plan.patient.age > 55 else 1.0)
    c = (0.0, bc[1] + br[1] + 12 * k, bc[2] + 0.3 * br[2] + 10 * k)
    rot = rotation((0.0, -0.6, 0.8), (1.0, 0.0, 0.0))
    cv.oriented(
        ORGANS["uterus"],
        c,
        np.array([30.0, 20.0, 38.0]) * k * size,
        rot,
        over=(FAT, BOWEL, GAS),
    )


def _node_points(ab: Abdomen) -> dict[str, Point]:
    """Para-aortic, mesenteric, iliac and inguinal stations (snapped to fat later)."""
    plan, k, z = ab.plan, ab.k, ab.plan.z
    ax, ay = ab.aorta_at(0.36)
    out: dict[str, Point] = {
        "node:paraaortic": (ax + 20 * k, ay - 6 * k, z(0.36)),
        "node:mesenteric": (-8 * k, ab.sy(0.375) - 62 * k, z(0.375)),
    }
    zi = z(0.50)
    _, cy, hw, hd = (float(v) for v in plan.core(zi))
    t = float(plan.fat(zi))
    for s, name in ((-1.0, "right"), (1.0, "left")):
        out[f"node:iliac:{name}"] = (s * 60 * k, -6 * k, z(0.452))
        hx = float(hip_centre(plan, s)[0][0])
        u = min(abs(hx) / hw, 0.95)
        front = cy - hd * (1.0 - u**TRUNK_P) ** (1 / TRUNK_P)
        out[f"node:inguinal:{name}"] = (hx - s * 6 * k, front - 0.5 * t, zi)
    return out
