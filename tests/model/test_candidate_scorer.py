"""The candidate scorer: its classes and features, its fit, `detect` reading the peaks
through it, the model config and a save/load round trip, and the labels it is fitted on."""

from __future__ import annotations

import pytest
import torch

from vipet.inference.rescore import ScorerFit, peak_labels, scorer_table
from vipet.model.candidate_scorer import (
    FEATURE_NAMES,
    N_CLASSES,
    N_FEATURES,
    CandidateScorer,
    ScorerConfig,
    class_index,
    class_name,
    fit_scorer,
    peak_features,
)
from vipet.model.config import ViPetConfig
from vipet.model.diag_head import OUTPUTS, DenseFindings
from vipet.model.findings_slots import detect, detections_from_peaks, scorer_inputs
from vipet.reports.schema import LESION_TYPES, REGIONS


def _dense(heat_at: dict[tuple[int, int, int], float], node_at=()) -> DenseFindings:
    """Maps of one 4x8x8 volume: heat peaks where given; the head reads an avid node at
    the voxels of ``node_at``, an avid nodule elsewhere."""
    shape = (1, 4, 8, 8)
    maps = {k: torch.full((1, n, *shape[1:]) if n > 1 else shape, -8.0) for k, n in OUTPUTS.items()}
    maps["avid"][:] = 8.0
    maps["types"][0, LESION_TYPES.index("nodule")] = 8.0
    for z, y, x in node_at:
        maps["types"][0, LESION_TYPES.index("lymph_node"), z, y, x] = 20.0
    for vox, p in heat_at.items():
        maps["heat"][(0, *vox)] = torch.logit(torch.tensor(p))
    return DenseFindings(**maps)


def test_classes_round_trip() -> None:
    assert 1 + 2 * len(LESION_TYPES) == N_CLASSES and len(FEATURE_NAMES) == N_FEATURES
    seen = set()
    for kind in LESION_TYPES:
        for avid in (True, False):
            i = class_index(kind, avid)
            assert class_name(i) == (kind, avid) and 1 <= i < N_CLASSES
            seen.add(i)
    assert len(seen) == N_CLASSES - 1
    with pytest.raises(ValueError, match="class index"):
        class_name(0)


def test_peak_features_read_the_maps_and_the_input() -> None:
    dense = _dense({(1, 2, 2): 0.9, (2, 6, 6): 0.4}, node_at=[(1, 2, 2)])
    ct = torch.zeros(4, 16, 16)
    ct[1, 4:6, 4:6] = 0.7  # the input voxels under head voxel (1, 2, 2)
    pet = torch.full((4, 16, 16), 0.1)
    voxels = torch.tensor([[1, 2, 2], [2, 6, 6]])
    x = peak_features(dense, 0, ct, pet, voxels, 1, 2, [4.5, 1.0], [12.0, 6.0])
    assert x.shape == (2, N_FEATURES)
    f = dict(zip(FEATURE_NAMES, x[0].tolist(), strict=True))
    assert f["heat"] == pytest.approx(0.9, abs=1e-4)
    assert f["ct_core_max"] == pytest.approx(0.7) and f["ct_ring_median"] == pytest.approx(0.0)
    assert f["pet_core_max"] == pytest.approx(0.1)
    assert [f[f"region:{r}"] for r in REGIONS] == [0.0, 1.0, 0.0]
    assert (f["peaks_in_volume"], f["rank_in_volume"], f["suvmax"], f["size_mm"]) == (2, 0, 4.5, 12)
    assert f["type:lymph_node"] > 0.03 and f["z"] == pytest.approx(0.25)
    assert dict(zip(FEATURE_NAMES, x[1].tolist(), strict=True))["rank_in_volume"] == 1
    with pytest.raises(ValueError, match="region_index"):
        peak_features(dense, 0, ct, pet, voxels, len(REGIONS), 2, [0, 0], [0, 0])


def test_fit_scorer_learns_a_separable_problem() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(600, N_FEATURES, generator=gen)
    y = torch.zeros(600, dtype=torch.long)
    node = class_index("lymph_node", False)
    y[x[:, 0] > 0.5] = node  # "a lesion" where the first feature is high
    scorer = CandidateScorer(ScorerConfig(members=2, hidden=16))
    stats = fit_scorer(scorer, x * 3 + 5, y, epochs=20, batch_size=32)  # standardised inside
    assert stats["accuracy"] > 0.95
    probs = scorer(x * 3 + 5)
    assert probs.shape == (600, N_CLASSES)
    assert torch.allclose(probs.sum(dim=1), torch.ones(600), atol=1e-5)
    assert ((probs.argmax(dim=1) == y).float().mean()) > 0.95
    with pytest.raises(ValueError, match="features must be"):
        fit_scorer(scorer, x[:, :3], y)
    with pytest.raises(ValueError, match="one label per"):
        fit_scorer(scorer, x, y[:5])


class _Says(CandidateScorer):
    """A scorer that answers ``probs`` for every peak."""

    def __init__(self, probs: torch.Tensor) -> None:
        super().__init__(ScorerConfig(members=1, hidden=4))
        self.probs = probs

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.probs.expand(len(features), -1)


