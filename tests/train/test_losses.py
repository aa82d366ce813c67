"""Losses: hand-computed Focal Tversky values, contrastive sanity, combination."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch

from vipet.data.prompts import IGNORE_INDEX
from vipet.model.attention_map import tokens_to_voxels
from vipet.train.losses import (
    LossWeights,
    answer_cross_entropy,
    combine,
    contrastive_loss,
    focal_tversky_from_counts,
    focal_tversky_loss,
    voxels_per_token,
)


def test_focal_tversky_by_hand() -> None:
    a = torch.zeros(1, 2, 2, 2)
    m = torch.zeros(1, 2, 2, 2)
    a[0, 0, 0, :] = torch.tensor([1.0, 0.5])  # attention on two voxels
    m[0, 0, 0, 0] = 1.0  # lesion in one of them
    # TP = 1, FP = 0.5, FN = 0 -> T = 1 / (1 + 0.3*0.5) = 0.8696; loss = (1 - T)^2 = 0.01701
    t = 1.0 / (1.0 + 0.3 * 0.5)
    assert focal_tversky_loss(a, m, eps=0.0).item() == pytest.approx((1 - t) ** 2, rel=1e-6)


@pytest.mark.parametrize(("overlap", "expected"), [(True, 0.0), (False, 1.0)])
def test_focal_tversky_extremes(overlap: bool, expected: float) -> None:
    m = torch.zeros(2, 1, 4, 4, 4)
    m[:, :, :2] = 1
    a = m.clone() if overlap else 1 - m
    assert focal_tversky_loss(a, m).item() == pytest.approx(expected, abs=1e-5)


def test_focal_tversky_gradient_moves_attention_onto_the_mask() -> None:
    m = torch.zeros(1, 4, 4, 4)
    m[:, 1:3, 1:3, 1:3] = 1
    logits = torch.zeros(1, 4, 4, 4, requires_grad=True)
    focal_tversky_loss(torch.sigmoid(logits), m).backward()
    assert (logits.grad[m.bool()] < 0).all()  # more attention inside the mask lowers the loss
    assert (logits.grad[~m.bool()] > 0).all()


def test_focal_tversky_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="differ"):
        focal_tversky_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 3))


def test_contrastive_prefers_matched_pairs() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.randn(8, 16, generator=g)
    matched = contrastive_loss(img, img + 0.01 * torch.randn(8, 16, generator=g))
    shuffled = contrastive_loss(img, img[torch.randperm(8, generator=g)])
    assert matched < shuffled


def test_combine_weights_and_logs() -> None:
    parts = {
        "lm": torch.tensor(2.0),
        "diag": torch.tensor(1.0),
        "align": None,
        "contrastive": torch.tensor(5.0),
    }
    total, log = combine(parts, LossWeights(lm=1.0, diag=0.5, align=0.5, contrastive=0.0))
    assert total.item() == pytest.approx(2.5)
    assert log == {"loss/lm": 2.0, "loss/diag": 1.0, "loss/contrastive": 5.0, "loss/total": 2.5}
    with pytest.raises(ValueError, match="no loss"):
        combine({"lm": None}, LossWeights())


def test_loss_weights_name_the_trained_parts() -> None:
    names = [f.name for f in fields(LossWeights)]
    assert names == ["lm", "diag", "align", "contrastive", "heat", "lesion", "attributes"]
    with pytest.raises(ValueError, match=">= 0"):
        LossWeights(heat=-1.0)


def test_combine_logs_unweighted_findings_parts_without_training_them() -> None:
    heat = torch.tensor(3.0, requires_grad=True)
    parts = {
        "diag": torch.tensor(1.0),
        "heat": heat,
        "lesion": None,
        "attributes": torch.tensor(2.0),
    }
    total, log = combine(parts, LossWeights(diag=0.5, heat=0.0, attributes=2.0))
    assert total.item() == pytest.approx(4.5) and not total.requires_grad
    assert log == {"loss/diag": 1.0, "loss/heat": 3.0, "loss/attributes": 2.0, "loss/total": 4.5}


def test_the_token_grid_loss_is_the_voxel_loss_of_the_spread_map() -> None:
    # a (B, R, N) map spread over the voxels patch by patch, against a voxel mask: the
    # loss from the tokens and the mask's voxels per token is the voxel-level loss
    torch.manual_seed(0)
    grid, shape = (2, 3, 3), (4, 6, 9)
    tokens = torch.rand(2, 3, 18, requires_grad=True)
    mask = torch.rand(2, 3, *shape) > 0.8
    voxel = focal_tversky_loss(tokens_to_voxels(tokens, grid, shape), mask)
    inside = voxels_per_token(mask, grid)
    assert inside.shape == (2, 3, 18) and inside.sum() == mask.sum()
    # token (z, y, x) holds the voxels of its patch, in the encoders' order
    assert inside[1, 2, (1 * 3 + 2) * 3 + 0] == mask[1, 2, 2:4, 4:6, 0:3].sum()
    total = torch.full_like(inside, 4 * 6 * 9 // 18)
    token = focal_tversky_from_counts(tokens, inside, total)
    assert token.item() == pytest.approx(voxel.item(), rel=1e-5)
    (g_voxel,) = torch.autograd.grad(voxel, tokens)
    (g_token,) = torch.autograd.grad(token, tokens)
    assert torch.allclose(g_voxel, g_token, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="tile"):
        voxels_per_token(mask[..., :8], grid)
    with pytest.raises(ValueError, match="differ"):
        focal_tversky_from_counts(tokens, inside[..., :17], total)


def _answers() -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of two examples: a 6-token answer and a 1-token answer (labels ignore the rest)."""
    logits = torch.randn(2, 8, 11, generator=torch.Generator().manual_seed(0))
    labels = torch.full((2, 8), IGNORE_INDEX)
    labels[0, 2:8] = torch.tensor([1, 2, 3, 4, 5, 6])  # a report
    labels[1, 6] = 7  # a yes/no answer
    return logits, labels


def test_answer_cross_entropy_token_is_the_causal_lm_loss() -> None:
    logits, labels = _answers()
    # by hand: the logit at t predicts the label at t + 1, over the 7 answer tokens
    ce = [
        torch.nn.functional.cross_entropy(logits[b, t - 1][None], labels[b, t][None])
        for b in range(2)
        for t in range(1, 8)
        if labels[b, t] != IGNORE_INDEX
    ]
    want = torch.stack(ce).mean()
    assert answer_cross_entropy(logits, labels, "token").item() == pytest.approx(want.item())


def test_answer_cross_entropy_sample_weighs_each_example_once() -> None:
    logits, labels = _answers()
    per = [answer_cross_entropy(logits[b : b + 1], labels[b : b + 1], "token") for b in range(2)]
    sample = answer_cross_entropy(logits, labels, "sample")
    assert sample.item() == pytest.approx(((per[0] + per[1]) / 2).item())
    # the one-token answer weighs 1/2 here, 1/7 by tokens
    assert sample.item() != pytest.approx(answer_cross_entropy(logits, labels, "token").item())
    # an example with no answer tokens is left out, not counted as zero
    labels[1] = IGNORE_INDEX
    assert answer_cross_entropy(logits, labels, "sample").item() == pytest.approx(per[0].item())
    with pytest.raises(ValueError, match="lm reduction"):
        answer_cross_entropy(logits, labels, "mean")
