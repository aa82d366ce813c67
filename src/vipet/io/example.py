"""A geometric whole-body PET/CT test object.

Not the ViPET-Phantom benchmark (that lives in `vipet.phantom`, with realistic anatomy,
lesion catalogues and reports): this is a handful of ellipsoids and cylinders with
textbook HU and SUV values (DOMAIN.md §7), placed in world space and sampled onto a CT
grid and a separate, coarser PET grid (blurred to ~6 mm FWHM, with noise) — the way a
scanner gives them. It exists so the readers, preprocessing, the demo and the benchmark
have a whole-body-sized study with known geometry and known hot spots.

World frame: LPS mm, z = 0 at the vertex, the body toward −z.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from vipet.io.study import Study
from vipet.io.volume import Grid, Units, Volume, default_direction

Shape = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def ellipsoid(cx: float, cy: float, cz: float, rx: float, ry: float, rz: float) -> Shape:
    return lambda x, y, z: ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1


def cylinder(cx: float, cy: float, rx: float, ry: float, z_top: float, z_bottom: float) -> Shape:
    return lambda x, y, z: (
        (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1) & (z <= z_top) & (z >= z_bottom)
    )


@dataclass(frozen=True)
class Tissue:
    name: str
    shape: Shape
    hu: float
    suv: float
    bbox: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]  # x, y, z ranges
    lesion: bool = False


def _tissues(
    height_cm: float, lesions: list[tuple[float, float, float, float, float]]
) -> list[Tissue]:
    """Tissues in paint order (later ones overwrite): body, organs, then lesions."""
    s = height_cm / 170.0  # scale craniocaudal positions with height
    z = lambda f: -f * 1700.0 * s  # noqa: E731  fraction of a 170 cm body below the vertex
    t = [
        Tissue(
            "head",
            ellipsoid(0, 0, z(0.065), 75, 95, 110 * s),
            30,
            0.8,
            ((-80, 80), (-100, 100), (z(0.13), 0)),
        ),
        Tissue(
            "neck",
            cylinder(0, 10, 55, 55, z(0.11), z(0.19)),
            35,
            0.8,
            ((-60, 60), (-50, 70), (z(0.19), z(0.11))),
        ),
        Tissue(
            "torso",
            cylinder(0, 0, 170, 110, z(0.18), z(0.60)),
            30,
            0.7,
            ((-175, 175), (-115, 115), (z(0.6), z(0.18))),
        ),
        Tissue(
            "brain",
            ellipsoid(0, 0, z(0.065), 65, 85, 95 * s),
            35,
            8.0,
            ((-70, 70), (-90, 90), (z(0.12), z(0.01))),
        ),
        Tissue(
            "lung_r",
            ellipsoid(-80, 5, z(0.26), 62, 75, 115 * s),
            -800,
            0.5,
            ((-145, -15), (-75, 85), (z(0.33), z(0.19))),
        ),
        Tissue(
            "lung_l",
            ellipsoid(80, 5, z(0.26), 62, 75, 115 * s),
            -800,
            0.5,
            ((15, 145), (-75, 85), (z(0.33), z(0.19))),
        ),
        Tissue(
            "heart",
            ellipsoid(25, -25, z(0.285), 50, 45, 55 * s),
            40,
            4.0,
            ((-30, 80), (-75, 25), (z(0.32), z(0.25))),
        ),
        Tissue(
            "liver",
            ellipsoid(-75, 5, z(0.355), 90, 80, 75 * s),
            60,
            2.2,
            ((-170, 20), (-80, 90), (z(0.41), z(0.30))),
        ),
        Tissue(
            "spine",
            cylinder(0, 80, 16, 16, z(0.15), z(0.52)),
            700,
            1.5,
            ((-20, 20), (60, 100), (z(0.52), z(0.15))),
        ),
        Tissue(
            "bladder",
            ellipsoid(0, -30, z(0.5), 40, 35, 35 * s),
            10,
            20.0,
            ((-45, 45), (-70, 10), (z(0.53), z(0.47))),
        ),
    ]
    for i, (x, y, frac, r, suv) in enumerate(lesions):
        zc = z(frac)
        t.append(
            Tissue(
                f"lesion_{i + 1}",
                ellipsoid(x, y, zc, r, r, r),
                45,
                suv,
                ((x - r, x + r), (y - r, y + r), (zc - r, zc + r)),
                lesion=True,
            )
        )
    return t


DEFAULT_LESIONS = [  # x, y, fraction of height below vertex, radius mm, SUVmax-ish
    (-60.0, 10.0, 0.25, 12.0, 9.0),  # right lung mass
    (30.0, -10.0, 0.22, 7.0, 5.5),  # mediastinal node
    (-90.0, 0.0, 0.36, 10.0, 7.0),  # liver lesion
    (60.0, 30.0, 0.13, 6.0, 4.0),  # left cervical node
]


def _axis_coords(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World x, y, z of the voxel centres along each axis of an axis-aligned grid."""
    d = np.arange(grid.shape[0])[:, None, None] * grid.spacing[0] + grid.origin[2]
    h = np.arange(grid.shape[1])[None, :, None] * grid.spacing[1] + grid.origin[1]
    w = np.arange(grid.shape[2])[None, None, :] * grid.spacing[2] + grid.origin[0]
    return w, h, d  # x, y, z


