"""Hollow viscera: stomach with its gas bubble, duodenal C-loop, the colon frame from
caecum to rectum with gas in non-dependent (anterior, the patient lies supine) segments,
and small-bowel loops as a smooth random walk filling the middle of the abdomen."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vipet.phantom.labels import ORGANS
from vipet.phantom.plan import Plan
from vipet.phantom.shapes import Box, Canvas

FAT = ORGANS["fat"]
BOWEL, GAS, STOMACH = ORGANS["bowel"], ORGANS["bowel_gas"], ORGANS["stomach"]


def _gas_clip(
    path: np.ndarray, radii: np.ndarray, segments: set[int], frac: float
) -> Callable[[Box, int], np.ndarray]:
    """Clip to the anterior part (y below the segment's centre line) of chosen segments."""

    def clip(box: Box, i: int) -> np.ndarray:
        if i not in segments:
            return np.zeros((1, 1, 1), bool)
        y_line = 0.5 * (path[i, 1] + path[i + 1, 1]) - frac * 0.5 * (radii[i] + radii[i + 1])
        return box.y < np.float32(y_line)

    return clip


def paint_stomach(cv: Canvas, plan: Plan, rng: np.random.Generator) -> None:
    """J-shaped stomach under the left dome (fundus high and posterior, antrum crossing
    the midline anteriorly), then the duodenum around the pancreatic head."""
    k, z = plan.kw, plan.z
    zl = z(plan.dome_left_f)
    fill = rng.uniform(0.75, 1.15)
    path = np.array(
        [
            (62 * k, 18 * k, zl - 24 * k),
            (64 * k, -8 * k, zl - 60 * k),
            (40 * k, -48 * k, z(0.345)),
            (8 * k, -58 * k, z(0.345)),
            (-18 * k, -40 * k, z(0.338)),
        ]
    )
    radii = np.array([34.0, 32.0, 26.0, 20.0, 12.0]) * k * fill
    cv.tube(STOMACH, path, radii, over=(FAT,))
    if rng.random() < 0.75:
        clip = _gas_clip(path, radii, {1, 2, 3}, rng.uniform(0.1, 0.5))
        cv.tube(GAS, path, radii, over=(STOMACH,), clip=clip)
    duodenum = [
        path[-1],
        (-40 * k, -12 * k, z(0.345)),
        (-46 * k, 2 * k, z(0.37)),
        (-12 * k, 12 * k, z(0.385)),
        (22 * k, 6 * k, z(0.37)),
    ]
    cv.tube(BOWEL, duodenum, cv.thin(12.0 * k), over=(FAT,))


def paint_colon(cv: Canvas, plan: Plan, rng: np.random.Generator) -> None:
    """Caecum → ascending → hepatic flexure → sagging transverse → splenic flexure →
    descending → sigmoid → rectum, each point jittered per study."""
    k, z = plan.kw, plan.z
    sag = rng.uniform(0.0, 0.03)
    pts = [
        (-72, -22, 0.445, 28),
        (-84, 0, 0.41, 26),
        (-88, 10, 0.37, 24),
        (-76, -6, 0.345, 23),
        (-40, -58, 0.37 + sag, 22),
        (0, -66, 0.385 + sag, 22),
        (40, -56, 0.37 + sag, 22),
        (80, 8, 0.318, 21),
        (92, 24, 0.35, 19),
        (94, 20, 0.40, 18),
        (84, 8, 0.425, 18),
        (60, -22, 0.44, 17),
        (22, -12, 0.446, 17),
        (-10, 22, 0.45, 17),
        (0, 50, 0.458, 20),
        (0, 56, 0.48, 20),
        (0, 46, 0.51, 15),
    ]
    path = np.array([(x * k, y * k, z(f)) for x, y, f, _ in pts])
    path[1:-3] += rng.normal(0.0, 5.0, (len(path) - 4, 3)) * np.array([1.0, 1.0, 1.5])
    radii = np.array([r for *_, r in pts], float) * k * rng.uniform(0.85, 1.15)
    cv.tube(BOWEL, path, radii, over=(FAT,))
    gassy = {i for i in range(len(path) - 1) if rng.random() < 0.45}
    cv.tube(
        GAS, path, radii, over=(BOWEL,), clip=_gas_clip(path, radii, gassy, rng.uniform(0.0, 0.4))
    )


def paint_small_bowel(cv: Canvas, plan: Plan, rng: np.random.Generator) -> None:
    """Loops as a smooth random walk kept inside an ellipsoid in the mid-abdomen."""
    k, z = plan.kw, plan.z
    centre = np.array([-5 * k, -25 * k, z(0.405)])
    semi = np.array([78 * k, 48 * k, 0.055 * plan.height_mm])
    p = np.array([22 * k, 6 * k, z(0.37)])
    d = np.array([-1.0, -0.3, -0.2])
    d /= np.linalg.norm(d)
    step = 13.0 * k
    pts = [p.copy()]
    for _ in range(int(rng.integers(70, 95))):
        d = d + rng.normal(0.0, 0.45, 3)
        q = (p - centre) / semi
        if float(q @ q) > 0.8:  # steer back inside: pull toward the centre
            d -= 1.5 * (q / semi) / np.linalg.norm(q / semi)
        d /= np.linalg.norm(d)
        p = p + d * step
        pts.append(p.copy())
    radius = cv.thin(12.0 * k * rng.uniform(0.85, 1.1))
    cv.tube(BOWEL, np.array(pts), radius, over=(FAT,))
