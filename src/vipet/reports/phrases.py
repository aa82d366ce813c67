"""Sentence templates of the VI/EN reports: physiology, negatives, impression lines,
interpretations and descriptors. Data only (plus two small pickers); `render` composes.

Each sentence kind has at least three templates per language so that no single string is
worth memorising.
"""

from __future__ import annotations

import numpy as np

from vipet.reports.vocab import pick

# ---- physiological uptake -----------------------------------------------------------

# (section, organs) groups mentioned in one sentence each, in report order.
PHYSIOLOGY_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("head_neck", ("brain",)),
    ("chest", ("myocardium",)),
    ("abdomen_pelvis", ("liver", "spleen", "bladder", "kidneys")),
    ("abdomen_pelvis", ("bowel",)),
)
# Alternative word lists per organ (a list may name several parts: "thượng thận",
# "đài bể thận 2 bên" are listed separately so "a, b và c" reads as in real reports).
ORGAN_WORDS: dict[str, dict[str, tuple[tuple[str, ...], ...]]] = {
    "vi": {
        "brain": (("não",), ("nhu mô não",)),
        "myocardium": (("tim",), ("cơ tim",)),
        "liver": (("gan",),),
        "spleen": (("lách",),),
        "bladder": (("bàng quang",),),
        "kidneys": (
            ("thượng thận", "đài bể thận 2 bên"),
            ("thượng thận", "đài bể thận hai bên"),
            ("hệ thống đài bể thận hai bên",),
        ),
        "bowel": (("khung đại tràng",), ("ruột và khung đại tràng",)),
    },
    "en": {
        "brain": (("brain",), ("cerebral cortex",)),
        "myocardium": (("myocardium",), ("heart",)),
        "liver": (("liver",),),
        "spleen": (("spleen",),),
        "bladder": (("urinary bladder",), ("bladder",)),
        "kidneys": (
            ("adrenal glands", "renal collecting systems bilaterally"),
            ("kidneys",),
            ("renal collecting systems",),
        ),
        "bowel": (("colon",), ("bowel loops",), ("large bowel",)),
    },
}
PHYSIOLOGY_TEMPLATES: dict[str, tuple[str, ...]] = {
    "vi": (
        "Hình ảnh bắt xạ theo đặc điểm sinh lý ở {o}.",
        "Hình ảnh bắt xạ FDG sinh lý ở {o}.",
        "Bắt xạ FDG sinh lý ở {o}.",
        "{o} bắt xạ FDG theo đặc điểm sinh lý.",
    ),
    "en": (
        "Physiological uptake in the {o}.",
        "Physiological FDG uptake in the {o}.",
        "Normal physiological FDG distribution in the {o}.",
        "Physiological tracer activity in the {o}.",
    ),
}
# Reference-level sentences with an SUVmean ({v}), mentioned now and then.
PHYSIOLOGY_REFERENCES: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "vi": {
        "blood_pool": (
            "chest",
            (
                "Hoạt độ nền bể máu trung thất: SUVmean {v}.",
                "Bể máu trung thất bắt xạ mức nền (SUVmean: {v}).",
                "Mức bắt xạ nền của bể máu trung thất SUVmean = {v}.",
            ),
        ),
        "liver": (
            "abdomen_pelvis",
            (
                "Gan bắt xạ đồng nhất (SUVmean: {v}).",
                "Nhu mô gan bắt xạ FDG đồng đều, SUVmean {v}.",
                "Mức bắt xạ nền của gan SUVmean = {v}.",
            ),
        ),
    },
    "en": {
        "blood_pool": (
            "chest",
            (
                "Mediastinal blood pool SUVmean {v}.",
                "Mediastinal blood pool activity at background level (SUVmean {v}).",
                "Reference mediastinal blood pool: SUVmean {v}.",
            ),
        ),
        "liver": (
            "abdomen_pelvis",
            (
                "Homogeneous hepatic uptake (SUVmean {v}).",
                "Liver reference uptake: SUVmean {v}.",
                "The liver shows homogeneous FDG uptake, SUVmean {v}.",
            ),
        ),
    },
}

# ---- negatives ------------------------------------------------------------------------

