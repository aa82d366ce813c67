"""Bones of the thoracic wall: ribs, sternum, clavicles and scapulae.

A rib is a band hugging the outside of the thoracic cavity. Around the cavity it runs
from the spine (angle 0, posterior) laterally (π/2) toward the sternum (π), dropping as it
goes — the anterior end lies three to four vertebral levels below the head. So for each
axial pixel the angle gives the height of the rib there, and the band is painted as a
short run of slices per pixel: no 3-D evaluation over the rib's tall bounding box.
"""

from __future__ import annotations

import numpy as np

from vipet.phantom.labels import ORGANS
from vipet.phantom.plan import TRUNK_P, Plan
from vipet.phantom.shapes import Box, Canvas, profile_q, rot_z

RIBS = ORGANS["ribs"]
Point = tuple[float, float, float]

# Rib n: where its bony part ends anteriorly (degrees from posterior), and how far its
# anterior end drops below its head (mm at 170 cm).
_RIB_END = (150, 140, 135, 135, 135, 134, 132, 125, 118, 108, 80, 55)
_RIB_DROP = (25, 50, 70, 80, 85, 88, 90, 90, 88, 85, 45, 30)
_RIB_START = np.radians(28.0)


def _outside(plan: Plan, ax: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Approximate distance (mm) outside the cavity boundary of the points (|x|, y, z)."""
    _, cy, hw, hd = plan.cavity(z)
    dy = np.abs(y - cy)
    qn = ((ax / np.maximum(hw, 1.0)) ** TRUNK_P + (dy / np.maximum(hd, 1.0)) ** TRUNK_P) ** (
        1.0 / TRUNK_P
    )
    r = np.hypot(ax, dy)
    return r - r / np.maximum(qn, 1e-6)


def _ray_point(
    plan: Plan, cy0: float, theta: float, z: float, offset: float
) -> tuple[float, float]:
    """(|x|, y) at ``offset`` mm outside the cavity along the ray at angle ``theta``."""
    r = np.arange(0.0, 300.0, 0.5)
    ax, y = r * np.sin(theta), cy0 + r * np.cos(theta)
    d = _outside(plan, ax, y, np.full_like(r, z))
    i = int(np.argmax(d >= offset))
    return float(ax[i]), float(y[i])


def _rib_z(z_head: float, drop: float, theta: np.ndarray | float) -> np.ndarray | float:
    """Height of a rib at angle ``theta`` around the cavity (0 at its head, posterior)."""
    return z_head - drop * (1.0 - np.cos(theta)) / 2.0


def paint_ribs(cv: Canvas, plan: Plan) -> dict[str, Point]:
    """Twelve pairs of ribs; returns ``rib:{n}:{side}`` lateral-arc points for ribs 3–10."""
    marks: dict[str, Point] = {}
    kz = plan.height_mm / 1700.0
    for n in range(1, 13):
        z_head = plan.vertebra_z(f"T{n}") + 4.0 * kz
        drop = _RIB_DROP[n - 1] * kz
        theta_end = np.radians(_RIB_END[n - 1])
        for side, name in ((-1.0, "right"), (1.0, "left")):
            point = _rib(cv, plan, z_head, drop, theta_end, side, wide=n == 1)
            if 3 <= n <= 10:
                marks[f"rib:{n}:{name}"] = point
    return marks


def _rib(
    cv: Canvas, plan: Plan, z_head: float, drop: float, theta_end: float, side: float, wide: bool
) -> Point:
    """One rib: its band around the cavity plus the neck to the spine; returns the point
    on its lateral arc."""
    k = plan.kw
    gap, thick = 1.5 * k, (10.0 if wide else 8.0) * k
    half_h = (8.0 if wide else 6.5) * plan.height_mm / 1700.0
    _, cy0, hw0, hd0 = (float(v) for v in plan.cavity(z_head - drop / 2))
    reach_x, reach_y = hw0 + 40.0 * k, hd0 + 45.0 * k
    box = cv.box(
        (0.0, cy0 - reach_y, z_head - drop - 2 * half_h),
        (side * reach_x, cy0 + reach_y, z_head + 2 * half_h),
    )
    if box is not None:
        ax = np.abs(box.x[0])  # (1, w)
        y = box.y[0]  # (h, 1)
        theta = np.arctan2(ax, y - np.float32(cy0))
        zr = _rib_z(z_head, drop, theta)
        d = _outside(plan, ax, y, zr)
        band = (d >= gap) & (d <= gap + thick) & (theta >= _RIB_START) & (theta <= theta_end)
        band &= ax > 0
        paint_band(cv, RIBS, box, band, zr, half_h)
    # Neck of the rib: from the vertebral body past the transverse process to the band.
    sy = float(plan.spine_y(z_head))
    xs, ys = _ray_point(
        plan, cy0, float(_RIB_START), _rib_z(z_head, drop, _RIB_START), gap + thick / 2
    )
    neck = [
        (side * 14 * k, sy + 4 * k, z_head),
        (side * 38 * k, sy + 24 * k, z_head - 2),
        (side * xs, ys, _rib_z(z_head, drop, _RIB_START)),
    ]
    cv.tube(RIBS, neck, cv.thin(5.0 * k), over=tuple(range(1, cv.n_labels)))
    z_lat = _rib_z(z_head, drop, np.pi / 2)
    xl, yl = _ray_point(plan, cy0, np.pi / 2, z_lat, gap + thick / 2)
    return (side * xl, yl, z_lat)


def paint_band(
    cv: Canvas, label: int, box: Box, band: np.ndarray, zc: np.ndarray, half_h: float
) -> None:
    """Paint, for each pixel of a 2-D ``band`` (h, w) in ``box``, the slices within
    ``half_h`` of its height ``zc`` (at least the nearest slice), over any body tissue."""
    iy, ix = np.nonzero(np.broadcast_to(band, (box.shape[1], box.shape[2])))
    if iy.size == 0:
        return
    zc = np.broadcast_to(zc, band.shape)[iy, ix]
    z0, dz, nz = float(cv.z[0]), float(cv.spacing[2]), len(cv.z)
    lo = np.ceil((zc - half_h - z0) / dz).astype(int)
    hi = np.floor((zc + half_h - z0) / dz).astype(int)
    near = np.round((zc - z0) / dz).astype(int)
    empty = hi < lo
    lo[empty], hi[empty] = near[empty], near[empty]
    lo, hi = np.maximum(lo, 0), np.minimum(hi, nz - 1)
    keep = hi >= lo
    if not keep.any():
        return
    iy, ix, lo, hi = iy[keep], ix[keep], lo[keep], hi[keep]
    steps = np.arange(int((hi - lo).max()) + 1)
    kk = lo[:, None] + steps[None, :]
    valid = kk <= hi[:, None]
    d = kk[valid]
    h = np.broadcast_to((iy + box.sl[1].start)[:, None], kk.shape)[valid]
    w = np.broadcast_to((ix + box.sl[2].start)[:, None], kk.shape)[valid]
    body = cv.labels[d, h, w] != 0
    cv.labels[d[body], h[body], w[body]] = label


def paint_shoulder_girdle(cv: Canvas, plan: Plan) -> None:
    """Sternum (manubrium, body, xiphoid), clavicles and scapulae."""
    k = plan.kw
    top, bottom = plan.z(0.176), plan.z(0.292)
    box = cv.box((-40.0 * k, -200.0 * k, bottom), (40.0 * k, 0.0, top))
    if box is not None:
        z = box.z[:, 0, 0]
        f = plan.f(z)
        _, cy, _, hd = plan.cavity(z)
        half_d = k * np.interp(f, [0.176, 0.205, 0.215, 0.292], [9.0, 8.0, 6.5, 4.0])
        half_w = k * np.interp(f, [0.176, 0.20, 0.212, 0.27, 0.28, 0.292], [26, 24, 15, 15, 9, 4])
        front = cy - hd - half_d - 1.5 * k
        q = profile_q(box, np.zeros_like(z), front, half_w, half_d)
        cv.fill(ORGANS["sternum"], box, q <= 1.0, over=tuple(range(1, cv.n_labels)))
    z_sc = plan.z(0.177)
    _, cy, _, hd = (float(v) for v in plan.cavity(z_sc))
    yf = cy - hd
    for side in (-1.0, 1.0):
        path = [
            (side * 20 * k, yf + 2 * k, z_sc),
            (side * 60 * k, yf - 6 * k, plan.z(0.173)),
            (side * 110 * k, yf + 22 * k, plan.z(0.169)),
            (side * 142 * k, yf + 50 * k, plan.z(0.164)),
        ]
        cv.tube(ORGANS["clavicles"], path, cv.thin(7.0 * k), over=tuple(range(1, cv.n_labels)))
        _scapula(cv, plan, side)


def _scapula(cv: Canvas, plan: Plan, side: float) -> None:
    """A thin plate lying on the posterior ribs, tilted to follow the chest wall."""
    k = plan.kw
    zc = plan.z(0.212)
    x = 92.0 * k
    _, cy, hw, hd = (float(v) for v in plan.cavity(zc))
    u = min(x / hw, 0.98)
    y_wall = cy + hd * (1.0 - u**TRUNK_P) ** (1.0 / TRUNK_P)
    slope = (
        -(hd / hw) * u ** (TRUNK_P - 1) * (1.0 - u**TRUNK_P) ** (1.0 / TRUNK_P - 1.0)
    )  # dy/dx of the wall
    ang = np.arctan(slope) * side
    rot = rot_z(ang)
    c = (side * x, y_wall + 18.0 * k, zc)
    r = (48.0 * k, cv.thin(5.0 * k, 1), 62.0 * k)
    cv.oriented(ORGANS["scapulae"], c, r, rot, over=tuple(range(1, cv.n_labels)))
    spine = [
        (side * 58 * k, y_wall + 22 * k, plan.z(0.19)),
        (side * 130 * k, y_wall - 5 * k, plan.z(0.183)),
    ]
    cv.tube(ORGANS["scapulae"], spine, cv.thin(6.0 * k), over=tuple(range(1, cv.n_labels)))
