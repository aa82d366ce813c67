"""Head: scalp and face, skull vault and base, facial bones, brain (cortex, white matter,
deep nuclei, ventricles, cerebellum, stem), eyes, sinuses and pharynx, salivary glands
and tonsils."""

from __future__ import annotations

import numpy as np

from vipet.phantom.labels import ORGANS
from vipet.phantom.plan import Plan
from vipet.phantom.shapes import Box, Canvas, ellipsoid, ellipsoid_q

FAT, MUSCLE, CSF = ORGANS["fat"], ORGANS["muscle"], ORGANS["csf"]
SKULL, AIR = ORGANS["skull"], ORGANS["airway"]


class Head:
    """Head geometry of one patient (cranium ellipsoid, skull base profile)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        sex = 0.95 if plan.patient.sex == "F" else 1.0
        self.k = (plan.height_mm / 1700.0) ** 0.3 * sex
        k = self.k
        self.height = 0.062 * plan.height_mm
        self.centre = (0.0, 8.0 * k, -self.height)
        self.radii = (76.0 * k, 97.0 * k, self.height)

    def floor(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """World z of the floor of the cranial cavity over (x, y): anterior fossa (orbital
        roofs) high, middle fossa lower and deepest laterally (temporal lobes), posterior
        fossa lowest."""
        k, z = self.k, self.plan.z
        ys = np.array([-40.0, -15.0, 15.0, 40.0]) * k + self.centre[1]
        base = np.interp(y, ys, [z(0.056), z(0.066), z(0.074), z(0.084)]).astype(np.float32)
        middle = np.interp(y, ys, [0.0, 1.0, 0.7, 0.3]).astype(np.float32)
        lateral = np.minimum((x / np.float32(50.0 * k)) ** 2, 1.0)
        return base - np.float32(24.0 * k) * middle * lateral

    def vault_bottom(self, y: np.ndarray) -> np.ndarray:
        """Lowest z of the skull vault over y: forehead to the orbital rims, temporal bones
        to the zygoma, occiput down to the neck."""
        k, z = self.k, self.plan.z
        ys = np.array([-100.0, -40.0, 40.0]) * k + self.centre[1]
        return np.interp(y, ys, [z(0.058), z(0.082), z(0.090)]).astype(np.float32)

    def shrunk(self, mm: float) -> tuple[float, float, float]:
        return tuple(r - mm for r in self.radii)  # type: ignore[return-value]

    def box(self, cv: Canvas, pad: float = 0.0) -> Box | None:
        lo = np.subtract(self.centre, self.radii) - pad
        hi = np.add(self.centre, self.radii) + pad
        return cv.box(lo, hi)


def paint_head(cv: Canvas, plan: Plan, rng: np.random.Generator) -> Head:
    head = Head(plan)
    _soft_tissue(cv, head)
    _skull(cv, head)
    _brain(cv, head, rng)
    _face(cv, head)
    return head


def _soft_tissue(cv: Canvas, head: Head) -> None:
    k, z = head.k, head.plan.z
    box = head.box(cv)
    if box is not None:
        # The cranium ends at the skull base; below it the face and neck take over.
        vault = box.z > head.vault_bottom(box.y) - np.float32(8.0 * k)
        cv.fill(FAT, box, ellipsoid(box, head.centre, head.radii) & vault, over=(0,))
        inner = ellipsoid(box, head.centre, head.shrunk(5.0)) & vault
        below = box.z < head.floor(box.x, box.y)
        cv.fill(MUSCLE, box, inner & below)
        cv.fill(CSF, box, inner & ~below)
    face_c, face_r = (0.0, -28.0 * k, z(0.090)), (64.0 * k, 70.0 * k, 0.045 * head.plan.height_mm)
    nose_c, nose_r = (0.0, -100.0 * k, z(0.080)), (11.0 * k, 16.0 * k, 20.0 * k)
    for c, r in ((face_c, face_r), (nose_c, nose_r)):
        cv.blob(FAT, c, r, over=(0,))
    cv.blob(MUSCLE, face_c, np.subtract(face_r, 7.0), over=(FAT,))


def _skull(cv: Canvas, head: Head) -> None:
    """Vault: a 7 mm shell under the scalp down to the skull base; base: a plate under the
    cranial cavity with the foramen magnum open for the brain stem."""
    box = head.box(cv)
    if box is None:
        return
    floor = head.floor(box.x, box.y)
    outer = ellipsoid_q(box, head.centre, head.shrunk(5.0)) <= 1.0
    inner = ellipsoid_q(box, head.centre, head.shrunk(12.0)) <= 1.0
    cv.fill(SKULL, box, outer & ~inner & (box.z > head.vault_bottom(box.y)))
    k = head.k
    hole = (
        (np.abs(box.x) < 16.0 * k)
        & (box.y > head.centre[1] + 2 * k)
        & (box.y < head.centre[1] + 38 * k)
    )
    base = inner & (box.z <= floor) & (box.z > floor - 6.0 * k) & ~hole
    cv.fill(SKULL, box, base)


def _face(cv: Canvas, head: Head) -> None:
    """Facial bones, orbits and eyes, air spaces, salivary glands and tonsils."""
    k, z = head.k, head.plan.z
    for s in (-1.0, 1.0):
        mandible = [
            (s * 48 * k, 5 * k, z(0.076)),
            (s * 50 * k, 8 * k, z(0.112)),
            (s * 40 * k, -38 * k, z(0.128)),
            (0.0, -84 * k, z(0.131)),
        ]
        cv.tube(SKULL, mandible, cv.thin(7.0 * k))
        maxilla = [
            (s * 36 * k, -18 * k, z(0.104)),
            (s * 30 * k, -62 * k, z(0.106)),
            (0.0, -84 * k, z(0.106)),
        ]
        cv.tube(SKULL, maxilla, cv.thin(9.0 * k))
        zygoma = [(s * 52 * k, -55 * k, z(0.074)), (s * 66 * k, -12 * k, z(0.076))]
        cv.tube(SKULL, zygoma, cv.thin(5.0 * k))
        cv.blob(FAT, (s * 33 * k, -62 * k, z(0.064)), (17 * k, 24 * k, 16 * k), over=(MUSCLE, CSF))
        cv.blob(ORGANS["eyes"], (s * 32 * k, -70 * k, z(0.064)), (12 * k, 12 * k, 12 * k))
        cv.blob(AIR, (s * 27 * k, -52 * k, z(0.088)), (13 * k, 17 * k, 15 * k), over=(MUSCLE, FAT))
        salivary = ORGANS["salivary"]
        cv.blob(
            salivary,
            (s * 48 * k, -4 * k, z(0.092)),
            (10 * k, 20 * k, 22 * k),
            over=(MUSCLE, FAT),
        )
        cv.blob(
            salivary,
            (s * 33 * k, -42 * k, z(0.124)),
            (11 * k, 12 * k, 9 * k),
            over=(MUSCLE, FAT),
        )
        cv.blob(
            ORGANS["tonsils"],
            (s * 13 * k, -22 * k, z(0.105)),
            (8 * k, 9 * k, 11 * k),
            over=(MUSCLE,),
        )
    cv.blob(AIR, (0.0, -65 * k, z(0.085)), (9 * k, 28 * k, 20 * k), over=(MUSCLE, FAT))
    cv.blob(AIR, (0.0, -80 * k, z(0.045)), (12 * k, 6 * k, 8 * k), over=(SKULL,))
    pharynx = [(0.0, -34 * k, z(0.084)), (0.0, -20 * k, z(0.100)), (0.0, -16 * k, z(0.125))]
    cv.tube(AIR, pharynx, cv.thin(7.0 * k), over=(MUSCLE, FAT, ORGANS["tonsils"]))


def _brain(cv: Canvas, head: Head, rng: np.random.Generator) -> None:
    """Brain inside the cranial cavity: cortex shell, gyrated white matter, deep grey
    nuclei, lateral ventricles, cerebellum and brain stem."""
    box = head.box(cv)
    if box is None:
        return
    k, z = head.k, head.plan.z
    grey, white = ORGANS["brain"], ORGANS["brain_white"]
    floor = head.floor(box.x, box.y)
    brain = (ellipsoid_q(box, head.centre, head.shrunk(14.0)) <= 1.0) & (box.z > floor + 2.0)
    cv.fill(grey, box, brain)
    # Gyri: the grey–white boundary wanders by a few mm (phase drawn per study).
    ph = rng.uniform(0, 2 * np.pi, 3).astype(np.float32)
    wave = np.float32(1.0 / (6.5 * k))
    g = (
        np.sin(box.x * wave + ph[0]) * np.sin(box.y * wave + ph[1])
        + np.sin(box.z * wave + ph[2]) * 0.5
    )
    q_white = ellipsoid_q(box, head.centre, head.shrunk(21.0))
    cv.fill(white, box, brain & (q_white <= 1.0 - 0.09 * g) & (box.z > floor + 12.0))
    cz = head.centre[2]
    for s in (-1.0, 1.0):
        cv.blob(grey, (s * 18 * k, 4 * k, cz - 8 * k), (10 * k, 24 * k, 13 * k), over=(white,))
        cv.blob(CSF, (s * 7 * k, 4 * k, cz + 6 * k), (5 * k, 28 * k, 8 * k), over=(white, grey))
    cb_c, cb_r = (0.0, 52 * k, z(0.078)), (52 * k, 32 * k, 21 * k)
    cb_box = cv.box(np.subtract(cb_c, cb_r), np.add(cb_c, cb_r))
    if cb_box is not None:
        mask = ellipsoid(cb_box, cb_c, cb_r) & (cb_box.z > head.floor(cb_box.x, cb_box.y) + 1.0)
        cv.fill(grey, cb_box, mask, over=(CSF, white, grey))
    stem = [(0.0, 6 * k, z(0.052)), (0.0, 16 * k, z(0.070)), (0.0, 22 * k, z(0.084))]
    cv.tube(white, stem, [12 * k, 11 * k, 9 * k], over=(CSF, grey, white, SKULL, MUSCLE))
