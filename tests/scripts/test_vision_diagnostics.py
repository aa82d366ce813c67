"""scripts/vision_diagnostics.py: the candidates' floor reaches the calibrated thresholds."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def vd(load_script):
    return load_script("vision_diagnostics")


def test_floor_is_the_lowest_threshold_of_any_row(vd) -> None:
    # a class calibrated below the table's lowest threshold: its peaks between the two
    # are in the model's slots, so the "calibrated" row must see them
    calibrated = {"lymph_node/avid": 0.15, "effusion/not_avid": 0.8}
    assert vd.candidate_floor([0.2, 0.3], calibrated) == 0.15
    assert vd.candidate_floor([0.1, 0.3], calibrated) == 0.1
    assert vd.candidate_floor([0.2, 0.3], None) == 0.2
    assert vd.candidate_floor([0.2, 0.3], {}) == 0.2
