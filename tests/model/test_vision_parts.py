"""Vision side of ViPET-VLM: encoder, fusion, resampler/projector, findings head, slots."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from vipet.errors import InputError
from vipet.model.diag_head import (
    FINE_NAMES,
    LABELS_PER_REGION,
    NORMAL_INDEX,
    DenseFindings,
    DiagHeadConfig,
    FindingsHead,
    attribute_maps,
    diag_loss,
    diag_targets,
    findings_losses,
    heat_loss,
    heat_targets,
    label_index,
    label_names,
    lesion_centres,
    lesion_table,
    region_label_names,
    region_logits,
)
from vipet.model.encoder3d import (
    EncoderConfig,
    PyramidStem,
    ViT3D,
    freeze,
    input_channels,
    load_encoder_weights,
    running_max,
    white_tophat,
)
from vipet.model.findings_slots import (
    SLOT_FEATURES,
    TEACHER_FIELDS,
    FindingsSlots,
    FindingsToken,
    detect,
    findings_summary,
    slot_features,
    suv_from_input,
    teacher_detections,
)
from vipet.model.fusion import FUSIONS, FusionConfig, build_fusion
from vipet.model.projector import ProjectorConfig, VisualProjector
from vipet.reports.schema import LATERALITIES, LESION_TYPES, REGIONS, Lesion

WIDTH, HEADS, B = 32, 2, 2
IMAGE = (8, 32, 32)
ENC = EncoderConfig(image_size=IMAGE, patch_size=(4, 8, 8), width=WIDTH, depth=1, heads=HEADS)
GRID = (2, 4, 4)
N = 32
SOFT = (0.4, 0.6)  # a window of the input's [0, 1] range
PYR = EncoderConfig(
    image_size=IMAGE,
    patch_size=(4, 8, 8),
    width=WIDTH,
    depth=1,
    heads=HEADS,
    stem="pyramid",
    pyramid_channels=(4, 8),
    pyramid_strides=((1, 2, 2), (2, 2, 2)),
    windows=(SOFT,),
    tophat=(3, 5, 5),
)
LEVELS = [(4, (8, 16, 16)), (8, (4, 8, 8))]  # PYR's pyramid: (channels, size), finest first
HEAD_SHAPE = (8, 16, 16)  # the findings head's grid: the finest pyramid level
HEAD = DiagHeadConfig(width=WIDTH, pyramid_channels=(4, 8), decoder_channels=(4, 8))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tokens(b: int = B, n: int = N, c: int = WIDTH) -> torch.Tensor:
    return torch.randn(b, n, c)


def pyramids(b: int = B, modalities: int = 2) -> list[list[torch.Tensor]]:
    return [[torch.randn(b, c, *size) for c, size in LEVELS] for _ in range(modalities)]


# --- configs -------------------------------------------------------------------------

CONFIGS = [
    ENC,
    PYR,
    FusionConfig(name="bidirectional", width=WIDTH, heads=HEADS, combine="concat"),
    ProjectorConfig(kind="pool", width=WIDTH, heads=HEADS, out_width=16, mlp_hidden=24),
    DiagHeadConfig(width=WIDTH, pyramid_channels=(4, 8), decoder_channels=(4, 8), pos_weight=2.0),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: type(c).__name__)
def test_config_dict_round_trip(cfg: object) -> None:
    data = cfg.to_dict()
    assert all(not isinstance(v, tuple) for v in data.values())  # JSON-ready
    assert type(cfg).from_dict(data) == cfg
    # nested tuples (pyramid strides, windows) come back from JSON as nested lists
    assert type(cfg).from_dict(json.loads(json.dumps(data))) == cfg


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: type(c).__name__)
def test_config_unknown_key_lists_valid_keys(cfg: object) -> None:
    with pytest.raises(ValueError, match=r"unknown .*'widht'.*valid keys: .*'width'"):
        type(cfg).from_dict({"widht": 3})


def _pyr(**kw: object) -> EncoderConfig:
    return EncoderConfig(image_size=IMAGE, patch_size=(4, 8, 8), stem="pyramid", **kw)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: EncoderConfig(image_size=(8, 30, 32), patch_size=(4, 8, 8)), "not divisible"),
        (lambda: EncoderConfig(width=30, heads=4), "divisible by heads"),
        (lambda: EncoderConfig(pos_embed="rope"), "choose from"),
        (lambda: EncoderConfig(stem="conv"), r"choose from \['linear', 'pyramid'\]"),
        (lambda: EncoderConfig(tophat=(3, 4, 5)), "odd"),
        (lambda: EncoderConfig(tophat=(3, 0, 5)), "all zero or all odd"),
        (lambda: EncoderConfig(windows=((0.6, 0.4),)), "hi > lo"),
        (
            lambda: _pyr(pyramid_channels=(8,), pyramid_strides=((1, 2, 2), (2, 2, 2))),
            "one entry per stage",
        ),
        (lambda: _pyr(pyramid_channels=(8,), pyramid_strides=((1, 3, 2),)), "1 or 2"),
        (
            lambda: _pyr(pyramid_channels=(4, 4, 4), pyramid_strides=((2, 2, 2),) * 3),
            "does not divide",
        ),
        (lambda: ProjectorConfig(kind="qformer"), "choose from"),
        (lambda: DiagHeadConfig(decoder_channels=(8, 16)), "one entry per pyramid level"),
        (lambda: DiagHeadConfig(modalities=3), "modalities"),
        (lambda: DiagHeadConfig(pos_weight=0.0), "pos_weight"),
    ],
)
def test_config_validation(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


# --- encoder -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg",
    [ENC, EncoderConfig.from_dict({**ENC.to_dict(), "pos_embed": "sincos"}), PYR],
    ids=["linear-learned", "linear-sincos", "pyramid"],
)
def test_encoder_shapes(cfg: EncoderConfig) -> None:
    enc = ViT3D(cfg)
    out = enc(torch.rand(B, 1, *IMAGE))
    assert enc.grid == GRID
    assert out.shape == (B, N, WIDTH)
    with pytest.raises(ValueError, match=r"expects \(B, 1, 8, 32, 32\)"):
        enc(torch.rand(B, 1, 8, 32, 16))


def test_pyramid_stem_and_encoder_features() -> None:
    assert PYR.stem_channels == 3  # the volume, its soft-tissue window, their top-hat
    assert PYR.embed_stride == (2, 2, 2)  # patch (4, 8, 8) over the pyramid's (2, 4, 4)
    assert ENC.stem_channels == 1 and ENC.embed_stride == (4, 8, 8)
    t, feats = PyramidStem(PYR)(torch.rand(B, 3, *IMAGE))
    assert t.shape == (B, WIDTH, *GRID)
    assert [tuple(f.shape) for f in feats] == [(B, c, *size) for c, size in LEVELS]
    enc = ViT3D(PYR)
    out = enc.forward_features(torch.rand(B, 1, *IMAGE))
    assert out.tokens.shape == (B, N, WIDTH) and out.grid == GRID
    assert [tuple(p.shape) for p in out.pyramid] == [(B, c, *size) for c, size in LEVELS]
    (out.tokens.square().mean() + sum(p.mean() for p in out.pyramid)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.patch_embed.parameters())
    assert ViT3D(ENC).forward_features(torch.rand(B, 1, *IMAGE)).pyramid == []


def test_pyramid_stem_keeps_the_image_signal_at_initialisation() -> None:
    # With the ViT init (std 0.02) the convolutions shrank the image ~1e4-fold and the
    # tokens were their position embeddings alone: the image must dominate at the start.
    enc = ViT3D(PYR)
    x, other = torch.rand(2, 1, *IMAGE), torch.rand(2, 1, *IMAGE)
    with torch.no_grad():
        image = enc.patch_embed(input_channels(x, PYR))[0]
        again = enc.patch_embed(input_channels(other, PYR))[0]
    assert float(image.std()) > 5 * float(enc.pos_embed.detach().std())
    assert float((image - again).std()) > 0.1 * float(image.std())


@pytest.mark.parametrize(
    ("cfg", "channels"),
    [
        (ENC, 1),
        (EncoderConfig(windows=(SOFT, (0.0, 0.5))), 3),
        (EncoderConfig(tophat=(3, 3, 3)), 2),
        (PYR, 3),
        (EncoderConfig(in_channels=2, windows=(SOFT,), tophat=(1, 3, 3)), 6),
    ],
)
def test_input_channels_count(cfg: EncoderConfig, channels: int) -> None:
    x = torch.rand(1, cfg.in_channels, 5, 12, 12)
    assert cfg.stem_channels == channels
    assert input_channels(x, cfg).shape == (1, channels, 5, 12, 12)


def test_input_channels_are_the_volume_its_windows_and_their_tophat() -> None:
    x = torch.full((B, 1, *IMAGE), 0.45) + 0.02 * torch.rand(B, 1, *IMAGE)
    x[:, :, 2:7, 4:24, 4:24] = 0.58  # an organ: bright in the window, larger than the box
    x[:, :, 4, 28, 28] = 0.9  # a lesion: brighter still, and small
    chans = input_channels(x, PYR)
    assert torch.equal(chans[:, :1], x)
    window = ((x - SOFT[0]) / (SOFT[1] - SOFT[0])).clamp(0.0, 1.0)
    torch.testing.assert_close(chans[:, 1:2], window)
    assert float(chans[:, 1].min()) >= 0.0 and float(chans[:, 1].max()) <= 1.0
    torch.testing.assert_close(chans[:, 2:3], white_tophat(window, (3, 5, 5)))
    assert float(chans[:, 1, 4, 10, 10].min()) == pytest.approx(0.9)  # the organ in the window
    assert float(chans[:, 2, 4, 10, 10].abs().max()) == 0.0  # gone from the top-hat
    assert float(chans[:, 2, 4, 28, 28].min()) > 0.5  # the lesion stays
    assert input_channels(x, ENC) is x  # nothing added: the volume itself


@pytest.mark.parametrize("k", [1, 3, 5, 7, 9, 13])
@pytest.mark.parametrize("dim", [2, 3, 4])
def test_running_max_is_a_centred_max_pool(k: int, dim: int) -> None:
    x = torch.randn(2, 3, 7, 9, 11)  # k = 13 is wider than every axis
    kernel, pad = [1, 1, 1], [0, 0, 0]
    kernel[dim - 2], pad[dim - 2] = k, k // 2
    want = F.max_pool3d(x, kernel, 1, pad)
    assert torch.equal(running_max(x, k, dim), want)


def test_white_tophat_keeps_small_hot_spots_and_drops_large_ones() -> None:
    x = torch.zeros(1, 1, 9, 32, 32)
    x[:, :, 2:8, 4:20, 4:20] = 1.0  # an "organ" (plateau) larger than the box
    x[:, :, 4, 26, 26] = 2.0  # a "lesion" smaller than it
    x[:, :, 1:3, 27:30, 2:5] = 1.5  # a small blob, 2 x 3 x 3: still smaller than the box
    th = white_tophat(x, (3, 5, 5))
    assert th[0, 0, 4, 26, 26] == 2.0
    assert torch.equal(th[0, 0, 1:3, 27:30, 2:5], x[0, 0, 1:3, 27:30, 2:5])
    assert th[0, 0, 2:8, 4:20, 4:20].abs().max() == 0.0  # the organ is gone
    assert th.min() >= 0.0  # opening never exceeds the image
    # the box filter is separable: the same as a 3-D max-pool box
    box = -F.max_pool3d(-x, (3, 5, 5), 1, (1, 2, 2))
    opened = F.max_pool3d(box, (3, 5, 5), 1, (1, 2, 2))
    assert torch.allclose(th, x - opened)


def test_tophat_channel_is_a_fixed_filter() -> None:
    x = torch.rand(1, 1, *IMAGE, requires_grad=True)
    input_channels(x, PYR)[:, 2].sum().backward()
    assert x.grad is None or x.grad.abs().sum() == 0  # nothing to differentiate
    x.grad = None
    input_channels(x, PYR)[:, 1].sum().backward()  # the window does pass gradients
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("pos_embed", ["learned", "sincos"])
def test_crop_tokens_carry_their_positions_in_the_whole_volume(pos_embed: str) -> None:
    enc = ViT3D(EncoderConfig.from_dict({**ENC.to_dict(), "pos_embed": pos_embed})).eval()
    # Without attention each token is its patch's embedding plus its position, so a
    # crop's tokens must equal the whole volume's tokens at the same places.
    enc.blocks = nn.ModuleList()
    x = torch.rand(B, 1, *IMAGE)
    full = enc.forward_features(x).tokens.view(B, *GRID, WIDTH)
    offsets = torch.tensor([[0, 1, 2], [1, 0, 1]])  # in tokens: (4, 8, 8) voxels each
    size = (1, 3, 2)
    crops, want = [], []
    for i, (z, y, x0) in enumerate(offsets.tolist()):
        crops.append(x[i, :, 4 * z : 4 * (z + 1), 8 * y : 8 * (y + 3), 8 * x0 : 8 * (x0 + 2)])
        want.append(full[i, z : z + 1, y : y + 3, x0 : x0 + 2].reshape(-1, WIDTH))
    out = enc.forward_features(torch.stack(crops), offsets)
    assert out.grid == size
    torch.testing.assert_close(out.tokens, torch.stack(want))


def test_whole_volume_at_offset_zero_is_the_plain_forward() -> None:
    enc = ViT3D(PYR).eval()
    x = torch.rand(B, 1, *IMAGE)
    torch.testing.assert_close(
        enc.forward_features(x, torch.zeros(B, 3, dtype=torch.long)).tokens, enc(x)
    )


def test_crop_of_a_pyramid_encoder() -> None:
    enc = ViT3D(PYR)
    out = enc.forward_features(torch.rand(B, 1, 4, 16, 24), torch.tensor([[1, 0, 1], [0, 2, 0]]))
    assert out.tokens.shape == (B, 1 * 2 * 3, WIDTH) and out.grid == (1, 2, 3)
    assert [tuple(p.shape) for p in out.pyramid] == [(B, 4, 4, 8, 12), (B, 8, 2, 4, 6)]


@pytest.mark.parametrize(
    ("shape", "offsets", "match"),
    [
        ((4, 16, 16), None, "needs its offsets"),
        ((4, 16, 16), [[1, 3, 0], [0, 0, 0]], "leave"),
        ((4, 16, 16), [[-1, 0, 0], [0, 0, 0]], "leave"),
        ((4, 16, 16), [[0, 0, 0]], r"offsets must be \(B, 3\)"),
        ((4, 12, 16), [[0, 0, 0], [0, 0, 0]], "whole patches"),
        ((12, 16, 16), [[0, 0, 0], [0, 0, 0]], "whole patches"),
    ],
)
def test_crop_errors(shape, offsets, match: str) -> None:
    enc = ViT3D(ENC)
    with pytest.raises(ValueError, match=match):
        enc.forward_features(torch.rand(B, 1, *shape), offsets)


def test_encoder_weights_round_trip(tmp_path) -> None:
    enc = ViT3D(PYR).eval()
    path = tmp_path / "enc.safetensors"
    save_file({f"encoder.{k}": v for k, v in enc.state_dict().items()}, str(path))
    fresh = ViT3D(PYR).eval()
    x = torch.rand(1, 1, *IMAGE)
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


def test_encoder_weights_of_another_shape_are_an_error(tmp_path) -> None:
    path = tmp_path / "enc.pt"
    torch.save(ViT3D(ENC).state_dict(), path)
    with pytest.raises(InputError, match="do not fit"):
        load_encoder_weights(ViT3D(EncoderConfig.from_dict({**ENC.to_dict(), "width": 16})), path)


@pytest.mark.parametrize(("name", "content"), [("gone.pt", None), ("bad.safetensors", b"junk")])
def test_encoder_weights_bad_file(tmp_path, name: str, content: bytes | None) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=name):
        load_encoder_weights(ViT3D(ENC), path)


def test_freeze_stops_gradients() -> None:
    enc = freeze(ViT3D(PYR))
    x = torch.rand(1, 1, *IMAGE, requires_grad=True)
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
    for name, (pet, ct) in USES.items():  # the findings head reads these pyramids
        assert set(FUSIONS[name].modalities) == {
            m for m, used in (("pet", pet), ("ct", ct)) if used
        }


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


# --- label space ---------------------------------------------------------------------

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
    chest = region_label_names("chest")
    assert chest[label_index("nodule", False)] == "chest/nodule/not_avid"
    assert chest[NORMAL_INDEX] == "chest/normal"
    with pytest.raises(ValueError, match="unknown lesion type"):
        label_index("tumour", True)


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


def test_diag_loss_unknown_kind() -> None:
    with pytest.raises(ValueError, match=r"choose from \['bce', 'focal'\]"):
        diag_loss(torch.zeros(1, 3), torch.zeros(1, 3), kind="hinge")


# --- findings head -------------------------------------------------------------------


def test_findings_head_maps() -> None:
    head = FindingsHead(HEAD)
    assert float(head.out.bias.detach()[0]) == pytest.approx(HEAD.heat_bias)  # σ = 0.1 at the start
    dense = head(tokens(), GRID, pyramids())
    assert dense.shape == HEAD_SHAPE
    want = {
        "heat": (B, *HEAD_SHAPE),
        "lesion": (B, *HEAD_SHAPE),
        "types": (B, len(LESION_TYPES), *HEAD_SHAPE),
        "avid": (B, *HEAD_SHAPE),
        "fine": (B, len(FINE_NAMES), *HEAD_SHAPE),
        "side": (B, len(LATERALITIES), *HEAD_SHAPE),
        "log_size": (B, *HEAD_SHAPE),
    }
    assert {k: tuple(getattr(dense, k).shape) for k in want} == want
    first = dense.map(lambda t: t[:1])
    assert isinstance(first, DenseFindings) and first.types.shape == (1, 14, *HEAD_SHAPE)
    assert torch.equal(first.heat, dense.heat[:1])
    # a single-modality head reads one pyramid
    one = FindingsHead(DiagHeadConfig.from_dict({**HEAD.to_dict(), "modalities": 1}))
    assert one(tokens(), GRID, pyramids(modalities=1)).shape == HEAD_SHAPE
    with pytest.raises(ValueError, match="pyramid"):
        head(tokens(), GRID, pyramids(modalities=1))
    with pytest.raises(ValueError, match="tokens"):
        head(tokens(n=N - 1), GRID, pyramids())


def test_findings_head_decodes_crops() -> None:
    # a crop of (1, 2, 3) tokens with its pyramid: maps at the finest level's size
    pyr = [[torch.randn(1, 4, 4, 8, 12), torch.randn(1, 8, 2, 4, 6)] for _ in range(2)]
    assert FindingsHead(HEAD)(tokens(1, 6), (1, 2, 3), pyr).shape == (4, 8, 12)


def test_findings_head_equals_convolving_the_concatenation() -> None:
    # The head convolves the upsampled decoder map and the skips separately and sums
    # (`_conv_of_concat`, for speed); the reference concatenates them and runs each
    # level's block as it is — the same maps and the same gradients, in float64.
    torch.manual_seed(0)
    head = FindingsHead(HEAD).double()
    fused = tokens().double().requires_grad_()
    pyr = [[t.double().requires_grad_() for t in p] for p in pyramids()]

    def reference() -> torch.Tensor:
        b, _, c = fused.shape
        x = fused.transpose(1, 2).reshape(b, c, *GRID)
        for i, block in enumerate(head.levels):
            skips = [p[len(head.levels) - 1 - i] for p in pyr]
            x = F.interpolate(x, size=tuple(skips[0].shape[2:]), mode="nearest")
            x = block(torch.cat([x, *skips], dim=1))
        return head.out(x)

    want = reference()
    got = head(fused, GRID, pyr)
    torch.testing.assert_close(got.heat, want[:, 0])
    torch.testing.assert_close(got.types, want[:, 2 : 2 + len(LESION_TYPES)])
    grads = torch.autograd.grad(want.square().sum(), [fused, head.levels[-1][0].weight])
    mine = torch.autograd.grad(
        sum(t.square().sum() for t in vars(got).values()), [fused, head.levels[-1][0].weight]
    )
    for a, b in zip(grads, mine, strict=True):
        torch.testing.assert_close(a, b)


def random_dense(b: int = B, shape=HEAD_SHAPE, scale: float = 1.0) -> DenseFindings:
    g = torch.Generator().manual_seed(1)
    r = lambda *s: scale * torch.randn(b, *s, *shape, generator=g)  # noqa: E731
    return DenseFindings(r(), r(), r(len(LESION_TYPES)), r(), r(len(FINE_NAMES)), r(4), r())


def test_region_logits_are_the_voxel_maximum() -> None:
    dense = random_dense()
    logits = region_logits(dense)
    assert logits.shape == (B, LABELS_PER_REGION) and torch.isfinite(logits).all()
    # P(a lesion of type t, avidity a in the region) = max over voxels of
    # P(centre) · P(t) · P(a); P(normal) = 1 − max P(centre)
    heat = torch.sigmoid(dense.heat).flatten(1)
    types = torch.softmax(dense.types, dim=1).flatten(2)
    avid = torch.sigmoid(dense.avid).flatten(1)
    for t in range(len(LESION_TYPES)):
        for avid_, p_a in ((True, avid), (False, 1 - avid)):
            want = (heat * types[:, t] * p_a).amax(-1)
            got = torch.sigmoid(logits[:, label_index(LESION_TYPES[t], avid_)])
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.sigmoid(logits[:, NORMAL_INDEX]), 1 - heat.amax(-1))


def test_region_logits_stay_finite_for_certain_voxels() -> None:
    dense = random_dense(scale=60.0).map(lambda t: t.requires_grad_(True))
    logits = region_logits(dense)
    logits.sum().backward()
    assert torch.isfinite(logits).all()
    assert all(torch.isfinite(getattr(dense, k).grad).all() for k in ("heat", "types", "avid"))


@pytest.mark.parametrize("kind", ["bce", "focal"])
def test_region_diag_loss_decreases(kind: str) -> None:
    head = FindingsHead(DiagHeadConfig.from_dict({**HEAD.to_dict(), "pos_weight": 2.0}))
    x, pyr = tokens(), pyramids()
    targets = torch.stack([diag_targets([NODE], "chest"), diag_targets([], "chest")])
    opt = torch.optim.SGD(head.parameters(), lr=0.05)
    loss = head.loss(region_logits(head(x, GRID, pyr)), targets, kind=kind)
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    assert head.loss(region_logits(head(x, GRID, pyr)), targets, kind=kind) < loss


def test_lesion_table_and_attribute_maps() -> None:
    table = lesion_table([NODE, NODULE.to_dict()])
    assert table.shape == (5, 256)
    assert table[:, 0].abs().sum() == 0 and table[:, 3:].abs().sum() == 0
    want_node = [
        1 + LESION_TYPES.index("lymph_node"),
        2,  # avid
        1 + FINE_NAMES.index("paratracheal"),
        1 + LATERALITIES.index("right"),
        math.log(14.0),
    ]
    torch.testing.assert_close(table[:, 1], torch.tensor(want_node))
    assert table[1, 2] == 1 and table[3, 2] == 1 + LATERALITIES.index("none")
    labels = torch.tensor([[[[0, 1], [2, 2]]]])  # (1, 1, 2, 2)
    maps = attribute_maps(labels, table[None])
    assert maps.shape == (1, 5, 1, 2, 2)
    torch.testing.assert_close(maps[0, :, 0, 0, 1], table[:, 1])
    torch.testing.assert_close(maps[0, :, 0, 1, 0], table[:, 2])
    assert maps[0, :, 0, 0, 0].abs().sum() == 0  # background
    with pytest.raises(ValueError, match="uint8"):
        lesion_table([{**NODE.to_dict(), "id": 300}])


def test_heat_targets_peak_at_the_lesion_centres() -> None:
    centres = [[((2, 5, 7), (1.0, 1.0, 1.0)), ((6.4, 12.0, 2.6), (1.0, 1.5, 2.0))], []]
    heat = heat_targets(centres, HEAD_SHAPE)
    assert heat.shape == (2, *HEAD_SHAPE)
    assert heat[1].abs().sum() == 0  # no lesion, no peak
    assert heat.max() == 1.0 and heat.min() >= 0.0
    assert heat[0, 2, 5, 7] == 1.0 and heat[0, 6, 12, 3] == 1.0  # exactly 1 at the rounded centre
    assert int((heat == 1.0).sum()) == 2
    peaks = (heat[0] == F.max_pool3d(heat[:1], 3, 1, 1)[0]) & (heat[0] > 0.5)
    assert {tuple(p) for p in torch.nonzero(peaks).tolist()} == {(2, 5, 7), (6, 12, 3)}
    assert heat[0, 2, 5, 8] == pytest.approx(math.exp(-0.5))  # Gaussian of sigma 1
    # a crop: the centre on the whole grid, the window starting at ``origin``
    crop = heat_targets([[((10, 5, 7), (1.0, 1.0, 1.0))]], HEAD_SHAPE, torch.tensor([[8, 0, 4]]))
    assert crop[0, 2, 5, 3] == 1.0 and int((crop == 1.0).sum()) == 1
    # a lesion outside the window leaves at most its tail, no peak
    outside = heat_targets([[((10, 5, 7), (1.0, 1.0, 1.0))]], HEAD_SHAPE)
    assert outside.max() < 1.0


def test_lesion_centres_of_a_labelled_volume() -> None:
    labels = torch.zeros(HEAD_SHAPE, dtype=torch.uint8)
    labels[1:4, 1:8, 3:6] = 1  # a 3 x 7 x 3 box around (2, 4, 4)
    labels[6, 8:14, 8] = 5  # an "L": its centre of mass lies off the lesion
    labels[6, 8, 9:14] = 5
    found = {i: (c, s) for i, c, s in lesion_centres(labels)}
    assert set(found) == {1, 5}
    assert found[1][0] == (2.0, 4.0, 4.0)
    assert found[1][1] == pytest.approx((0.8, 7 / 6, 0.8))  # a sixth of the extent, >= 0.8
    c5 = tuple(int(v) for v in found[5][0])
    assert labels[c5] == 5  # the peak lies on the lesion
    assert found[5][1] == pytest.approx((0.8, 1.0, 1.0))
    assert lesion_centres(torch.zeros(HEAD_SHAPE, dtype=torch.uint8)) == []


def test_heat_loss_is_small_when_right_and_large_when_wrong() -> None:
    heat = heat_targets([[((2, 5, 7), (1.0, 1.0, 1.0))]], HEAD_SHAPE)
    right = torch.where(heat >= 1.0, 8.0, -8.0)
    assert float(heat_loss(right, heat)) < 1e-2
    assert float(heat_loss(-right, heat)) > 5.0
    # near the centre a false positive costs little (penalty-reduced)
    near, far = right.clone(), right.clone()
    near[0, 2, 5, 8], far[0, 6, 12, 1] = 8.0, 8.0
    assert float(heat_loss(near, heat)) < float(heat_loss(far, heat))


def test_non_avid_centres_weigh_more_in_the_heat_loss() -> None:
    labels = torch.zeros(1, *HEAD_SHAPE, dtype=torch.uint8)
    labels[0, 1:4, 1:4, 1:4] = 1  # avid, centre (2, 2, 2)
    labels[0, 5:8, 9:12, 9:12] = 2  # not avid, centre (6, 10, 10)
    lesions = [{**NODE.to_dict(), "id": 1}, {**NODE.to_dict(), "id": 2, "fdg_avid": False}]
    tables = lesion_table(lesions)[None]
    heat = heat_targets([[(c, s) for _, c, s in lesion_centres(labels[0])]], HEAD_SHAPE)
    logits = torch.full((1, *HEAD_SHAPE), -6.0)
    logits[0, 2, 2, 2], logits[0, 6, 10, 10] = 0.0, -1.0  # both centres under-called

    def heat_of(weight: float) -> float:
        maps = lambda n: torch.zeros(1, n, *HEAD_SHAPE)  # noqa: E731
        plain = torch.zeros(1, *HEAD_SHAPE)
        dense = DenseFindings(logits, logits, maps(14), plain, maps(20), maps(4), plain)
        return float(findings_losses(dense, labels, tables, heat, weight)["heat"])

    def centre(logit: float) -> float:  # one centre's term, over the two centres
        p = torch.sigmoid(torch.tensor(logit))
        return float(-((1 - p) ** 2) * torch.log(p)) / 2

    # the non-avid centre's term is scaled; the avid one and the negatives are not
    assert heat_of(3.0) - heat_of(1.0) == pytest.approx(2 * centre(-1.0), rel=1e-4)
    assert heat_of(1.0) > centre(0.0) + centre(-1.0)  # the negatives still count


def test_findings_losses_teach_a_tiny_head_one_lesion() -> None:
    head = FindingsHead(HEAD)
    x, pyr = tokens(1), pyramids(1)
    labels = torch.zeros(1, *HEAD_SHAPE, dtype=torch.uint8)
    labels[0, 3:6, 6:9, 9:12] = 7
    tables = lesion_table([{**NODE.to_dict(), "id": 7}])[None]
    heat = heat_targets([[(c, s) for _, c, s in lesion_centres(labels[0])]], HEAD_SHAPE)
    assert heat[0, 4, 7, 10] == 1.0
    opt = torch.optim.Adam(head.parameters(), lr=3e-2)
    first = None
    for _ in range(40):
        parts = findings_losses(head(x, GRID, pyr), labels, tables, heat)
        first = first or {k: float(v.detach()) for k, v in parts.items()}
        opt.zero_grad()
        sum(parts.values()).backward()
        opt.step()
    with torch.no_grad():
        dense = head(x, GRID, pyr)
        last = {k: float(v) for k, v in findings_losses(dense, labels, tables, heat).items()}
    assert set(last) == {"heat", "lesion", "attributes"}
    assert last["heat"] < 0.1 * first["heat"] and last["attributes"] < 0.1 * first["attributes"]
    assert last["lesion"] < 0.9 * first["lesion"]  # the Dice term falls more slowly
    assert labels[0].flatten()[dense.heat[0].argmax()] == 7  # the peak is on the lesion
    inside = labels[0] > 0
    assert dense.lesion[0][inside].mean() > dense.lesion[0][~inside].mean() + 1.0
    types = dense.types[0][:, inside].argmax(0)
    assert (types == LESION_TYPES.index("lymph_node")).float().mean() > 0.9


def test_findings_losses_without_lesions_and_shape_errors() -> None:
    dense = random_dense(b=1).map(lambda t: t.requires_grad_(True))
    labels = torch.zeros(1, *HEAD_SHAPE, dtype=torch.uint8)
    heat = torch.zeros(1, *HEAD_SHAPE)
    parts = findings_losses(dense, labels, torch.zeros(1, 5, 256), heat)
    assert float(parts["attributes"].detach()) == 0.0 and parts["attributes"].requires_grad
    assert all(torch.isfinite(v) for v in parts.values())
    sum(parts.values()).backward()  # the graph holds together without a lesion
    with pytest.raises(ValueError, match="do not match"):
        findings_losses(dense, labels[:, :4], torch.zeros(1, 5, 256), heat[:, :4])


# --- detections and slots ------------------------------------------------------------

PET_SHAPE = IMAGE  # the input grid: the head's grid is (1, 2, 2) coarser
LOG30 = math.log1p(30.0)


def pet_value(suv: float) -> float:
    """The preprocessed (log-scaled, vmax 30) PET value of ``suv``."""
    return math.log1p(suv) / LOG30


def planted(peaks: list[dict], b: int = 1) -> DenseFindings:
    """Head maps with nothing anywhere but the given peaks: each ``{"item", "at",
    "logit", "type", "fine", "side", "avid", "size", "seg"}``, its attributes over the
    3x3x3 neighbourhood (where `detect` reads them)."""
    dense = DenseFindings(
        torch.full((b, *HEAD_SHAPE), -10.0),
        torch.full((b, *HEAD_SHAPE), -10.0),
        torch.zeros(b, len(LESION_TYPES), *HEAD_SHAPE),
        torch.full((b, *HEAD_SHAPE), -10.0),
        torch.zeros(b, len(FINE_NAMES), *HEAD_SHAPE),
        torch.zeros(b, len(LATERALITIES), *HEAD_SHAPE),
        torch.zeros(b, *HEAD_SHAPE),
    )
    for p in peaks:
        i, (z, y, x) = p.get("item", 0), p["at"]
        box = (
            i,
            slice(max(z - 1, 0), z + 2),
            slice(max(y - 1, 0), y + 2),
            slice(max(x - 1, 0), x + 2),
        )
        at = (slice(None), *box[1:])
        dense.heat[i, z, y, x] = p["logit"]
        dense.types[i, LESION_TYPES.index(p.get("type", "lymph_node"))][at[1:]] = 10.0
        dense.fine[i, FINE_NAMES.index(p.get("fine", "paratracheal"))][at[1:]] = 10.0
        dense.side[i, LATERALITIES.index(p.get("side", "right"))][at[1:]] = 10.0
        dense.avid[box] = 10.0 if p.get("avid", True) else -10.0
        dense.log_size[box] = math.log(p.get("size", 12.0))
        if p.get("seg", False):
            dense.lesion[i, z, y, x] = 10.0
    return dense


def test_detect_finds_a_planted_peak_and_measures_its_suvmax() -> None:
    dense = planted([{"at": (4, 8, 8), "logit": 2.0, "seg": True, "size": 12.0}])
    pet = torch.zeros(1, *PET_SHAPE)
    pet[0, 4, 17, 16] = pet_value(8.0)  # inside the peak's segmented voxel (4, 8-9, 8-9 → 16-17)
    pet[0, 3, 14, 14] = pet_value(20.0)  # hotter, near the peak but outside the segmentation
    det = detect(dense, pet, GRID, slots=3, threshold=0.3)
    assert det.slots == 3 and det.filled.tolist() == [[True, False, False]]
    assert det.voxels[0, 0].tolist() == [4, 8, 8]
    assert det.scores[0, 0] == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    (found,) = det.attributes[0]
    assert found["suvmax"] == pytest.approx(8.0, abs=0.05)
    assert found["size_mm"] == 12.0
    assert (found["type"], found["location_detail"], found["laterality"], found["fdg_avid"]) == (
        "lymph_node",
        "paratracheal",
        "right",
        True,
    )
    # its attention row is its encoder token: (4, 8, 8) // (4, 4, 4) = token (1, 2, 2)
    assert det.rows[0, 0].nonzero().flatten().tolist() == [16 + 2 * 4 + 2]
    assert det.rows[0, 1:].abs().sum() == 0 and det.features[0, 1:].abs().sum() == 0
    pos = torch.tensor([(4 + 0.5) / 8, (8 + 0.5) / 16, (8 + 0.5) / 16])
    want = slot_features(
        *(
            torch.tensor(v)
            for v in (0, 1, FINE_NAMES.index("paratracheal"), 0, found["suvmax"], 12.0)
        ),
        pos,
    )
    torch.testing.assert_close(det.features[0, 0], want)
    # without a segmentation the SUVmax is the neighbourhood's highest value
    no_seg = detect(planted([{"at": (4, 8, 8), "logit": 2.0}]), pet, GRID, 3, 0.3)
    assert no_seg.attributes[0][0]["suvmax"] == pytest.approx(20.0, abs=0.05)
    # linear scaling reads the same input differently
    lin = detect(dense, pet, GRID, 3, 0.3, pet_scaling="linear", pet_vmax=30.0)
    assert lin.attributes[0][0]["suvmax"] == pytest.approx(round(30.0 * pet_value(8.0), 1))


def test_detect_keeps_peaks_above_the_threshold_only() -> None:
    dense = planted([{"at": (2, 3, 3), "logit": 0.0}, {"at": (6, 12, 12), "logit": -2.0}])
    pet = torch.zeros(1, *PET_SHAPE)
    assert detect(dense, pet, GRID, 4, threshold=0.3).filled.sum() == 1  # p = 0.5, not 0.12
    assert detect(dense, pet, GRID, 4, threshold=0.6).filled.sum() == 0
    none = detect(planted([]), pet, GRID, 4, threshold=0.3)
    assert not none.filled.any() and none.attributes == [[]]
    assert none.features.shape == (1, 4, SLOT_FEATURES) and none.rows.shape == (1, 4, N)
    with pytest.raises(ValueError, match="pet must be"):
        detect(dense, pet[:, None], GRID, 4, 0.3)


def test_detect_orders_by_report_and_caps_to_the_strongest() -> None:
    liver = {"at": (1, 4, 4), "logit": 4.0, "fine": "liver", "type": "nodule", "side": "left"}
    low_chest = {"at": (6, 4, 12), "logit": 1.0}
    high_chest = {"at": (2, 12, 4), "logit": 3.0, "avid": False}
    pet = torch.zeros(1, *PET_SHAPE)
    det = detect(planted([liver, low_chest, high_chest]), pet, GRID, 4, 0.3)
    # report order: chest before abdomen, then head to foot
    assert det.voxels[0, :3].tolist() == [[2, 12, 4], [6, 4, 12], [1, 4, 4]]
    assert [a["location_detail"] for a in det.attributes[0]] == ["paratracheal"] * 2 + ["liver"]
    assert [a["fdg_avid"] for a in det.attributes[0]] == [False, True, True]
    # the liver is not a lateral location: no side, whatever the side map says
    assert det.attributes[0][2]["laterality"] == "none"
    assert det.attributes[0][2]["type"] == "nodule"
    # at most K slots: the weakest (low_chest) goes, the rest stay in report order
    two = detect(planted([liver, low_chest, high_chest]), pet, GRID, 2, 0.3)
    assert two.filled.tolist() == [[True, True]]
    assert two.voxels[0].tolist() == [[2, 12, 4], [1, 4, 4]]
    assert [round(float(s), 3) for s in two.scores[0]] == [
        round(float(torch.sigmoid(torch.tensor(v))), 3) for v in (3.0, 4.0)
    ]
    assert two.select([0]).voxels.tolist() == two.voxels.tolist()


def test_detect_reports_one_effusion_per_side() -> None:
    fluid = {"type": "effusion", "fine": "pleura", "avid": False}
    peaks = [
        {**fluid, "at": (5, 4, 4), "logit": 3.0, "side": "right"},
        {**fluid, "at": (6, 4, 10), "logit": 2.0, "side": "right"},  # the same layer
        {**fluid, "at": (5, 12, 4), "logit": 1.5, "side": "left"},
        {"at": (2, 12, 12), "logit": 1.0},  # a node, weaker than both duplicates
    ]
    pet = torch.zeros(1, *PET_SHAPE)
    det = detect(planted(peaks), pet, GRID, 3, 0.3)
    kept = sorted((a["type"], a["laterality"]) for a in det.attributes[0])
    assert kept == [("effusion", "left"), ("effusion", "right"), ("lymph_node", "right")]
    right = [
        v
        for v, a in zip(det.voxels[0].tolist(), det.attributes[0], strict=True)
        if a["type"] == "effusion" and a["laterality"] == "right"
    ]
    assert right == [[5, 4, 4]]  # the strongest peak stays
    # nodes are counted peak by peak, side or not
    nodes = [{"at": (2, 4, 4), "logit": 2.0}, {"at": (6, 12, 12), "logit": 2.0}]
    assert detect(planted(nodes), pet, GRID, 3, 0.3).filled.sum() == 2


def test_detect_respects_each_regions_own_zone() -> None:
    dense = planted(
        [
            {"at": (1, 4, 4), "logit": 2.0},
            {"at": (6, 12, 12), "logit": 2.0},
            {"item": 1, "at": (6, 4, 4), "logit": 2.0},
        ],
        b=2,
    )
    pet = torch.zeros(2, *PET_SHAPE)
    # volume 0 owns its top half only, volume 1 all of it
    det = detect(dense, pet, GRID, 4, 0.3, zones=torch.tensor([[0, 4], [0, 8]]))
    assert det.filled.sum(1).tolist() == [1, 1]
    assert det.voxels[0, 0].tolist() == [1, 4, 4] and det.voxels[1, 0].tolist() == [6, 4, 4]
    lower = detect(dense, pet, GRID, 4, 0.3, zones=torch.tensor([[4, 8], [0, 0]]))
    assert lower.filled.sum(1).tolist() == [1, 0] and lower.voxels[0, 0].tolist() == [6, 12, 12]
    assert lower.attributes[1] == []


def test_suv_from_input() -> None:
    v = torch.tensor([0.0, pet_value(5.0), 1.0])
    torch.testing.assert_close(suv_from_input(v, "log", 30.0), torch.tensor([0.0, 5.0, 30.0]))
    torch.testing.assert_close(suv_from_input(v[2:], "linear", 20.0), torch.tensor([20.0]))
    with pytest.raises(ValueError, match="scaling"):
        suv_from_input(v, "sqrt", 30.0)


def teacher_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    filed = torch.zeros(2, *IMAGE, dtype=torch.uint8)
    filed[0, 0:4, 0:8, 0:8] = 1  # token (0, 0, 0) exactly
    filed[0, 4:8, 8:16, 8:24] = 2  # tokens (1, 1, 1) and (1, 1, 2), half each
    attrs = torch.zeros(2, 3, len(TEACHER_FIELDS))
    para, liver = FINE_NAMES.index("paratracheal"), FINE_NAMES.index("liver")
    attrs[0, 0] = torch.tensor([1, 0, 1, para, 0, 7.1, 14.0])  # avid right paratracheal node
    attrs[0, 1] = torch.tensor([1, 1, 0, liver, 3, 1.9, 8.0])  # liver nodule, not avid
    attrs[0, 2] = torch.tensor([1, 0, 1, para, 0, 3.0, 9.0])  # present, but no voxels: not shown
    return filed, attrs


def test_teacher_detections_sit_on_the_described_lesions() -> None:
    filed, attrs = teacher_inputs()
    det = teacher_detections(filed, attrs, GRID, HEAD_SHAPE)
    assert det.filled.tolist() == [[True, True, False], [False, False, False]]
    assert det.scores.tolist() == det.filled.float().tolist()
    assert det.rows[0, 0].nonzero().flatten().tolist() == [0] and det.rows[0, 0, 0] == 1.0
    assert det.rows[0, 1].nonzero().flatten().tolist() == [16 + 4 + 1, 16 + 4 + 2]
    torch.testing.assert_close(det.rows[0, 1].sum(), torch.tensor(1.0))
    assert det.rows[0, 2].abs().sum() == 0 and det.rows[1].abs().sum() == 0
    # positions: the lesions' centres, (0.25, 0.125, 0.125) and (0.75, 0.375, 0.5)
    assert det.voxels[0, :2].tolist() == [[2, 2, 2], [6, 6, 8]]
    want = slot_features(
        *(torch.tensor(v) for v in (0, 1, FINE_NAMES.index("paratracheal"), 0, 7.1, 14.0)),
        torch.tensor([0.25, 0.125, 0.125]),
    )
    torch.testing.assert_close(det.features[0, 0], want)
    assert det.features[0, 2].abs().sum() == 0 and det.features[1].abs().sum() == 0
    assert det.attributes[1] == []
    node, nodule = det.attributes[0]
    assert node == {
        "type": "lymph_node",
        "fdg_avid": True,
        "location_detail": "paratracheal",
        "location": "mediastinum",
        "section": "chest",
        "laterality": "right",
        "suvmax": 7.1,
        "size_mm": 14.0,
    }
    assert (nodule["type"], nodule["fdg_avid"], nodule["laterality"]) == ("nodule", False, "none")
    with pytest.raises(ValueError, match="attrs must be"):
        teacher_detections(filed, attrs[:, :, :5], GRID, HEAD_SHAPE)
    with pytest.raises(ValueError, match="tile"):
        teacher_detections(filed[:, :, :30], attrs, GRID, HEAD_SHAPE)


def test_slot_features_digits() -> None:
    f = slot_features(*(torch.tensor(v) for v in (2, 1, 3, 1, 12.3, 47.0)), torch.zeros(3))
    assert f.shape == (SLOT_FEATURES,)
    n_types, n_fine = len(LESION_TYPES), len(FINE_NAMES)
    assert f[2] == 1 and f[:n_types].sum() == 1 and f[n_types] == 1
    at = n_types + 1 + n_fine + len(LATERALITIES)
    suv = f[at : at + 30].view(3, 10).argmax(-1).tolist()
    assert suv == [1, 2, 3]  # 12.3: tens, units, tenths
    size = f[at + 31 : at + 51].view(2, 10).argmax(-1).tolist()
    assert size == [4, 7]


def test_finding_slots_show_the_empty_token_where_nothing_is_found() -> None:
    filed, attrs = teacher_inputs()
    det = teacher_detections(filed, attrs, GRID, HEAD_SHAPE)
    slots = FindingsSlots(3, 16)
    x = slots(det)
    assert x.shape == (2, 3, 16)
    for i, j in torch.nonzero(~det.filled).tolist():
        torch.testing.assert_close(x[i, j], slots.empty + slots.index[j])
    for i, j in torch.nonzero(det.filled).tolist():
        assert not torch.allclose(x[i, j], slots.empty + slots.index[j])
    # an empty detection shows the empty token in every slot
    none = detect(planted([], b=2), torch.zeros(2, *PET_SHAPE), GRID, 3, 0.3)
    torch.testing.assert_close(slots(none), (slots.empty + slots.index).expand(2, 3, 16))
    with pytest.raises(ValueError, match="slots"):
        FindingsSlots(2, 16)(det)


def test_findings_summary_and_token() -> None:
    filed, attrs = teacher_inputs()
    det = teacher_detections(filed, attrs, GRID, HEAD_SHAPE)
    summary = findings_summary(det)
    assert summary.shape == (2, 2 * len(LESION_TYPES) + 1)
    want = torch.zeros(2, 29)
    want[0, label_index("lymph_node", True)] = want[0, label_index("nodule", False)] = 1.0
    want[0, -1] = 2.0
    torch.testing.assert_close(summary, torch.log1p(want))
    token = FindingsToken(16)
    assert token(det).shape == (2, 1, 16)
    rows = FindingsToken.rows(det)
    assert rows.shape == (2, 1, N)
    torch.testing.assert_close(rows.sum(-1), torch.ones(2, 1))
    torch.testing.assert_close(rows[1, 0], torch.full((N,), 1.0 / N))  # no finding: uniform
    assert rows[0, 0].nonzero().flatten().tolist() == [0, 21, 22]
