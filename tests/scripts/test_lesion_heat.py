"""scripts/lesion_heat.py: heat and type read at each reference lesion, on hand-made maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vipet.reports.schema import LESION_TYPES


@pytest.fixture(scope="module")
def lesion_heat(load_script):
    return load_script("lesion_heat")


def test_each_lesion_gets_its_strongest_voxel_and_the_type_read_there(lesion_heat) -> None:
    ids = np.zeros((8, 8, 8), np.uint8)
    ids[0:2, 0:2, 0:2] = 1  # one head voxel (0, 0, 0) on a 4^3 grid
    ids[5, 5, 5] = 2  # a one-voxel lesion: head voxel (2, 2, 2)
    ids[6:8, 0:4, 0:2] = 3  # another region's lesion: skipped
    heat = torch.zeros(4, 4, 4)
    heat[0, 0, 0], heat[2, 2, 2] = 0.7, 0.05
    types = torch.zeros(len(LESION_TYPES), 4, 4, 4)
    types[LESION_TYPES.index("lymph_node"), 0, 0, 0] = 5.0
    types[LESION_TYPES.index("nodule"), 2, 2, 2] = 5.0
    lesions = [
        {"id": 1, "type": "lymph_node", "fdg_avid": True, "region": "chest", "size_mm": 12},
        {"id": 2, "type": "nodule", "fdg_avid": False, "region": "chest", "size_mm": 6},
        {"id": 3, "type": "mass", "fdg_avid": True, "region": "head_neck", "size_mm": 40},
        {"id": 4, "type": "effusion", "fdg_avid": False, "region": "chest"},  # not in the map
    ]
    rows = lesion_heat.lesion_heat(heat, types, ids, lesions, "chest")
    assert [(r["type"], r["read"]) for r in rows] == [
        ("lymph_node", "lymph_node"),
        ("nodule", "nodule"),
    ]
    assert [r["heat"] for r in rows] == pytest.approx([0.7, 0.05])
    text = lesion_heat.table(rows)
    assert "| lymph_node (avid) | 1 | 1 | 1 | 0.70 | lymph_node 1 |" in text
    assert "| nodule (non-avid) | 1 | 0 | 0 | 0.05 | nodule 1 |" in text
