"""The findings schema shared by the phantom, report rendering, question generation and
(later) report-to-findings extraction and clinical scoring (DOMAIN.md §3, §4).

A finding is one lesion: its type (14 classes of the ViMed-PET clinical protocol), its
location class (6), a fine location (a key of `FINE_LOCATIONS`), laterality, size,
SUVmax and FDG avidity, plus the body region and report section it belongs to.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

LESION_TYPES: tuple[str, ...] = (
    "lymph_node",  # hạch
    "nodule",  # nốt mờ
    "ground_glass",  # kính mờ
    "mass",  # khối mờ / đám mờ
    "pleural_thickening",  # dày màng phổi
    "interstitial_thickening",  # dày tổ chức kẽ
    "band_opacity",  # dải mờ
    "consolidation",  # đông đặc
    "effusion",  # tràn dịch
    "soft_tissue",  # tổ chức / mô mềm
    "wall_thickening",  # dày thành
    "calcified_nodule",  # nốt vôi hóa
    "hypermetabolism",  # tăng chuyển hóa without a structural correlate
    "other",
)

LOCATION_CLASSES: tuple[str, ...] = ("mediastinum", "lung", "abdomen", "neck", "axilla", "other")

LATERALITIES: tuple[str, ...] = ("right", "left", "both", "none")

REGIONS: tuple[str, ...] = ("head_neck", "chest", "abdomen_pelvis")

# Report sections, in ViMed-PET order: key, Vietnamese heading, English heading.
SECTIONS: tuple[tuple[str, str, str], ...] = (
    ("head_neck", "Đầu - cổ", "Head and neck"),
    ("chest", "Lồng ngực", "Chest"),
    ("abdomen_pelvis", "Ổ bụng - khung chậu", "Abdomen and pelvis"),
    ("musculoskeletal", "Hệ cơ - xương", "Musculoskeletal"),
)
FINDINGS_KEY = {"vi": "Mô tả hình ảnh", "en": "Findings"}
IMPRESSION_KEY = {"vi": "Nhận định kết quả", "en": "Impression"}


@dataclass(frozen=True)
class FineLocation:
    """A place a lesion can be, with its protocol class, region and report section."""

    key: str
    location: str  # one of LOCATION_CLASSES
    region: str  # one of REGIONS (where the model sees it)
    section: str  # a SECTIONS key (where the report mentions it)
    vi: str  # Vietnamese name, without laterality ("phổi", "thùy trên phổi")
    en: str  # English name, without laterality
    lateral: bool  # takes "phải/trái" (right/left)


def _fl(
    key: str, location: str, region: str, section: str, vi: str, en: str, lateral: bool
) -> FineLocation:
    return FineLocation(key, location, region, section, vi, en, lateral)


# Hilar nodes sit at the lung root: the protocol's "rốn phổi" is counted as lung.
# Inguinal and pelvic nodes belong to the abdomen–pelvis section: counted as abdomen.
# Bone has no class among the six: "other" (which never matches in F1-TP/TPF).
FINE_LOCATIONS: dict[str, FineLocation] = {
    f.key: f
    for f in (
        _fl("cervical", "neck", "head_neck", "head_neck", "cổ", "cervical", True),
        _fl(
            "supraclavicular",
            "neck",
            "head_neck",
            "head_neck",
            "thượng đòn",
            "supraclavicular",
            True,
        ),
        _fl("axillary", "axilla", "chest", "chest", "hố nách", "axillary", True),
        _fl("paratracheal", "mediastinum", "chest", "chest", "cạnh khí quản", "paratracheal", True),
        _fl("prevascular", "mediastinum", "chest", "chest", "trước mạch máu", "prevascular", False),
        _fl("subcarinal", "mediastinum", "chest", "chest", "dưới carina", "subcarinal", False),
        _fl("hilar", "lung", "chest", "chest", "rốn phổi", "hilar", True),
        _fl(
            "lung_upper", "lung", "chest", "chest", "thùy trên phổi", "upper lobe of the lung", True
        ),
        _fl(
            "lung_middle",
            "lung",
            "chest",
            "chest",
            "thùy giữa phổi",
            "middle lobe of the lung",
            True,
        ),
        _fl(
            "lung_lower", "lung", "chest", "chest", "thùy dưới phổi", "lower lobe of the lung", True
        ),
        _fl("pleura", "lung", "chest", "chest", "màng phổi", "pleura", True),
        _fl("liver", "abdomen", "abdomen_pelvis", "abdomen_pelvis", "gan", "liver", False),
        _fl(
            "paraaortic",
            "abdomen",
            "abdomen_pelvis",
            "abdomen_pelvis",
            "cạnh động mạch chủ bụng",
            "para-aortic",
            False,
        ),
        _fl(
            "mesenteric",
            "abdomen",
            "abdomen_pelvis",
            "abdomen_pelvis",
            "mạc treo",
            "mesenteric",
            False,
        ),
        _fl("iliac", "abdomen", "abdomen_pelvis", "abdomen_pelvis", "chậu", "iliac", True),
        _fl("inguinal", "abdomen", "abdomen_pelvis", "abdomen_pelvis", "bẹn", "inguinal", True),
        _fl("spine", "other", "chest", "musculoskeletal", "cột sống", "spine", False),
        _fl("rib", "other", "chest", "musculoskeletal", "xương sườn", "rib", True),
        _fl(
            "pelvic_bone",
            "other",
            "abdomen_pelvis",
            "musculoskeletal",
            "xương cánh chậu",
            "iliac bone",
            True,
        ),
        _fl("femur", "other", "abdomen_pelvis", "musculoskeletal", "xương đùi", "femur", True),
    )
}

# The report section a location class is written in when a finding gives no section.
SECTION_OF_LOCATION: dict[str, str] = {
    "neck": "head_neck",
    "mediastinum": "chest",
    "lung": "chest",
    "axilla": "chest",
    "abdomen": "abdomen_pelvis",
    "other": "musculoskeletal",
}

LATERALITY_WORDS = {
    "vi": {"right": "phải", "left": "trái", "both": "hai bên", "none": ""},
    "en": {"right": "right", "left": "left", "both": "bilateral", "none": ""},
}


@dataclass(frozen=True)
class Lesion:
    """One finding. In ground truth, every field is known; from extracted report text,
    unknown numbers are None."""

    id: int
    type: str  # LESION_TYPES
    location: str  # LOCATION_CLASSES
    location_detail: str  # FINE_LOCATIONS key (or free text from extraction)
    laterality: str  # LATERALITIES
    size_mm: float | None  # longest diameter
    short_mm: float | None  # perpendicular diameter ("12 x 8 mm")
    suvmax: float | None
    fdg_avid: bool
    region: str  # REGIONS
    section: str  # SECTIONS key
    level: str = ""  # a vertebra, rib or nodal level when the location has one ("T8", "IV")
    centre_mm: tuple[float, float, float] | None = None  # LPS world position (ground truth)

    def __post_init__(self) -> None:
        if self.type not in LESION_TYPES:
            raise ValueError(f"unknown lesion type {self.type!r}; choose from {list(LESION_TYPES)}")
        if self.location not in LOCATION_CLASSES:
            raise ValueError(
                f"unknown location {self.location!r}; choose from {list(LOCATION_CLASSES)}"
            )
        if self.laterality not in LATERALITIES:
            raise ValueError(
                f"unknown laterality {self.laterality!r}; choose from {list(LATERALITIES)}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["centre_mm"] is not None:
            d["centre_mm"] = list(d["centre_mm"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Lesion:
        d = dict(d)
        if d.get("centre_mm") is not None:
            d["centre_mm"] = tuple(d["centre_mm"])
        return cls(**d)

    @classmethod
    def at(cls, id: int, type: str, detail: str, laterality: str, **values: Any) -> Lesion:
        """A lesion at fine location ``detail``, its class, region and section filled in."""
        fl = FINE_LOCATIONS[detail]
        region = values.pop("region", fl.region)  # e.g. a cervical-spine lesion: head_neck
        return cls(
            id=id,
            type=type,
            location=fl.location,
            location_detail=detail,
            laterality=laterality if fl.lateral else "none",
            region=region,
            section=fl.section,
            **values,
        )


# Canonical names of the 14 lesion types, as reports and questions use them (the
# Vietnamese words are the ones the clinical protocol maps to each class, DOMAIN.md §4).
LESION_TYPE_NAMES: dict[str, dict[str, str]] = {
    "vi": {
        "lymph_node": "hạch",
        "nodule": "nốt mờ",
        "ground_glass": "nốt kính mờ",
        "mass": "khối mờ",
        "pleural_thickening": "dày màng phổi",
        "interstitial_thickening": "dày tổ chức kẽ",
        "band_opacity": "dải mờ",
        "consolidation": "đông đặc",
        "effusion": "tràn dịch",
        "soft_tissue": "tổ chức mô mềm",
        "wall_thickening": "dày thành",
        "calcified_nodule": "nốt vôi hóa",
        "hypermetabolism": "ổ tăng chuyển hóa FDG",
        "other": "tổn thương",
    },
    "en": {
        "lymph_node": "lymph node",
        "nodule": "nodule",
        "ground_glass": "ground-glass opacity",
        "mass": "mass",
        "pleural_thickening": "pleural thickening",
        "interstitial_thickening": "interstitial thickening",
        "band_opacity": "band-like opacity",
        "consolidation": "consolidation",
        "effusion": "effusion",
        "soft_tissue": "soft-tissue lesion",
        "wall_thickening": "wall thickening",
        "calcified_nodule": "calcified nodule",
        "hypermetabolism": "hypermetabolic focus",
        "other": "lesion",
    },
}

# Names of the six protocol location classes (used when a lesion has no fine location).
LOCATION_CLASS_NAMES: dict[str, dict[str, str]] = {
    "vi": {
        "mediastinum": "trung thất",
        "lung": "phổi",
        "abdomen": "ổ bụng",
        "neck": "cổ",
        "axilla": "hố nách",
        "other": "vị trí khác",
    },
    "en": {
        "mediastinum": "mediastinum",
        "lung": "lung",
        "abdomen": "abdomen",
        "neck": "neck",
        "axilla": "axilla",
        "other": "other site",
    },
}
