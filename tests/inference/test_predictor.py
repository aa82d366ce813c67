"""Reports and answers from a saved model: encode once, whole-study or region by region,
and the prediction rows the evaluation runner scores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.phantom.test_dataset import SMALL
from vipet.data.tokenizer import synthetic_corpus, train_tokenizer
from vipet.evaluation.runner import split_ids
from vipet.inference.predictor import Predictor, predict_dataset
from vipet.io import LoadOptions, load_study
from vipet.model.checkpoint import save_vipet
from vipet.model.presets import build_model
from vipet.phantom.dataset import write_dataset


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("predict")
    data = base / "phantom"
    write_dataset(data, 3, seed=2, layout="vimed", workers=1, config=SMALL, progress=False)
    torch.manual_seed(0)
    tok = train_tokenizer(synthetic_corpus(10, 0), vocab_size=500)
    save_vipet(build_model("tiny", tok), tok, base / "model")
    return data, base / "model"


def test_report_by_region_has_one_section_per_region(setup) -> None:
    data, ckpt = setup
    p = Predictor.from_checkpoint(ckpt)
    sid = split_ids(data, "train")[0]
    ctx = p.encode(load_study(data, LoadOptions(study_id=sid)))
    assert ctx.regions == ["head_neck", "chest", "abdomen_pelvis"]
    text = p.report(ctx, "en", max_new_tokens=4, by_region=True)
    lines = text.split("\n")
    assert lines[0] == "Findings:" and len(lines) >= 4
    # each section is what the region prompt alone gives
    assert p.report(ctx, "en", "chest", max_new_tokens=4) in text
    assert isinstance(p.ask(ctx, "Is there a lymph node in the neck?", "en"), str)


def test_predict_dataset_rows_cover_the_subset(setup) -> None:
    data, ckpt = setup
    rows = predict_dataset(
        ckpt, data, "train", "vi", progress=False, max_studies=1, report_tokens=4, by_region=True
    )
    assert [r["id"] for r in rows] == split_ids(data, "train")[:1]
    assert rows[0]["lang"] == "vi" and rows[0]["report"].startswith("Mô tả hình ảnh:")
    assert rows[0]["answers"] and all("prediction" in a for a in rows[0]["answers"])
