"""Organ label ids of the phantom (0 = air outside the body) and the groups they form.

The ids are part of the dataset format (the ``*_organs.nii.gz`` ground truth), so new
organs are appended, never renumbered.
"""

from __future__ import annotations

_NAMES = (
    "fat",  # 1: subcutaneous and visceral fat
    "muscle",
    "brain",  # grey matter: cortex, deep nuclei, cerebellum
    "brain_white",  # white matter and brain stem
    "csf",  # ventricles, spinal canal below the cord
    "skull",  # cranial vault, skull base, mandible, maxilla
    "spine",  # vertebrae C1–L5 (bodies and arches)
    "disc",  # intervertebral discs
    "ribs",
    "sternum",
    "clavicles",
    "scapulae",
    "pelvis",  # iliac bones, acetabula, pubic and ischial rami, sacrum
    "femora",
    "lung_right_upper",
    "lung_right_middle",
    "lung_right_lower",
    "lung_left_upper",
    "lung_left_lower",
    "airway",  # nasal cavity, sinuses, pharynx, larynx, trachea, bronchi (air)
    "heart",  # blood in the chambers
    "myocardium",  # left-ventricular wall and septum
    "mediastinum",  # mediastinal fat and soft tissue, pericardium
    "aorta",
    "vessels",  # great veins, pulmonary arteries, carotids, iliac/femoral, portal, renal
    "liver",
    "gallbladder",
    "spleen",
    "stomach",
    "pancreas",
    "kidney_right",
    "kidney_left",
    "renal_pelvis",  # collecting systems (urine)
    "ureter",
    "bladder",
    "bowel",  # duodenum, small bowel, colon, rectum
    "bowel_gas",  # gas in stomach and bowel
    "esophagus",
    "thyroid",
    "spinal_cord",
    "eyes",
    "salivary",  # parotid and submandibular glands
    "tonsils",  # palatine tonsils / Waldeyer's ring
    "breast",  # glandular breast tissue (women)
    "prostate",
    "uterus",
)

ORGANS: dict[str, int] = {name: i for i, name in enumerate(_NAMES, start=1)}
"""Organ name → label id in the phantom's label volume (0 = air outside the body)."""

N_LABELS = len(ORGANS) + 1

LUNGS = tuple(ORGANS[n] for n in _NAMES if n.startswith("lung_"))
BONES = tuple(
    ORGANS[n]
    for n in ("skull", "spine", "ribs", "sternum", "clavicles", "scapulae", "pelvis", "femora")
)
