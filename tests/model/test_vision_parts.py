"""Vision side of ViPET-VLM: encoder, fusion, resampler/projector, findings head."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from vipet.errors import InputError
from vipet.model.diag_head import (
    LABELS_PER_REGION,
    DiagHeadConfig,
    FindingsHead,
    diag_loss,
    diag_targets,
    label_names,
    region_label_names,
)
from vipet.model.encoder3d import EncoderConfig, ViT3D, freeze, load_encoder_weights
from vipet.model.fusion import FUSIONS, FusionConfig, build_fusion
from vipet.model.projector import ProjectorConfig, VisualProjector
from vipet.reports.schema import REGIONS, Lesion

WIDTH, HEADS, B = 32, 2, 2
ENC = EncoderConfig(image_size=(8, 32, 32), patch_size=(4, 8, 8), width=WIDTH, depth=1, heads=HEADS)
GRID = (2, 4, 4)
N = 32


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tokens(b: int = B, n: int = N, c: int = WIDTH) -> torch.Tensor:
    return torch.randn(b, n, c)


# --- configs -------------------------------------------------------------------------

CONFIGS = [
    ENC,
    FusionConfig(name="bidirectional", width=WIDTH, heads=HEADS, combine="concat"),
    ProjectorConfig(kind="pool", width=WIDTH, heads=HEADS, out_width=16, mlp_hidden=24),
    DiagHeadConfig(width=WIDTH, pos_weight=2.0),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: type(c).__name__)
def test_config_dict_round_trip(cfg: object) -> None:
    data = cfg.to_dict()
    assert all(not isinstance(v, tuple) for v in data.values())  # JSON-ready
    assert type(cfg).from_dict(data) == cfg


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: type(c).__name__)
def test_config_unknown_key_lists_valid_keys(cfg: object) -> None:
    with pytest.raises(ValueError, match=r"unknown .*'widht'.*valid keys: .*'width'"):
        type(cfg).from_dict({"widht": 3})


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: EncoderConfig(image_size=(8, 30, 32), patch_size=(4, 8, 8)), "not divisible"),
        (lambda: EncoderConfig(width=30, heads=4), "divisible by heads"),
        (lambda: EncoderConfig(pos_embed="rope"), "choose from"),
        (lambda: ProjectorConfig(kind="qformer"), "choose from"),
        (lambda: DiagHeadConfig(dropout=1.5), "dropout"),
    ],
)
def test_config_validation(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


# --- encoder -------------------------------------------------------------------------


@pytest.mark.parametrize("pos_embed", ["learned", "sincos"])
def test_encoder_shapes(pos_embed: str) -> None:
    enc = ViT3D(EncoderConfig.from_dict({**ENC.to_dict(), "pos_embed": pos_embed}))
    out = enc(torch.rand(B, 1, 8, 32, 32))
    assert enc.grid == GRID
    assert out.shape == (B, N, WIDTH)
    with pytest.raises(ValueError, match=r"expects \(B, 1, 8, 32, 32\)"):
        enc(torch.rand(B, 1, 8, 32, 16))


def test_encoder_weights_round_trip(tmp_path) -> None:
    enc = ViT3D(ENC).eval()
    path = tmp_path / "enc.safetensors"
    save_file({f"encoder.{k}": v for k, v in enc.state_dict().items()}, str(path))
    fresh = ViT3D(ENC).eval()
    x = torch.rand(1, 1, 8, 32, 32)
    assert not torch.equal(fresh(x), enc(x))
    report = load_encoder_weights(fresh, path, prefix="encoder.")
    assert report.missing == () and report.unexpected == ()
    assert set(report.loaded) == set(enc.state_dict())
    assert torch.equal(fresh(x), enc(x))


def test_encoder_weights_report_missing_and_unexpected(tmp_path) -> None:
    state = ViT3D(ENC).state_dict()
    del state["ln_f.weight"]
    state["head.bias"] = torch.zeros(3)
    path = tmp_path / "enc.pt"
    torch.save({"state_dict": state}, path)
    report = load_encoder_weights(ViT3D(ENC), path)
    assert report.missing == ("ln_f.weight",)
    assert report.unexpected == ("head.bias",)


@pytest.mark.parametrize(("name", "content"), [("gone.pt", None), ("bad.safetensors", b"junk")])
def test_encoder_weights_bad_file(tmp_path, name: str, content: bytes | None) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=name):
        load_encoder_weights(ViT3D(ENC), path)


def test_freeze_stops_gradients() -> None:
    enc = freeze(ViT3D(ENC))
    x = torch.rand(1, 1, 8, 32, 32, requires_grad=True)
    enc(x).sum().backward()
    assert x.grad is not None  # gradients still pass through, nothing is updated
    assert all(not p.requires_grad and p.grad is None for p in enc.parameters())


# --- fusion --------------------------------------------------------------------------

USES = {  # fusion name → (uses PET, uses CT)
    "cross_attention": (True, True),
    "bidirectional": (True, True),
    "concat": (True, True),
    "sum": (True, True),
    "ct_only": (False, True),
    "pet_only": (True, False),
}


def test_uses_covers_the_registry() -> None:
    assert set(USES) == set(FUSIONS)


def fusion(name: str, **kw: object) -> nn.Module:
    return build_fusion(FusionConfig(name=name, width=WIDTH, heads=HEADS, **kw))


@pytest.mark.parametrize(
    ("name", "combine"), [(n, "sum") for n in USES] + [("bidirectional", "concat")]
)
def test_fusion_forward_backward(name: str, combine: str) -> None:
    pet_producer, ct_producer = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH)
    x = tokens()
    out = fusion(name, combine=combine)(pet_producer(x), ct_producer(x))
    assert out.shape == (B, N, WIDTH)
    out.square().mean().backward()
    uses_pet, uses_ct = USES[name]
    for producer, used in ((pet_producer, uses_pet), (ct_producer, uses_ct)):
        grad = producer.weight.grad
        assert (grad is not None and grad.abs().sum() > 0) == used


@pytest.mark.parametrize(("name", "ignored"), [("ct_only", "pet"), ("pet_only", "ct")])
def test_single_modality_ignores_the_other(name: str, ignored: str) -> None:
    f, pet, ct = fusion(name), tokens(), tokens()
    changed = {"pet": pet + 1.0, "ct": ct} if ignored == "pet" else {"pet": pet, "ct": ct + 1.0}
    assert torch.equal(f(pet, ct), f(**changed))


def test_unknown_fusion_lists_choices() -> None:
    with pytest.raises(ValueError, match=re.escape(f"choose from {sorted(FUSIONS)}")):
        build_fusion(FusionConfig(name="late", width=WIDTH, heads=HEADS))


@pytest.mark.parametrize("name", list(USES))
def test_fusion_attention(name: str) -> None:
    f = fusion(name, layers=2).eval()
    pet, ct = tokens(), tokens()
    fused, attn = f(pet, ct, return_attention=True)
    # The explicit-softmax path computes the same tokens as the SDPA path.
    torch.testing.assert_close(fused, f(pet, ct), rtol=1e-5, atol=1e-5)
    if name in ("cross_attention", "bidirectional"):
        assert attn.shape == (B, HEADS, N, N)
        torch.testing.assert_close(attn.sum(-1), torch.ones(B, HEADS, N))
    else:
        assert attn is None


# --- projector -----------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "latents"), [("perceiver", 6), ("pool", 2 * 2 * 2)])
def test_projector_tokens_and_attention(kind: str, latents: int) -> None:
    cfg = ProjectorConfig(
        kind=kind, width=WIDTH, heads=HEADS, num_latents=6, pool_grid=(2, 2, 2), out_width=16
    )
    proj = VisualProjector(cfg).eval()
    x = tokens()
    assert proj.num_tokens(GRID) == latents
    out, attn = proj(x, GRID, return_attention=True)
    assert out.shape == (B, latents, 16)
    assert attn.shape == (B, latents, N)
    torch.testing.assert_close(attn.sum(-1), torch.ones(B, latents))
    torch.testing.assert_close(out, proj(x, GRID), rtol=1e-5, atol=1e-5)
    out.sum().backward()  # the resampler trains


def test_pool_matches_adaptive_avg_pool() -> None:
    grid, pool = (3, 5, 4), (2, 3, 2)
    proj = VisualProjector(ProjectorConfig(kind="pool", width=WIDTH, heads=HEADS, pool_grid=pool))
    x = tokens(n=math.prod(grid))
    _, attn = proj(x, grid, return_attention=True)
    pooled = torch.einsum("bln,bnc->blc", attn, x)
    vol = x.transpose(1, 2).reshape(B, WIDTH, *grid)
    want = F.adaptive_avg_pool3d(vol, pool).flatten(2).transpose(1, 2)
    torch.testing.assert_close(pooled, want)


def test_projector_rejects_wrong_grid() -> None:
    proj = VisualProjector(ProjectorConfig(width=WIDTH, heads=HEADS))
    with pytest.raises(ValueError, match="grid"):
        proj(tokens(), (2, 4, 5))


# --- findings head -------------------------------------------------------------------

NODE = Lesion.at(
    1, "lymph_node", "paratracheal", "right", size_mm=14.0, short_mm=9.0, suvmax=7.1, fdg_avid=True
)
NODULE = Lesion.at(
    2, "nodule", "liver", "none", size_mm=8.0, short_mm=None, suvmax=1.9, fdg_avid=False
)


def on_labels(vector: torch.Tensor, names: list[str]) -> set[str]:
    return {names[i] for i in torch.nonzero(vector).flatten().tolist()}


def test_label_names() -> None:
    names = label_names()
    assert len(names) == len(set(names)) == len(REGIONS) * LABELS_PER_REGION == 87
    assert names[:2] == ["head_neck/lymph_node/avid", "head_neck/lymph_node/not_avid"]
    assert names[LABELS_PER_REGION - 1] == "head_neck/normal"
    assert names[LABELS_PER_REGION : 2 * LABELS_PER_REGION] == region_label_names("chest")


@pytest.mark.parametrize("as_dict", [False, True])
def test_diag_targets(as_dict: bool) -> None:
    lesions = [le.to_dict() for le in (NODE, NODULE)] if as_dict else [NODE, NODULE]
    full = diag_targets(lesions)
    assert on_labels(full, label_names()) == {
        "head_neck/normal",
        "chest/lymph_node/avid",
        "abdomen_pelvis/nodule/not_avid",
    }
    for region, want in [
        ("head_neck", {"head_neck/normal"}),
        ("chest", {"chest/lymph_node/avid"}),
        ("abdomen_pelvis", {"abdomen_pelvis/nodule/not_avid"}),
    ]:
        assert on_labels(diag_targets(lesions, region), region_label_names(region)) == want
    with pytest.raises(ValueError, match="unknown region"):
        diag_targets(lesions, "pelvis")


@pytest.mark.parametrize("kind", ["bce", "focal"])
def test_diag_loss_decreases(kind: str) -> None:
    head = FindingsHead(DiagHeadConfig(width=WIDTH, hidden=16, dropout=0.0, pos_weight=2.0))
    x = tokens()
    targets = torch.stack([diag_targets([NODE], "chest"), diag_targets([], "chest")])
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    logits = head(x)
    assert logits.shape == (B, LABELS_PER_REGION)
    loss = head.loss(logits, targets, kind=kind)
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    assert head.loss(head(x), targets, kind=kind) < loss


def test_diag_loss_unknown_kind() -> None:
    with pytest.raises(ValueError, match=r"choose from \['bce', 'focal'\]"):
        diag_loss(torch.zeros(1, 3), torch.zeros(1, 3), kind="hinge")


def test_peak_stem_sees_a_hot_voxel_wherever_it_sits_in_the_patch() -> None:
    torch.manual_seed(0)
    cfg = EncoderConfig(image_size=(8, 32, 32), patch_size=(4, 8, 8), width=16, depth=1, heads=2)
    enc = ViT3D(EncoderConfig.from_dict({**cfg.to_dict(), "stem": "peak"}))
    assert cfg.peak_block == (2, 2, 2)
    base = torch.zeros(1, 1, 8, 32, 32)
    # With the linear embedding zeroed, only the max-pooled path is left: a hot voxel
    # moved inside its 2x2x2 sub-block gives the same token, as a peak detector should.
    with torch.no_grad():
        enc.patch_embed.weight.zero_()
    a, b = base.clone(), base.clone()
    a[0, 0, 0, 0, 0] = 1.0
    b[0, 0, 1, 1, 1] = 1.0
    ta, tb, t0 = enc(a), enc(b), enc(base)
    torch.testing.assert_close(ta, tb)
    assert not torch.allclose(ta, t0)
    with pytest.raises(ValueError, match="stem"):
        EncoderConfig.from_dict({**cfg.to_dict(), "stem": "resnet"})


def test_token_lesion_targets_mark_every_patch_touching_a_lesion() -> None:
    from vipet.model.diag_head import token_lesion_loss, token_lesion_targets

    lesion = torch.zeros(2, 8, 32, 32, dtype=torch.bool)
    lesion[0, 5, 9, 31] = True  # one voxel: patch (1, 1, 3) of the (2, 4, 4) grid
    t = token_lesion_targets(lesion, (2, 4, 4))
    assert t.shape == (2, 32) and t[0].sum() == 1 and t[1].sum() == 0
    assert t[0].view(2, 4, 4)[1, 1, 3] == 1
    right = torch.where(t > 0, 10.0, -10.0)
    assert token_lesion_loss(right, lesion, (2, 4, 4)) < 1e-3
    assert token_lesion_loss(-right, lesion, (2, 4, 4)) > 5


def test_findings_head_region_labels_are_the_token_maximum() -> None:
    from vipet.model.diag_head import NORMAL_INDEX

    torch.manual_seed(0)
    head = FindingsHead(DiagHeadConfig(width=16, hidden=8)).eval()
    tokens = torch.randn(3, 10, 16)
    found = head.findings(tokens)
    assert found.scores.shape == (3, 10) and found.classes.shape == (3, 10, 28)
    torch.testing.assert_close(found.logits, head(tokens))
    # the classes are a distribution given a lesion; P(class k in the region) is the
    # maximum over tokens of P(lesion) * P(k | lesion)
    torch.testing.assert_close(found.classes.exp().sum(-1), torch.ones(3, 10))
    p = torch.sigmoid(found.scores)[..., None] * found.classes.exp()
    torch.testing.assert_close(torch.sigmoid(found.logits[:, :NORMAL_INDEX]), p.amax(1))
    torch.testing.assert_close(
        torch.sigmoid(found.logits[:, NORMAL_INDEX]), 1 - torch.sigmoid(found.scores).amax(1)
    )


def test_region_logits_stay_finite_for_certain_tokens() -> None:
    from vipet.model.diag_head import _mil_logits

    scores = torch.tensor([[40.0, -40.0]], requires_grad=True)
    classes = torch.zeros((1, 2, 28), requires_grad=True)  # log p = 0: certain
    logits = _mil_logits(scores, classes)
    logits.sum().backward()
    assert torch.isfinite(logits).all() and logits[0, 0] > 10 and logits[0, -1] < -30
    assert torch.isfinite(scores.grad).all() and torch.isfinite(classes.grad).all()


def test_token_class_targets_and_loss() -> None:
    from vipet.model.diag_head import token_class_loss, token_class_targets

    classes = torch.zeros(2, 4, 8, 8, dtype=torch.uint8)
    classes[0, 0, 0, 0] = 3  # label 2 in the first token
    classes[0, 3, 7, 7] = 5  # label 4 in the last token
    classes[0, 3, 6, 7] = 3  # and label 2 beside it: a token may hold two classes
    t = token_class_targets(classes, (2, 2, 2), 28)
    assert t.shape == (2, 8, 28) and t[1].sum() == 0
    assert t[0, 0, 2] == 1 and t[0, 7, 4] == 1 and t[0, 7, 2] == 1 and t[0].sum() == 3
    right = torch.log_softmax(torch.where(t > 0, 20.0, -20.0), dim=-1)
    # a token with two classes is right at 50/50: its loss is log 2, the other's 0
    assert token_class_loss(right, classes, (2, 2, 2)) == pytest.approx(0.5 * math.log(2), abs=1e-4)
    wrong = torch.log_softmax(torch.where(t > 0, -20.0, 20.0), dim=-1)
    assert token_class_loss(wrong, classes, (2, 2, 2)) > 5
    # background tokens do not count: only the two lesion tokens are scored
    right[0, 3] = wrong[0, 3]
    assert token_class_loss(right, classes, (2, 2, 2)) == pytest.approx(0.5 * math.log(2), abs=1e-4)
    empty = torch.zeros(1, 4, 8, 8, dtype=torch.uint8)
    logits = torch.randn(1, 8, 28, requires_grad=True)
    loss = token_class_loss(logits, empty, (2, 2, 2))
    loss.backward()
    assert float(loss) == 0.0 and logits.grad is not None
    with pytest.raises(ValueError, match="outside"):
        token_class_targets(classes + 40, (2, 2, 2), 28)


def test_conv_stem_reaches_the_token_grid() -> None:
    from vipet.model.encoder3d import stem_strides

    assert stem_strides((4, 16, 16)) == [(1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2)]
    assert stem_strides((1, 1, 1)) == []
    cfg = EncoderConfig(
        image_size=(8, 32, 32), patch_size=(4, 8, 8), width=16, depth=1, heads=2, stem="conv"
    )
    enc = ViT3D(cfg)
    out = enc(torch.rand(2, 1, 8, 32, 32))
    assert out.shape == (2, cfg.num_tokens, 16)
    out.sum().backward()
    assert all(p.grad is not None for p in enc.patch_embed.parameters())
    with pytest.raises(ValueError, match="power of two"):
        stem_strides((3, 8, 8))


def test_conv_stem_keeps_the_image_signal_at_initialisation() -> None:
    # With the ViT init (std 0.02) four convolutions shrank the image ~1e4-fold and the
    # tokens were their position embeddings alone: the image must dominate at the start.
    torch.manual_seed(0)
    cfg = EncoderConfig(
        image_size=(32, 128, 128), patch_size=(4, 16, 16), width=64, depth=1, heads=2, stem="conv"
    )
    enc = ViT3D(cfg)
    x = torch.rand(2, 1, 32, 128, 128)
    image = enc.patch_embed(x).flatten(2).transpose(1, 2)
    assert float(image.std()) > 5 * float(enc.pos_embed.std())
    # and two different images give clearly different tokens
    other = enc.patch_embed(torch.rand(2, 1, 32, 128, 128)).flatten(2).transpose(1, 2)
    assert float((image - other).std()) > 0.1 * float(image.std())


def test_white_tophat_keeps_small_hot_spots_and_drops_large_ones() -> None:
    from vipet.model.encoder3d import white_tophat

    x = torch.zeros(1, 1, 9, 32, 32)
    x[:, :, 2:8, 4:20, 4:20] = 1.0  # an "organ" larger than the box
    x[:, :, 4, 26, 26] = 2.0  # a "lesion" smaller than it
    th = white_tophat(x, (3, 5, 5))
    assert th[0, 0, 4, 26, 26] == 2.0
    assert th[0, 0, 2:8, 6:18, 6:18].abs().max() == 0.0  # the organ's inside is gone
    assert th.min() >= 0.0  # opening never exceeds the image
    # the box filter is separable: the same as a 3-D max-pool box
    box = -F.max_pool3d(-x, (3, 5, 5), 1, (1, 2, 2))
    opened = F.max_pool3d(box, (3, 5, 5), 1, (1, 2, 2))
    assert torch.allclose(th, x - opened)


def test_encoder_tophat_channel_and_dense_features() -> None:
    cfg = EncoderConfig(
        image_size=(8, 32, 32),
        patch_size=(4, 8, 8),
        width=32,
        depth=1,
        heads=2,
        stem="conv",
        tophat=(3, 5, 5),
        dense_stage=1,
    )
    enc = ViT3D(cfg)
    assert enc.patch_embed[0].in_channels == 2  # image + its top-hat
    x = torch.rand(2, 1, 8, 32, 32)
    tokens, dense = enc(x, dense=True)
    assert torch.allclose(tokens, enc(x), atol=1e-6)  # the tap changes nothing
    assert dense.shape == (2, cfg.dense_channels, 4, 16, 16)  # after one (2, 2, 2) stage
    with pytest.raises(ValueError, match="dense_stage"):
        ViT3D(
            EncoderConfig(
                image_size=(8, 32, 32),
                patch_size=(4, 8, 8),
                width=32,
                depth=1,
                heads=2,
                stem="conv",
            )
        )(x, dense=True)
    for bad, match in (
        ({"tophat": (3, 4, 5)}, "tophat"),
        ({"dense_stage": 9}, "dense_stage"),
        ({"stem": "linear", "dense_stage": 1}, "dense_stage"),
    ):
        kw = {
            "image_size": (8, 32, 32),
            "patch_size": (4, 8, 8),
            "width": 32,
            "depth": 1,
            "heads": 2,
            "stem": "conv",
            **bad,
        }
        with pytest.raises(ValueError, match=match):
            EncoderConfig(**kw)


def test_dense_lesion_loss_teaches_where_the_lesion_is() -> None:
    from vipet.model.dense_head import DenseLesionHead, dense_lesion_loss, dense_targets

    lesion = torch.zeros(2, 8, 32, 32, dtype=torch.bool)
    lesion[0, 3:5, 8:11, 20:22] = True  # a lesion in the first volume only
    t = dense_targets(lesion, (4, 8, 8))
    assert t.shape == (2, 4, 8, 8) and t[0].sum() == 2 and t[1].sum() == 0
    assert t[0, 1:3, 2, 5].eq(1).all()
    torch.manual_seed(0)
    head = DenseLesionHead(4, 4, hidden=8)
    ct, pet = torch.randn(2, 4, 4, 8, 8), torch.randn(2, 4, 4, 8, 8)
    pet[0, :, 1:3, 2, 5] += 3.0  # the lesion shows in the PET features
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        loss = dense_lesion_loss(head(ct, pet), lesion)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.3 * first
    logits = head(ct, pet)
    assert logits[0, 1:3, 2, 5].min() > logits[0].flatten().topk(3).values[-1] - 1e-6
    # a batch without lesions: BCE alone, finite
    assert torch.isfinite(dense_lesion_loss(logits, torch.zeros_like(lesion)))
