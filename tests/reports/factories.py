"""Hand-built and random findings for the report and question tests."""

from __future__ import annotations

import numpy as np

from vipet.reports.schema import FINE_LOCATIONS, LATERALITIES, LESION_TYPES, Lesion

_LEVELS = {
    "cervical": ("I", "II", "III", "IV", "V", "VI"),
    "spine": ("C7", "T8", "T12", "L3"),
    "rib": ("3", "5", "11"),
    "liver": ("IV", "VII"),
    "paratracheal": ("2R", "4L"),
}


def example_lesions() -> list[Lesion]:
    """One study with findings in every section, avid and not, with and without levels."""
    return [
        Lesion.at(0, "lymph_node", "cervical", "left", size_mm=12, short_mm=8, suvmax=8.14,
                  fdg_avid=True, level="IV"),
        Lesion.at(1, "nodule", "lung_upper", "right", size_mm=14.6, short_mm=None, suvmax=5.2,
                  fdg_avid=True),
        Lesion.at(2, "lymph_node", "subcarinal", "none", size_mm=9, short_mm=None, suvmax=1.6,
                  fdg_avid=False),
        Lesion.at(3, "effusion", "pleura", "left", size_mm=20, short_mm=None, suvmax=1.1,
                  fdg_avid=False),
        Lesion.at(4, "mass", "liver", "none", size_mm=31, short_mm=24, suvmax=11.3,
                  fdg_avid=True, level="VII"),
        Lesion.at(5, "hypermetabolism", "spine", "none", size_mm=12, short_mm=None, suvmax=7.3,
                  fdg_avid=True, level="T8"),
        Lesion.at(6, "other", "rib", "right", size_mm=15, short_mm=None, suvmax=3.1,
                  fdg_avid=True, level="5"),
        Lesion.at(7, "lymph_node", "axillary", "right", size_mm=10, short_mm=7, suvmax=2.4,
                  fdg_avid=True),
    ]  # fmt: skip


PHYSIOLOGY = {
    "brain": 8.0,
    "myocardium": 5.0,
    "liver": 2.2,
    "spleen": 1.8,
    "kidneys": 10.0,
    "bladder": 20.0,
    "bowel": 2.0,
    "blood_pool": 1.7,
}


def random_lesion(rng: np.random.Generator, id: int) -> Lesion:
    """Any valid lesion: any type at any fine location, numbers sometimes unknown."""
    detail = str(rng.choice(sorted(FINE_LOCATIONS)))
    size = None if rng.random() < 0.15 else float(rng.uniform(2.0, 80.0))
    short = None if size is None or rng.random() < 0.5 else float(rng.uniform(1.0, size))
    levels = _LEVELS.get(detail, ())
    return Lesion.at(
        id,
        str(rng.choice(LESION_TYPES)),
        detail,
        str(rng.choice(LATERALITIES)),
        size_mm=size,
        short_mm=short,
        suvmax=None if rng.random() < 0.15 else float(rng.uniform(0.5, 25.0)),
        fdg_avid=bool(rng.random() < 0.6),
        level=str(rng.choice(levels)) if levels and rng.random() < 0.6 else "",
    )


def random_lesions(rng: np.random.Generator, n: int) -> list[Lesion]:
    return [random_lesion(rng, i) for i in range(n)]
