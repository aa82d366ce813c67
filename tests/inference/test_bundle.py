"""`vipet report` / `ask` / `chat`: the report folder (text, JSON with the guard's marks
and attention per stated lesion, NIfTI maps on the CT grid, a picture), nothing written
on failure, and one-line errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.phantom.test_dataset import SMALL
from vipet.cli import main
from vipet.data.tokenizer import FINDING_TOKEN, synthetic_corpus, train_tokenizer
from vipet.evaluation.runner import split_ids
from vipet.inference.bundle import make_report, sections, write_report
from vipet.inference.predictor import Predictor
from vipet.io import LoadOptions, load_study
from vipet.io.nifti import read_nifti_volume
from vipet.io.volume import Units
from vipet.model.checkpoint import save_vipet
from vipet.model.presets import build_model
from vipet.phantom.dataset import write_dataset

CHEST = (
    f"Lồng ngực:{FINDING_TOKEN} Hình ảnh hạch hố nách trái, kích thước khoảng 12 x 10 mm, "
    f"tăng chuyển hóa FDG (SUVmax: 5,2).{FINDING_TOKEN} Hình ảnh nốt mờ ở thùy trên phổi "
    "phải, kích thước 9 x 8 mm, không tăng chuyển hóa FDG (SUVmax: 1,1). Hình ảnh bắt xạ "
    "theo đặc điểm sinh lý ở cơ tim."
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path, str]:
    base = tmp_path_factory.mktemp("bundle")
    data = base / "phantom"
    write_dataset(data, 3, seed=2, layout="vimed", workers=1, config=SMALL, progress=False)
    torch.manual_seed(0)
    tok = train_tokenizer(synthetic_corpus(10, 0), vocab_size=500)
    save_vipet(build_model("tiny", tok, slot_threshold=0.05), tok, base / "model")
    return data, base / "model", split_ids(data, "train")[0]


def _scripted(predictor: Predictor, texts: dict[str, str]):
    """Make the model 'write' a fixed text per region (its prompt names the region)."""
    tok, model = predictor.tokenizer, predictor.model
    ids = {r: tok.encode(t, add_special_tokens=False) for r, t in texts.items()}
    region_ids = {r: tok.convert_tokens_to_ids(f"<region:{r}>") for r in texts}

    def generate(input_ids, visual=None, **_):
        prompt = input_ids[0].tolist()
        region = next((r for r, i in region_ids.items() if i in prompt), None)
        out = ids.get(
            region, tok.encode("Đầu - cổ: Không thấy bất thường.", add_special_tokens=False)
        )
        return torch.tensor([[*out, predictor.stop[0]]])

    model.generate = generate


def test_report_folder_holds_text_findings_guard_and_maps(setup, tmp_path) -> None:
    data, ckpt, sid = setup
    predictor = Predictor.from_checkpoint(ckpt)
    _scripted(predictor, {"chest": CHEST})
    study = load_study(data, LoadOptions(study_id=sid))
    rep = make_report(predictor, study, "vi")
    written = write_report(rep, study, tmp_path / "out", "tiny-test", predictor.model)

    assert (tmp_path / "out" / "report.txt").read_text().startswith("Mô tả hình ảnh:")
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755  # not mkdtemp's private 0700
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert doc["study_id"] == sid and doc["model"]["name"] == "tiny-test"
    assert len(doc["model"]["config_hash"]) == 16
    assert set(doc["sections"]) >= {"head_neck", "chest"}
    assert FINDING_TOKEN not in doc["text"]
    stated = [f for f in doc["findings"] if f["region"] == "chest"]
    assert [(f["type"], f["location"], f["fdg_avid"]) for f in stated] == [
        ("lymph_node", "axilla", True),
        ("nodule", "lung", False),
    ]
    detections = predictor.encode(study).findings("chest")
    for f in stated:
        assert f["guard"]["status"] in ("supported", "differs", "unsupported")
        shares = f["attention"]["on_slots"]
        assert len(shares) == len(detections) and all(0 <= s <= 1 for s in shares)
        assert sum(shares) <= 1 + 1e-6  # shares of all the visual attention
        if f["guard"]["status"] == "unsupported":
            assert f["detection"] is None and f["attention"]["on_its_detection"] is None
        peak = f["attention"]["peak"]
        assert len(peak["world_mm"]) == 3 and len(peak["ct_voxel"]) == 3
        nii = read_nifti_volume(tmp_path / "out" / f["attention"]["map"], "OT", Units.RAW)
        assert nii.grid.shape == study.ct.grid.shape  # on the CT grid
        np.testing.assert_allclose(nii.spacing, study.ct.spacing, rtol=1e-5)
        assert float(nii.array.min()) >= 0.0 and float(nii.array.max()) <= 1.0 + 1e-5
    # every detection is either some statement's or omitted
    claimed = sum(1 for f in stated if f["detection"] is not None)
    omitted = [o for o in doc["omitted"] if o["region"] == "chest"]
    assert claimed + len(omitted) == len(detections)
    assert sum(doc["guard"][k] for k in ("supported", "differs", "unsupported")) == len(
        doc["findings"]
    )
    assert written["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sections_read_back_the_merged_layout() -> None:
    text = "Mô tả hình ảnh:\nĐầu - cổ: A.\nLồng ngực: B. C.\nỔ bụng - khung chậu: D."
    assert sections(text, "vi") == {"head_neck": "A.", "chest": "B. C.", "abdomen_pelvis": "D."}


def test_a_failed_report_leaves_no_folder(setup, tmp_path, monkeypatch) -> None:
    data, ckpt, sid = setup
    predictor = Predictor.from_checkpoint(ckpt)
    _scripted(predictor, {"chest": CHEST})
    study = load_study(data, LoadOptions(study_id=sid))
    rep = make_report(predictor, study, "vi")

    def broken(*_a, **_k):
        raise RuntimeError("disk full")

    import vipet.viz.report_figure as fig

    monkeypatch.setattr(fig, "write_report_figure", broken)
    with pytest.raises(RuntimeError):
        write_report(rep, study, tmp_path / "out", "m", predictor.model)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary twin


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_report_ask_and_chat(setup, tmp_path, capsys, monkeypatch) -> None:
    data, ckpt, sid = setup
    out = tmp_path / "rep"
    code, text, err = run(
        capsys, "report", data, "--study", sid, "--checkpoint", ckpt, "--out", out, "--lang", "en"
    )
    assert code == 0, err
    assert text.startswith("Findings:") and "guard:" in err
    assert {p.name for p in out.iterdir()} >= {"report.txt", "report.json", "summary.png"}

    code, text, err = run(
        capsys, "ask", data, "Is this PET/CT study normal?", "--study", sid, "--checkpoint", ckpt
    )
    assert code == 0, err

    calls = {"encode": 0, "history": []}
    real_encode = Predictor.encode

    def encode(self, study, with_attention=False):
        calls["encode"] += 1
        return real_encode(self, study, with_attention)

    def ask(self, ctx, question, lang="vi", region=None, history=(), max_new_tokens=32):
        calls["history"].append(list(history))
        return f"answer {len(history)}"

    monkeypatch.setattr(Predictor, "encode", encode)
    monkeypatch.setattr(Predictor, "ask", ask)
    monkeypatch.setattr(
        "sys.stdin", io.StringIO("Is the study normal?\nWhere is it?\n\nnot read\n")
    )
    code, text, err = run(capsys, "chat", data, "--study", sid, "--checkpoint", ckpt)
    assert code == 0, err
    assert text.splitlines() == ["answer 0", "answer 1"] and calls["encode"] == 1
    assert calls["history"][1] == [("Is the study normal?", "answer 0")]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--checkpoint", "{tmp}/nowhere"], "not a saved ViPET model"),
        (["--checkpoint", "{ckpt}", "--lang", "fr"], "--lang"),
    ],
)
def test_cli_report_errors_are_one_line(setup, tmp_path, capsys, args, needle) -> None:
    data, ckpt, sid = setup
    filled = [a.format(tmp=tmp_path, ckpt=ckpt) for a in args]
    out = tmp_path / "rep"
    code, _, err = run(capsys, "report", data, "--study", sid, "--out", out, *filled)
    assert code == 1 and needle in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