NEGATIVES: dict[str, dict[str, tuple[str, ...]]] = {
    "vi": {
        "head_neck": (
            "Không phát hiện hình ảnh hạch hoặc khối bất thường vùng đầu cổ.",
            "Chưa phát hiện hình ảnh tăng chuyển hóa FDG bất thường vùng đầu - cổ.",
            "Không thấy hạch to hay tổn thương tăng chuyển hóa FDG bất thường vùng cổ.",
            "Vùng đầu cổ không thấy tổn thương bất thường.",
        ),
        "chest": (
            "Phổi hai bên không thấy nốt, khối bất thường. Trung thất không thấy hạch to.",
            "Không phát hiện hình ảnh tăng chuyển hóa FDG bất thường ở lồng ngực.",
            "Chưa phát hiện tổn thương tăng chuyển hóa FDG bất thường ở phổi và trung thất.",
            "Không thấy nốt, khối hay hạch bất thường vùng lồng ngực.",
        ),
        "abdomen_pelvis": (
            "Không phát hiện hình ảnh tăng chuyển hóa FDG bất thường ở ổ bụng - khung chậu.",
            "Gan, lách, tụy không thấy tổn thương khu trú; không thấy hạch ổ bụng.",
            "Chưa phát hiện hạch hoặc khối bất thường trong ổ bụng và khung chậu.",
        ),
        "musculoskeletal": (
            "Chưa phát hiện hình ảnh tăng chuyển hóa FDG bất thường ở hệ thống cơ xương.",
            "Không thấy tổn thương tiêu xương hay đặc xương bất thường.",
            "Hệ cơ - xương không thấy tổn thương tăng chuyển hóa FDG bất thường.",
        ),
    },
    "en": {
        "head_neck": (
            "No abnormal FDG-avid lesion in the head and neck.",
            "No cervical lymphadenopathy or abnormal FDG uptake in the head and neck.",
            "No abnormal lymph node or mass in the head and neck.",
        ),
        "chest": (
            "No pulmonary nodule or mass in either lung. No enlarged mediastinal lymph node.",
            "No abnormal FDG uptake in the chest.",
            "No FDG-avid lesion in the lungs or mediastinum.",
        ),
        "abdomen_pelvis": (
            "No abnormal FDG uptake in the abdomen and pelvis.",
            "No focal lesion in the liver, spleen or pancreas; no abdominal lymphadenopathy.",
            "No abnormal lymph node or mass in the abdomen and pelvis.",
        ),
        "musculoskeletal": (
            "No abnormal FDG uptake in the musculoskeletal system.",
            "No lytic or sclerotic bone lesion.",
            "No FDG-avid osseous or soft-tissue lesion.",
        ),
    },
}
# Partial negatives for a section with findings elsewhere: (section, location class).
SUB_NEGATIVES: dict[str, dict[tuple[str, str], tuple[str, ...]]] = {
    "vi": {
        ("chest", "lung"): (
            "Phổi hai bên không thấy nốt, khối bất thường.",
            "Nhu mô phổi hai bên chưa phát hiện tổn thương khu trú.",
            "Không thấy nốt mờ hay khối mờ ở phổi hai bên.",
        ),
        ("chest", "mediastinum"): (
            "Không thấy hạch trung thất.",
            "Trung thất không thấy hạch to.",
            "Chưa phát hiện hạch trung thất bất thường.",
        ),
    },
    "en": {
        ("chest", "lung"): (
            "No pulmonary nodule or mass.",
            "The lungs are otherwise clear.",
            "No focal lung lesion.",
        ),
        ("chest", "mediastinum"): (
            "No mediastinal lymphadenopathy.",
            "No enlarged mediastinal lymph node.",
            "The mediastinum is unremarkable.",
        ),
    },
}

# ---- impression -----------------------------------------------------------------------

# {items}: the findings listed ("hạch cổ trái nhóm IV, nốt mờ thùy trên phổi phải").
IMPRESSION_LINES: dict[str, dict[str, tuple[str, ...]]] = {
    "vi": {
        "malignant": (
            "Tăng chuyển hóa FDG tại {items} — theo dõi tổn thương ác tính.",
            "Hình ảnh tăng chuyển hóa FDG tại {items}, nghĩ nhiều đến tổn thương thứ phát.",
            "Tổn thương tăng chuyển hóa FDG: {items} — theo dõi tổn thương ác tính.",
            "Tăng chuyển hóa FDG tại {items}.",
        ),
        "inflammatory": (
            "Tăng nhẹ chuyển hóa FDG tại {items} — theo dõi tổn thương viêm.",
            "{items} tăng nhẹ chuyển hóa FDG, nghĩ đến tổn thương viêm.",
            "Tăng nhẹ chuyển hóa FDG: {items} — nghĩ đến tổn thương viêm.",
        ),
        "benign": (
            "{items} không tăng chuyển hóa FDG.",
            "Không thấy tăng chuyển hóa FDG tại {items}.",
            "{items}: không tăng chuyển hóa FDG, đề nghị theo dõi.",
        ),
    },
    "en": {
        "malignant": (
            "FDG-avid {items}, suspicious for malignancy.",
            "Increased FDG uptake in the {items} — suspicious for metastatic disease.",
            "FDG-avid findings: {items} — likely malignant.",
            "Increased FDG uptake in: {items}.",
        ),
        "inflammatory": (
            "Mildly FDG-avid {items}, likely inflammatory.",
            "Mildly increased FDG uptake in the {items}, probably reactive.",
            "Low-grade FDG uptake in: {items}.",
        ),
        "benign": (
            "Non-FDG-avid {items}.",
            "{items} without increased FDG uptake.",
            "No increased FDG uptake in the {items}; follow-up suggested.",
        ),
    },
}
NORMAL_IMPRESSIONS: dict[str, tuple[str, ...]] = {
    "vi": (
        "Không thấy hình ảnh tăng chuyển hóa FDG bất thường trên PET/CT toàn thân.",
        "Chưa phát hiện tổn thương tăng chuyển hóa FDG bất thường trên PET/CT toàn thân.",
        "Hình ảnh PET/CT toàn thân hiện tại không thấy tăng chuyển hóa FDG bất thường.",
    ),
    "en": (
        "No abnormal FDG uptake on whole-body PET/CT.",
        "No evidence of abnormal FDG uptake on this whole-body PET/CT.",
        "Whole-body PET/CT within normal limits, with no abnormal FDG uptake.",
    ),
}
# Closing line when every finding is non-avid.
NO_AVID_IMPRESSIONS: dict[str, tuple[str, ...]] = {
    "vi": (
        "Không thấy tổn thương tăng chuyển hóa FDG bất thường.",
        "Chưa phát hiện tổn thương tăng chuyển hóa FDG ác tính.",
        "Không thấy hình ảnh tăng chuyển hóa FDG bất thường khác.",
    ),
    "en": (
        "No FDG-avid lesion.",
        "No abnormal FDG-avid disease.",
        "No other abnormal FDG uptake.",
    ),
}

