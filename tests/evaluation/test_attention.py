"""Attention in lesion: the exact per-region scores, and the whole pass on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import phantom_with_cache
from vipet.data.tokenizer import synthetic_corpus, train_tokenizer
from vipet.evaluation.attention import (
    attention_in_roi,
    lesion_attention_scores,
    patch_layout,
    summarise,
)
from vipet.model.presets import build_model

GRID = (8, 32, 32)


def _lesion() -> np.ndarray:
    m = np.zeros((4, 8, 8), dtype=bool)
    m[1:3, 2:4, 2:4] = True  # 8 of 256 voxels
    return m


def test_all_mass_inside_the_lesion_scores_one_and_hits() -> None:
    m = _lesion()
    s = lesion_attention_scores(m.astype(float), m)
    assert s.mass == pytest.approx(1.0) and s.hit
    assert s.chance == pytest.approx(8 / 256)


def test_map_peaked_outside_the_lesion_misses() -> None:
    m = _lesion()
    a = np.full(m.shape, 0.1)
    a[3, 7, 7] = 1.0  # far from the lesion
    s = lesion_attention_scores(a, m)
    assert not s.hit
    assert s.mass == pytest.approx(8 * 0.1 / (255 * 0.1 + 1.0))


def test_pointing_tolerance_is_one_voxel() -> None:
    m = _lesion()
    a = np.zeros(m.shape)
    a[1, 4, 4] = 1.0  # diagonal neighbour of the lesion voxel (1, 3, 3)
    assert lesion_attention_scores(a, m).hit
    assert not lesion_attention_scores(a, m, tolerance=0).hit
    a = np.zeros(m.shape)
    a[1, 5, 3] = 1.0  # two voxels away
    assert not lesion_attention_scores(a, m).hit


def test_flat_map_scores_chance_and_points_nowhere() -> None:
    m = _lesion()
    for value in (0.0, 0.5):
        s = lesion_attention_scores(np.full(m.shape, value), m)
        assert s.mass == pytest.approx(s.chance) and not s.hit


def test_tied_peak_patch_hits_when_any_voxel_touches() -> None:
    m = _lesion()
    a = np.zeros(m.shape)
    a[0:2, 0:4, 0:4] = 1.0  # one "patch" overlapping the lesion at (1, 2..3, 2..3)
    assert lesion_attention_scores(a, m).hit


def test_patch_layout_and_pointing_chance() -> None:
    ids = patch_layout((2, 2, 2), (4, 8, 8))  # 8 patches of 2x4x4 voxels
    assert ids.shape == (4, 8, 8) and sorted(np.unique(ids)) == list(range(8))
    assert np.all(ids[:2, :4, :4] == 0) and np.all(ids[2:, 4:, 4:] == 7)
    m = _lesion()  # [1:3, 2:4, 2:4], dilated [0:4, 1:5, 1:5]: touches all 8 patches
    assert lesion_attention_scores(m.astype(float), m, patch_ids=ids).pointing_chance == 1.0
    one = np.zeros(m.shape, dtype=bool)
    one[0, 0, 0] = True  # dilated [0:2, 0:2, 0:2]: inside patch 0 only
    s = lesion_attention_scores(np.ones(m.shape), one, patch_ids=ids)
    assert s.pointing_chance == pytest.approx(1 / 8) and s.pointing_chance is not None


def test_bad_inputs_are_refused() -> None:
    m = _lesion()
    with pytest.raises(ValueError, match="empty"):
        lesion_attention_scores(np.ones(m.shape), np.zeros(m.shape, dtype=bool))
    with pytest.raises(ValueError, match="shape"):
        lesion_attention_scores(np.ones((2, 2, 2)), m)
    with pytest.raises(ValueError, match=">= 0"):
        lesion_attention_scores(-np.ones(m.shape), m)


def test_summary_of_no_region_is_empty() -> None:
    assert summarise([])["n_regions"] == 0 and summarise([])["mass_in_lesion"] is None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root, cache = phantom_with_cache(tmp_path_factory.mktemp("attn"), 6, GRID)
    tok = train_tokenizer(synthetic_corpus(20, 0), vocab_size=600)
    torch.manual_seed(0)
    return build_model("tiny", tok), tok, root, cache


def test_attention_in_roi_on_an_untrained_model(tiny) -> None:
    model, tok, root, cache = tiny
    model.train()
    res = attention_in_roi(model, tok, root, cache, split="train", lang="vi", batch_size=3)
    assert model.training  # the mode is given back
    assert res["n_regions"] > 0
    assert 0.0 <= res["mass_in_lesion"] <= 1.0 and 0.0 <= res["pointing_hit"] <= 1.0
    assert 0.0 < res["chance_mass"] < 1.0 and 0.0 < res["chance_pointing"] <= 1.0
    one = attention_in_roi(model, tok, root, cache, split="train", lang="vi", max_studies=1)
    assert 0 < one["n_regions"] <= res["n_regions"]