def _paint(
    grid: Grid, tissues: list[Tissue], key: str, background: float, dtype: type
) -> tuple[np.ndarray, np.ndarray]:
    """Values of each tissue on ``grid`` (axis-aligned, default direction), plus lesion labels."""
    out = np.full(grid.shape, background, dtype=dtype)
    labels = np.zeros(grid.shape, dtype=np.int16)
    x, y, z = _axis_coords(grid)
    n_lesion = 0
    for tissue in tissues:
        (x0, x1), (y0, y1), (z0, z1) = tissue.bbox
        sx = np.flatnonzero((x[0, 0] >= x0 - 1) & (x[0, 0] <= x1 + 1))
        sy = np.flatnonzero((y[0, :, 0] >= y0 - 1) & (y[0, :, 0] <= y1 + 1))
        sz = np.flatnonzero((z[:, 0, 0] >= z0 - 1) & (z[:, 0, 0] <= z1 + 1))
        if not (sx.size and sy.size and sz.size):
            n_lesion += tissue.lesion
            continue
        box = np.s_[sz[0] : sz[-1] + 1, sy[0] : sy[-1] + 1, sx[0] : sx[-1] + 1]
        inside = tissue.shape(x[..., box[2]], y[:, box[1]], z[box[0]])
        out[box][inside] = getattr(tissue, key)
        if tissue.lesion:
            n_lesion += 1
            labels[box][inside] = n_lesion
    return out, labels


def make_example_study(
    ct_shape: tuple[int, int, int] = (150, 256, 256),
    pet_shape: tuple[int, int, int] = (150, 96, 96),
    slice_mm: float = 6.0,
    ct_fov_mm: float = 500.0,
    pet_fov_mm: float = 700.0,
    height_cm: float | None = 170.0,
    weight_kg: float | None = 70.0,
    lesions: list[tuple[float, float, float, float, float]] | None = None,
    seed: int = 0,
    study_id: str = "example",
) -> Study:
    """A whole-body PET/CT study of the geometric test object.

    CT and PET get different grids (in-plane FOV, matrix and z origin differ, as on a
    real scanner); slice 0 is the feet end, as a DICOM series sorted along +z. The
    default sizes are small; ``ct_shape=(300, 512, 512), pet_shape=(300, 192, 192),
    slice_mm=3`` gives a clinical-sized study.
    """
    rng = np.random.default_rng(seed)
    body_height = height_cm or 170.0
    tissues = _tissues(body_height, DEFAULT_LESIONS if lesions is None else lesions)
    top = 20.0  # scan starts 2 cm above the vertex
    ct_grid = _scan_grid(ct_shape, slice_mm, ct_fov_mm, top)
    pet_grid = _scan_grid(pet_shape, slice_mm * ct_shape[0] / pet_shape[0], pet_fov_mm, top + 1.5)
    ct, lesion_labels = _paint(ct_grid, tissues, "hu", -1000.0, np.float32)
    ct += rng.normal(0.0, 12.0, ct.shape).astype(np.float32)  # CT quantum noise ~12 HU
    ct = np.clip(np.round(ct), -1024, 3071).astype(np.int16)
    pet, _ = _paint(pet_grid, tissues, "suv", 0.0, np.float32)
    sigma = 6.0 / 2.3548 / np.asarray(pet_grid.spacing)  # 6 mm FWHM point spread
    pet = ndimage.gaussian_filter(pet, sigma)
    pet = np.clip(pet * (1 + rng.normal(0.0, 0.08, pet.shape)), 0.0, None).astype(np.float32)
    return Study(
        id=study_id,
        ct=Volume.on_grid(ct, ct_grid, "CT", Units.HU),
        pet=Volume.on_grid(pet, pet_grid, "PT", Units.SUVBW),
        layout="example",
        height_cm=height_cm,
        weight_kg=weight_kg,
        sex="M",
        age=60.0,
        lesion_mask=Volume.on_grid(lesion_labels, ct_grid, "SEG", Units.LABEL),
    )


def _scan_grid(shape: tuple[int, int, int], slice_mm: float, fov_mm: float, top_mm: float) -> Grid:
    """Axial grid, slice 0 at the feet, centred in x/y, last slice ``top_mm`` above z = 0."""
    d, h, w = shape
    pix_y, pix_x = fov_mm / h, fov_mm / w
    origin = (-fov_mm / 2 + pix_x / 2, -fov_mm / 2 + pix_y / 2, top_mm - (d - 1) * slice_mm)
    return Grid(shape, (slice_mm, pix_y, pix_x), origin, default_direction())
