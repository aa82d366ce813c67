"""Lesions for the phantom: what, where, how big, how avid — and their irregular shapes.

A study draws 0–8 lesions from a catalogue of the findings a PET/CT report describes:
lymph nodes at the usual stations, lung nodules / masses / ground-glass / calcified
nodules, pleural effusion and thickening, liver lesions and bone lesions. A share of
them is not FDG-avid (seen on CT only) and a share of studies is normal, so a reader has
to use both modalities; physiological uptake (brain, heart, kidneys, bladder, bowel) is
left to confuse a reader that only looks for hot spots.

Shapes are not spheres: a rotated ellipsoid whose radius is modulated by a few random
low-order angular harmonics (lobulation), and masses are unions of 2–4 such lobes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from vipet.io.volume import Grid
from vipet.phantom.anatomy import ORGANS, Anatomy

NODE_STATIONS: dict[str, tuple[str, ...]] = {
    # fine location → landmark keys (side suffix added for lateral stations)
    "cervical": ("node:cervical",),  # matches node:cervical:<side> and node:cervical_<level>:<side>
    "supraclavicular": ("node:supraclavicular",),
    "axillary": ("node:axillary",),
    "paratracheal": ("node:paratracheal",),
    "prevascular": ("node:prevascular",),
    "subcarinal": ("node:subcarinal",),
    "hilar": ("node:hilar",),
    "paraaortic": ("node:paraaortic",),
    "mesenteric": ("node:mesenteric",),
    "iliac": ("node:iliac",),
    "inguinal": ("node:inguinal",),
}
_LATERAL_STATIONS = {
    "cervical",
    "supraclavicular",
    "axillary",
    "paratracheal",
    "hilar",
    "iliac",
    "inguinal",
}

# (weight, kind) — the mix of findings across the benchmark.
CATALOGUE: tuple[tuple[float, str], ...] = (
    (0.42, "node"),
    (0.14, "lung_nodule"),
    (0.05, "lung_mass"),
    (0.04, "ground_glass"),
    (0.03, "calcified_nodule"),
    (0.04, "effusion"),
    (0.03, "pleural_thickening"),
    (0.12, "liver"),
    (0.13, "bone"),
)


@dataclass(frozen=True)
class LesionConfig:
    normal_fraction: float = 0.25
    """Share of studies with no lesion."""
    max_lesions: int = 8
    non_avid_fraction: float = 0.3
    """Share of lesions drawn without FDG uptake above their surroundings."""


@dataclass
class LesionPlan:
    """One lesion to paint: geometry in world mm, CT and PET values, report labels."""

    detail: str  # FINE_LOCATIONS key
    type: str  # LESION_TYPES
    laterality: str
    level: str
    centre: np.ndarray  # LPS mm
    semi_axes: np.ndarray  # mm, along the rotated axes
    rotation: np.ndarray  # 3x3, columns = lesion axes in LPS
    hu: float
    suv: float  # true uptake before blur (SUV)
    avid_intended: bool
    lobes: list[tuple[np.ndarray, float]] = field(default_factory=list)  # extra (offset, scale)
    harmonics: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    restrict_to: tuple[int, ...] = ()  # paint only inside these organ labels (e.g. lung, bone)
    necrotic: bool = False

    @property
    def diameters_mm(self) -> tuple[float, float]:
        """Axial long and short diameters of the main lobe (what a report states)."""
        axial = self.rotation[:2, :] * self.semi_axes[None, :]  # x/y extent per lesion axis
        extents = 2 * np.sqrt((axial**2).sum(axis=1))
        return float(max(extents)), float(min(extents))


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def _uptake(rng: np.random.Generator, avid: bool, background: float) -> float:
    """True lesion SUV: malignant-looking (3–22, skewed low), inflammatory, or not avid —
    then like unremarkable soft tissue (0.8–1.6), or the host's level if that is higher
    (a non-avid bone lesion in active marrow does not stand out either)."""
    if not avid:
        return float(max(rng.uniform(0.8, 1.6), rng.uniform(0.8, 1.0) * background))
    if rng.random() < 0.2:  # inflammatory / borderline
        return float(rng.uniform(2.5, 5.0))
    return float(np.clip(rng.lognormal(np.log(8.0), 0.55), 3.0, 22.0))


def _size(rng: np.random.Generator, lo: float, hi: float, mode: float) -> float:
    """Diameter in mm, skewed toward ``mode``: many small lesions, few large ones."""
    return float(np.clip(rng.lognormal(np.log(mode), 0.45), lo, hi))


def _pick_landmark(
    anatomy: Anatomy, keys: tuple[str, ...], rng: np.random.Generator
) -> tuple[str, str]:
    key = keys[rng.integers(len(keys))]
    options = sorted(
        k for k in anatomy.landmarks if k == key or k.startswith((key + ":", key + "_"))
    )
    chosen = options[rng.integers(len(options))]
    side = chosen.rsplit(":", 1)[-1] if chosen.endswith((":right", ":left")) else "none"
    return chosen, side


def _organ_point(
    anatomy: Anatomy, names: tuple[str, ...], rng: np.random.Generator
) -> tuple[np.ndarray, str]:
    """A random voxel centre inside one of the named organs, and which organ."""
    ids = [ORGANS[n] for n in names]
    idx = np.argwhere(np.isin(anatomy.labels, ids))
    pick = idx[rng.integers(len(idx))]
    organ = names[ids.index(int(anatomy.labels[tuple(pick)]))]
    return anatomy.grid.index_to_world(pick.astype(float)), organ


def _shape(
    rng: np.random.Generator, diameter: float, elong: float = 1.3, bumps: float = 0.12
) -> dict:
    ratios = np.array([1.0, rng.uniform(1 / elong, 1.0), rng.uniform(1 / elong, 1.0)])
    rng.shuffle(ratios)
    harmonics = np.column_stack(
        [
            rng.integers(2, 5, size=3),
            rng.uniform(0, 2 * np.pi, 3),
            rng.uniform(0, np.pi, 3),
            rng.uniform(0, bumps, 3),
        ]
    )
    return {
        "semi_axes": diameter / 2 * ratios,
        "rotation": _random_rotation(rng),
        "harmonics": harmonics,
    }


def _node(
    anatomy: Anatomy, phys: Mapping[str, float], rng: np.random.Generator, avid: bool
) -> LesionPlan:
    detail = list(NODE_STATIONS)[rng.integers(len(NODE_STATIONS))]
    key, side = _pick_landmark(anatomy, NODE_STATIONS[detail], rng)
    station = key.split(":")[1]
    level = station.split("_", 1)[1] if "_" in station else ""  # "cervical_IV" -> "IV"
    centre = np.asarray(anatomy.landmarks[key], float) + rng.normal(0, 6.0, 3)
    diameter = _size(rng, 5.0, 40.0, 12.0 if avid else 8.0)
    bg = phys.get("fat", 0.3)
    return LesionPlan(
        detail,
        "lymph_node",
        side if detail in _LATERAL_STATIONS else "none",
        level,
        centre,
        hu=float(rng.uniform(25, 50)),
        suv=_uptake(rng, avid, bg),
        avid_intended=avid,
        **_shape(rng, diameter, elong=1.6, bumps=0.06),
    )


_LOBES = {
    "lung_right_upper": ("lung_upper", "right"),
    "lung_right_middle": ("lung_middle", "right"),
    "lung_right_lower": ("lung_lower", "right"),
    "lung_left_upper": ("lung_upper", "left"),
    "lung_left_lower": ("lung_lower", "left"),
}


def _lung(
    anatomy: Anatomy, phys: Mapping[str, float], rng: np.random.Generator, avid: bool, kind: str
) -> LesionPlan:
    centre, organ = _organ_point(anatomy, tuple(_LOBES), rng)
    detail, side = _LOBES[organ]
    lung_ids = tuple(ORGANS[n] for n in _LOBES)
    if kind == "lung_mass":
        d, typ, hu = _size(rng, 30.0, 60.0, 38.0), "mass", rng.uniform(25, 45)
    elif kind == "ground_glass":
        d, typ, hu, avid = (
            _size(rng, 8.0, 30.0, 14.0),
            "ground_glass",
            rng.uniform(-650, -450),
            avid and rng.random() < 0.3,
        )
    elif kind == "calcified_nodule":
        d, typ, hu, avid = (
            _size(rng, 5.0, 10.0, 6.0),
            "calcified_nodule",
            rng.uniform(300, 800),
            False,
        )
    else:
        d, typ, hu = _size(rng, 5.0, 30.0, 10.0), "nodule", rng.uniform(20, 50)
    plan = LesionPlan(
        detail,
        typ,
        side,
        "",
        centre,
        hu=float(hu),
        suv=_uptake(rng, avid, phys.get("lung", 0.5)),
        avid_intended=avid,
        restrict_to=lung_ids,
        necrotic=typ == "mass" and d > 40,
        **_shape(rng, d, elong=1.4, bumps=0.18 if typ == "mass" else 0.1),
    )
    if typ == "mass":  # lobulated: extra lobes around the main one
        plan.lobes = [
            (rng.normal(0, d / 4, 3), float(rng.uniform(0.5, 0.8)))
            for _ in range(rng.integers(2, 4))
        ]
    return plan


def _pleural(
    anatomy: Anatomy, phys: Mapping[str, float], rng: np.random.Generator, avid: bool, kind: str
) -> LesionPlan:
    side = "right" if rng.random() < 0.5 else "left"
    lobe = f"lung_{side}_lower"
    idx = np.argwhere(anatomy.labels == ORGANS[lobe])
    world = anatomy.grid.index_to_world(idx.astype(float))
    lung_ids = tuple(ORGANS[n] for n in _LOBES)
    if kind == "effusion":
        # Fluid layers posteriorly at the lung base: a flat, wide lens in the dependent lung.
        post = world[world[:, 1] > np.percentile(world[:, 1], 80)]
        centre = post[np.argmin(post[:, 2])] + np.array([0.0, 0.0, 25.0])
        thick = float(rng.uniform(12, 40))
        semi = np.array([thick * 2.2, thick / 2, thick * 1.6])  # x wide, y thin, z tall
        return LesionPlan(
            "pleura",
            "effusion",
            side,
            "",
            centre,
            semi,
            np.eye(3),
            hu=float(rng.uniform(3, 15)),
            suv=float(rng.uniform(0.7, 1.1)) if not avid else float(rng.uniform(2.5, 4.0)),  # fluid
            avid_intended=avid,
            restrict_to=lung_ids,
        )
    lateral = world[np.abs(world[:, 0]) > np.percentile(np.abs(world[:, 0]), 90)]
    centre = lateral[rng.integers(len(lateral))]
    thick = float(rng.uniform(6, 15))
    semi = np.array([thick / 2, float(rng.uniform(15, 30)), float(rng.uniform(15, 30))])
    return LesionPlan(
        "pleura",
        "pleural_thickening",
        side,
        "",
        centre,
        semi,
        np.eye(3),
        hu=float(rng.uniform(30, 50)),
        suv=_uptake(rng, avid, phys.get("lung", 0.5)),
        avid_intended=avid,
        restrict_to=(*lung_ids, ORGANS["muscle"], ORGANS["fat"]),
    )


def _liver(
    anatomy: Anatomy, phys: Mapping[str, float], rng: np.random.Generator, avid: bool
) -> LesionPlan:
    centre, _ = _organ_point(anatomy, ("liver",), rng)
    d = _size(rng, 6.0, 60.0, 16.0)
    cyst = not avid and rng.random() < 0.5
    liver_bg = phys.get("liver", 2.2)
    return LesionPlan(
        "liver",
        "mass" if d >= 30 else "nodule",
        "none",
        "",
        centre,
        hu=float(rng.uniform(0, 12) if cyst else rng.uniform(25, 40)),
        suv=_uptake(rng, avid, liver_bg) if avid else liver_bg * float(rng.uniform(0.2, 0.9)),
        avid_intended=avid,
        restrict_to=(ORGANS["liver"],),
        necrotic=d > 40,
        **_shape(rng, d, elong=1.3, bumps=0.1),
    )


def _bone(
    anatomy: Anatomy, phys: Mapping[str, float], rng: np.random.Generator, avid: bool
) -> LesionPlan:
    r = rng.random()
    if r < 0.5:
        levels = [k for k in anatomy.vertebrae if k[0] in "CTL"]
        level = levels[rng.integers(len(levels))]
        detail, side, centre = "spine", "none", np.asarray(anatomy.vertebrae[level], float)
    elif r < 0.7:
        key, side = _pick_landmark(
            anatomy,
            tuple(sorted({k.rsplit(":", 1)[0] for k in anatomy.landmarks if k.startswith("rib:")})),
            rng,
        )
        detail, level, centre = "rib", key.split(":")[1], np.asarray(anatomy.landmarks[key], float)
    elif r < 0.9:
        key, side = _pick_landmark(anatomy, ("bone:pelvic",), rng)
        detail, level, centre = "pelvic_bone", "", np.asarray(anatomy.landmarks[key], float)
    else:
        key, side = _pick_landmark(anatomy, ("bone:femur",), rng)
        detail, level, centre = "femur", "", np.asarray(anatomy.landmarks[key], float)
    d = _size(rng, 8.0, 35.0, 14.0)
    bone_ids = tuple(ORGANS[n] for n in ("spine", "ribs", "pelvis", "femora") if n in ORGANS)
    sclerotic = rng.random() < (0.7 if not avid else 0.2)
    typ = "hypermetabolism" if avid else "other"
    return LesionPlan(
        detail,
        typ,
        side,
        level,
        centre + rng.normal(0, 2.0, 3),
        hu=float(rng.uniform(700, 1100) if sclerotic else rng.uniform(60, 160)),
        suv=_uptake(rng, avid, phys.get("marrow", 1.5)),
        avid_intended=avid,
        restrict_to=bone_ids,
        **_shape(rng, d, elong=1.3, bumps=0.1),
    )


def plan_lesions(
    anatomy: Anatomy,
    physiology: Mapping[str, float],
    rng: np.random.Generator,
    config: LesionConfig | None = None,
) -> list[LesionPlan]:
    """The lesions of one study (empty for a normal study). ``physiology`` (organ → SUV
    of this study) sets the background a non-avid lesion must not stand out from."""
    cfg = config or LesionConfig()
    if rng.random() < cfg.normal_fraction:
        return []
    n = int(rng.integers(1, cfg.max_lesions + 1))
    weights = np.array([w for w, _ in CATALOGUE])
    kinds = [CATALOGUE[i][1] for i in rng.choice(len(CATALOGUE), size=n, p=weights / weights.sum())]
    plans = []
    for kind in kinds:
        avid = bool(rng.random() >= cfg.non_avid_fraction)
        if kind == "node":
            plans.append(_node(anatomy, physiology, rng, avid))
        elif kind in ("lung_nodule", "lung_mass", "ground_glass", "calcified_nodule"):
            plans.append(_lung(anatomy, physiology, rng, avid, kind))
        elif kind in ("effusion", "pleural_thickening"):
            plans.append(
                _pleural(anatomy, physiology, rng, avid and kind == "pleural_thickening", kind)
            )
        elif kind == "liver":
            plans.append(_liver(anatomy, physiology, rng, avid))
        else:
            plans.append(_bone(anatomy, physiology, rng, avid))
    return plans


def _inside(
    plan: LesionPlan, x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: np.ndarray, scale: float
) -> np.ndarray:
    """Voxels (broadcast world coordinates) inside one lobe of the lesion."""
    d = np.stack(np.broadcast_arrays(x - centre[0], y - centre[1], z - centre[2]), axis=-1)
    local = d @ plan.rotation  # coordinates along the lesion's own axes
    q = local / (plan.semi_axes * scale)
    r = np.sqrt((q**2).sum(axis=-1))
    if len(plan.harmonics):
        # Lobulation: the surface radius varies with direction by a few harmonics.
        az = np.arctan2(local[..., 1], local[..., 0])
        el = np.arctan2(local[..., 2], np.hypot(local[..., 0], local[..., 1]))
        bump = sum(a * np.cos(k * az + p) * np.cos(k * el + p2) for k, p, p2, a in plan.harmonics)
        return r <= 1.0 + bump
    return r <= 1.0


def paint_lesions(
    plans: list[LesionPlan], anatomy: Anatomy, hu: np.ndarray, suv: np.ndarray
) -> np.ndarray:
    """Paint each lesion into the CT (HU) and true-activity (SUV) maps on the anatomy grid;
    returns the lesion label mask (1..n in plan order; later lesions win overlaps)."""
    grid = anatomy.grid
    labels = np.zeros(grid.shape, dtype=np.int16)
    for i, plan in enumerate(plans, start=1):
        box = _box(grid, plan)
        if box is None:
            continue
        x, y, z = _axes(grid, box)
        mask = _inside(plan, x, y, z, plan.centre, 1.0)
        for offset, scale in plan.lobes:
            mask |= _inside(plan, x, y, z, plan.centre + offset, scale)
        if plan.restrict_to:
            mask &= np.isin(anatomy.labels[box], plan.restrict_to)
        if not mask.any():  # restriction removed everything: keep the core voxel
            mask[tuple(np.asarray(mask.shape) // 2)] = True
        hu[box][mask] = plan.hu
        uptake = np.full(mask.shape, plan.suv, np.float32)
        if plan.necrotic:  # a cold necrotic core inside large avid masses
            core = _inside(plan, x, y, z, plan.centre, 0.5)
            uptake[core] = max(plan.suv * 0.25, 0.5)
        suv[box][mask] = uptake[mask]
        labels[box][mask] = i
    return labels


def _box(grid: Grid, plan: LesionPlan) -> tuple[slice, slice, slice] | None:
    reach = plan.semi_axes.max() * (1.4 + (0.6 if plan.lobes else 0.0))
    lo = grid.world_to_index(plan.centre - reach)
    hi = grid.world_to_index(plan.centre + reach)
    a, b = np.minimum(lo, hi), np.maximum(lo, hi)
    start = np.clip(np.floor(a).astype(int), 0, np.asarray(grid.shape))
    stop = np.clip(np.ceil(b).astype(int) + 1, 0, np.asarray(grid.shape))
    if np.any(stop <= start):
        return None
    return tuple(slice(int(s), int(e)) for s, e in zip(start, stop, strict=True))  # type: ignore[return-value]


def _axes(grid: Grid, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World x, y, z of the voxel centres in ``box`` (axis-aligned default direction)."""
    d = np.arange(box[0].start, box[0].stop)[:, None, None] * grid.spacing[0] + grid.origin[2]
    h = np.arange(box[1].start, box[1].stop)[None, :, None] * grid.spacing[1] + grid.origin[1]
    w = np.arange(box[2].start, box[2].stop)[None, None, :] * grid.spacing[2] + grid.origin[0]
    return w, h, d