def test_detect_ranks_and_names_peaks_by_the_scorer() -> None:
    dense = _dense({(1, 2, 2): 0.9, (2, 6, 6): 0.15})  # the second below 0.3 on heat
    pet, ct = torch.zeros(1, 4, 16, 16), torch.zeros(1, 4, 16, 16)
    grid = (1, 2, 2)
    plain = detect(dense, pet, grid, 4, 0.3).attributes[0]
    assert [(d["type"], d["fdg_avid"]) for d in plain] == [("nodule", True)]
    probs = torch.zeros(N_CLASSES)
    probs[0], probs[class_index("lymph_node", False)] = 0.2, 0.8
    found = detect(dense, pet, grid, 4, 0.3, ct=ct, regions=[1], scorer=_Says(probs))
    # both peaks, the faint one too, named by the scorer
    assert [(d["type"], d["fdg_avid"]) for d in found.attributes[0]] == [("lymph_node", False)] * 2
    assert found.scores[0, :2].tolist() == pytest.approx([0.8, 0.8])
    table = torch.full((len(LESION_TYPES), 2), 0.3)
    table[LESION_TYPES.index("lymph_node"), 1] = 0.85  # the threshold reads the scorer's score
    assert not detect(
        dense, pet, grid, 4, 0.3, table, ct=ct, regions=[1], scorer=_Says(probs)
    ).attributes[0]
    background = torch.zeros(N_CLASSES)
    background[0] = 0.9
    assert not detect(
        dense, pet, grid, 4, 0.3, ct=ct, regions=[1], scorer=_Says(background)
    ).attributes[0]
    with pytest.raises(ValueError, match="ct and region"):
        detect(dense, pet, grid, 4, 0.3, scorer=_Says(probs))
    ((voxels, x),) = scorer_inputs(dense, pet, ct, [1])
    assert voxels.tolist() == [[1, 2, 2], [2, 6, 6]] and x.shape == (2, N_FEATURES)


def test_slots_rebuilt_from_kept_peaks_are_detects() -> None:
    """`detections_from_peaks` on the peaks `scorer_inputs` kept (with the head's readout
    at each) gives what `detect` gives from the maps, under any scorer and thresholds."""
    torch.manual_seed(0)
    maps = {k: torch.randn((2, n, 4, 8, 8) if n > 1 else (2, 4, 8, 8)) for k, n in OUTPUTS.items()}
    maps["heat"] = maps["heat"] * 2
    dense = DenseFindings(**maps)
    pet, ct = torch.rand(2, 4, 16, 16), torch.rand(2, 4, 16, 16)
    zones = torch.tensor([[0.0, 4.0], [1.0, 3.0]])
    kept = scorer_inputs(dense, pet, ct, [0, 1], zones, with_reads=True)
    scorer = CandidateScorer(ScorerConfig(members=2, hidden=8)).eval()
    table = torch.full((len(LESION_TYPES), 2), 0.3)
    table[:, 1] = 0.2
    for thresholds in (None, table):
        want = detect(
            dense, pet, (2, 2, 2), 3, 0.3, zones, "log", 30.0, thresholds, ct, [0, 1], scorer
        )
        got = detections_from_peaks(
            [(peaks, x) for _, x, peaks in kept], scorer, 3, 0.3, thresholds, (4, 8, 8), (2, 2, 2)
        )
        assert got.attributes == want.attributes and any(got.attributes)
        for name in ("features", "filled", "rows", "scores", "voxels"):
            assert torch.equal(getattr(got, name), getattr(want, name)), name


def test_config_and_save_load_round_trip(tmp_path) -> None:
    from vipet.data.tokenizer import synthetic_corpus, train_tokenizer
    from vipet.model.checkpoint import load_vipet, save_vipet
    from vipet.model.presets import build_model

    with pytest.raises(ValueError, match="set findings_slots"):
        ViPetConfig(findings_slots=0, candidate_scorer={"hidden": 3})
    with pytest.raises(ValueError, match="unknown ScorerConfig keys"):
        ScorerConfig.from_dict({"width": 3})
    tok = train_tokenizer(synthetic_corpus(20, 0), vocab_size=600)
    model = build_model("tiny", tok).eval()
    model.config.candidate_scorer = ScorerConfig(members=2, hidden=8).to_dict()
    model.candidate_scorer = CandidateScorer(ScorerConfig(members=2, hidden=8))
    fit_scorer(
        model.candidate_scorer, torch.randn(50, N_FEATURES), torch.randint(0, 3, (50,)), epochs=1
    )
    save_vipet(model, tok, tmp_path / "m")
    again, _ = load_vipet(tmp_path / "m")
    x = torch.randn(7, N_FEATURES)
    assert torch.allclose(again.candidate_scorer(x), model.candidate_scorer(x))
    assert again.config.candidate_scorer == {"members": 2, "hidden": 8}
    ct = torch.rand(1, len(again.config.regions), *again.config.ct_encoder_settings.image_size)
    with torch.no_grad():
        out = again.vision(ct, ct)  # the scorer runs inside the model's own detection
    assert out.detections is not None


def test_peak_labels_take_the_lesion_of_the_region_near_the_peak() -> None:
    ids = torch.zeros(4, 8, 8, dtype=torch.long)
    ids[1, 2, 2] = 3  # an avid node under the first peak
    ids[2, 5, 5] = 4  # a non-avid nodule one voxel from the second
    ids[0, 0, 7] = 5  # a lesion of another region beside the third
    lesions = {
        3: {"type": "lymph_node", "fdg_avid": True, "region": "chest"},
        4: {"type": "nodule", "fdg_avid": False, "region": "chest"},
        5: {"type": "effusion", "fdg_avid": False, "region": "abdomen_pelvis"},
    }
    voxels = torch.tensor([[1, 2, 2], [2, 6, 6], [0, 0, 6], [3, 7, 0]])
    assert peak_labels(voxels, ids, lesions, "chest") == [
        class_index("lymph_node", True),
        class_index("nodule", False),
        0,
        0,
    ]
    table = scorer_table(ScorerFit(10, {"background": 8, "nodule/avid": 2}, 0.5, 0.9))
    assert "| background | 8 |" in table and "10 peaks" in table
