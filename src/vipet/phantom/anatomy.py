"""Whole-body anatomy of one ViPET-Phantom study: an organ label volume with lesion
landmarks, and its CT (HU) and true FDG (SUV) values.

World frame: LPS mm (x to the patient's left, y posterior, z toward the head), z = 0 at
the vertex and the body toward −z; a scan covers the vertex to mid-thigh (≈ 0.63 ×
height). Craniocaudal positions scale with height, widths with frame and sex, fat with
BMI, and each study draws its own organ sizes and positions, heart axis, liver and
spleen size, bladder filling, stomach and bowel layout. Shapes are smooth implicit
functions (superellipsoids, stacks of axial superellipses, swept tubes, fissure planes,
height bands for ribs) evaluated only inside their bounding boxes (`vipet.phantom.shapes`).

Landmark keys (all LPS mm; nodes sit in fat / mediastinal tissue, never bone or lung):

- ``node:cervical_{II,III,IV}:{right,left}`` along the jugular chains, and
  ``node:cervical:{side}`` (= level III)
- ``node:supraclavicular:{side}``, ``node:axillary:{side}``, ``node:paratracheal:{side}``
- ``node:prevascular``, ``node:subcarinal``, ``node:hilar:{side}``
- ``node:paraaortic``, ``node:mesenteric``, ``node:iliac:{side}``, ``node:inguinal:{side}``
- ``bone:pelvic:{side}`` (iliac wing), ``bone:femur:{side}`` (proximal shaft)
- ``rib:{n}:{side}`` for n = 3…10 (a point on the lateral arc of the rib)

``vertebrae`` maps C1…C7, T1…T12, L1…L5, S1 to the centre of each vertebral body.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vipet.io.volume import Grid
from vipet.phantom.abdomen import paint_abdomen, paint_pelvic_organs
from vipet.phantom.body import (
    paint_breasts,
    paint_fat_pads,
    paint_thighs,
    paint_trunk,
    paint_trunk_muscles,
)
from vipet.phantom.bowel import paint_colon, paint_small_bowel, paint_stomach
from vipet.phantom.head import paint_head
from vipet.phantom.labels import N_LABELS, ORGANS
from vipet.phantom.plan import Patient, Plan, sample_patient
from vipet.phantom.shapes import Canvas
from vipet.phantom.skeleton import paint_skeleton
from vipet.phantom.thorax import paint_thorax
from vipet.phantom.tissues import tissue_values

Point = tuple[float, float, float]

# Tissue each landmark must lie in, in order of preference (a node prefers fat).
_NODE_TISSUE = ((ORGANS["fat"], ORGANS["mediastinum"]), (ORGANS["muscle"],))
_BONE_TISSUE = {
    "bone:pelvic": ORGANS["pelvis"],
    "bone:femur": ORGANS["femora"],
    "rib": ORGANS["ribs"],
}


@dataclass
class Anatomy:
    """Organ labels of one study on ``grid`` (ids in `ORGANS`) and where lesions go.

    ``body_top_z`` is the vertex (0 mm) and ``body_bottom_z`` the soles (−height);
    ``landmarks`` and ``vertebrae`` are LPS points in mm (keys: module docstring).
    """

    patient: Patient
    grid: Grid
    labels: np.ndarray  # (D, H, W) int16
    landmarks: dict[str, Point]
    vertebrae: dict[str, Point]
    body_top_z: float
    body_bottom_z: float


def build_anatomy(patient: Patient, grid: Grid, rng: np.random.Generator) -> Anatomy:
    """Paint the anatomy of ``patient`` on ``grid`` (axis-aligned, default direction;
    any field of view — structures outside it are skipped)."""
    plan = Plan(patient, rng)
    cv = Canvas(grid, N_LABELS)
    paint_trunk(cv, plan)
    paint_thighs(cv, plan)
    paint_breasts(cv, plan, rng)
    paint_head(cv, plan, rng)
    paint_trunk_muscles(cv, plan)
    marks = paint_fat_pads(cv, plan)
    vertebrae, bone_marks = paint_skeleton(cv, plan, rng)
    marks.update(paint_thorax(cv, plan, rng))
    abdomen, abdominal_marks = paint_abdomen(cv, plan, rng)
    marks.update(abdominal_marks)
    paint_stomach(cv, plan, rng)
    paint_colon(cv, plan, rng)
    paint_small_bowel(cv, plan, rng)
    paint_pelvic_organs(cv, abdomen)
    landmarks = {key: _snap(cv, p, _NODE_TISSUE) for key, p in sorted(marks.items())}
    for key, p in sorted(bone_marks.items()):
        tissue = _BONE_TISSUE[
            key.split(":")[0] if key.startswith("rib:") else key.rsplit(":", 1)[0]
        ]
        landmarks[key] = _snap(cv, p, ((tissue,),))
    return Anatomy(
        patient=patient,
        grid=grid,
        labels=cv.labels,
        landmarks=landmarks,
        vertebrae={k: tuple(float(v) for v in p) for k, p in vertebrae.items()},
        body_top_z=0.0,
        body_bottom_z=-plan.height_mm,
    )


def _snap(
    cv: Canvas, point: Point, tiers: tuple[tuple[int, ...], ...], radius: float = 30.0
) -> Point:
    """The point itself if its voxel is in the first tier's tissue, else the nearest voxel
    centre of that tissue within ``radius`` mm (then the next tier). Points outside the
    grid, or with no such tissue near, are returned unchanged."""
    p = tuple(float(v) for v in point)
    if cv.index(p) is None:
        return p
    for ids in tiers:
        if cv.at(p) in ids:
            return p
        box = cv.box(np.subtract(p, radius), np.add(p, radius))
        if box is None:
            continue
        ok = cv.lut(ids)[cv.labels[box.sl]]
        if not ok.any():
            continue
        d2 = (box.z - p[2]) ** 2 + ((box.y - p[1]) ** 2 + (box.x - p[0]) ** 2)
        d2 = np.where(ok, d2, np.inf)
        i, j, k = np.unravel_index(int(np.argmin(d2)), d2.shape)
        return (float(box.x[0, 0, k]), float(box.y[0, j, 0]), float(box.z[i, 0, 0]))
    return p


__all__ = [
    "ORGANS",
    "Anatomy",
    "Patient",
    "build_anatomy",
    "sample_patient",
    "tissue_values",
]