# ---- interpretation and descriptors ---------------------------------------------------

# Per category (malignant: avid, SUVmax ≥ 4 or unknown; inflammatory: avid, SUVmax < 4;
# benign: not avid). Avid wording never contains a negation ("không", "no", "not").
_INTERPRETATIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "vi": {
        "malignant": (
            "theo dõi tổn thương thứ phát",
            "nghĩ nhiều đến tổn thương ác tính",
            "theo dõi tổn thương ác tính",
            "nghi ngờ tổn thương di căn",
        ),
        "inflammatory": ("theo dõi tổn thương viêm", "nghĩ đến tổn thương viêm", "theo dõi"),
        "benign": ("nghĩ đến tổn thương lành tính", "đề nghị theo dõi thêm", "theo dõi"),
    },
    "en": {
        "malignant": (
            "suspicious for metastasis",
            "likely malignant",
            "concerning for malignancy",
            "suggestive of metastatic disease",
        ),
        "inflammatory": ("likely inflammatory", "probably reactive", "favouring inflammation"),
        "benign": ("likely benign", "follow-up suggested", "probably benign"),
    },
}
_NODE_INTERPRETATIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "vi": {
        "malignant": ("theo dõi hạch di căn", "nghĩ nhiều đến hạch di căn"),
        "inflammatory": ("theo dõi hạch viêm", "nghĩ đến hạch viêm phản ứng"),
        "benign": ("theo dõi hạch viêm", "nghĩ đến hạch phản ứng"),
    },
    "en": {
        "malignant": ("suspicious for nodal metastasis", "likely metastatic"),
        "inflammatory": ("likely reactive", "probably an inflammatory node"),
        "benign": ("likely reactive", "probably a benign node"),
    },
}
_CALCIFIED_INTERPRETATIONS = {
    "vi": ("nghĩ đến tổn thương cũ", "tổn thương lành tính"),
    "en": ("consistent with an old granuloma", "likely benign"),
}
_DESCRIPTORS: dict[str, dict[tuple[str, bool], tuple[str, ...]]] = {
    # (type, malignant?) -> clause; a type missing here has no descriptor.
    "vi": {
        ("lymph_node", True): ("mất cấu trúc rốn hạch", "bờ đa cung"),
        ("lymph_node", False): ("bờ đều", "còn cấu trúc rốn hạch"),
        ("nodule", True): ("bờ tua gai", "bờ đa cung"),
        ("nodule", False): ("bờ đều", "bờ nhẵn"),
        ("mass", True): ("bờ đa cung", "xâm lấn mô xung quanh"),
        ("mass", False): ("ranh giới rõ", "bờ đều"),
    },
    "en": {
        ("lymph_node", True): ("loss of the fatty hilum", "irregular margins"),
        ("lymph_node", False): ("a preserved fatty hilum", "smooth margins"),
        ("nodule", True): ("spiculated margins", "lobulated margins"),
        ("nodule", False): ("smooth margins", "well-defined margins"),
        ("mass", True): ("lobulated margins", "invasion of adjacent tissue"),
        ("mass", False): ("well-defined margins", "smooth margins"),
    },
}


def interpretation(lang: str, category: str, lesion_type: str, rng: np.random.Generator) -> str:
    """A likely-diagnosis clause for a finding of ``category`` and ``lesion_type``."""
    options = _INTERPRETATIONS[lang][category]
    if lesion_type == "lymph_node":
        options = options + _NODE_INTERPRETATIONS[lang][category]
    elif lesion_type == "calcified_nodule" and category == "benign":
        options = _CALCIFIED_INTERPRETATIONS[lang]
    return pick(rng, options)


def descriptor(lang: str, category: str, lesion_type: str, rng: np.random.Generator) -> str:
    """A shape/margin clause ("bờ tua gai", "smooth margins"), or "" for other types."""
    options = _DESCRIPTORS[lang].get((lesion_type, category == "malignant"), ())
    return pick(rng, options) if options else ""
