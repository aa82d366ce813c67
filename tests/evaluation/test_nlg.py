"""NLG metrics: our tokenisation, pycocoevalcap's numbers, ROUGE-1, METEOR, BERTScore."""

from __future__ import annotations

import shutil
import unicodedata
from pathlib import Path

import pytest

from vipet.evaluation import nlg
from vipet.evaluation.nlg import nlg_scores, rouge1_f, tokenize_vi

PREDICTIONS = {
    "p1": "Hình ảnh hạch cổ phải kích thước 12 x 14 mm, tăng chuyển hóa FDG (SUVmax: 8,1).",
    "p2": "Nốt mờ thùy trên phổi trái, không tăng chuyển hóa FDG.",
    "p3": "No abnormal FDG uptake in the chest.",
    "p4": "",
}
REFERENCES: dict[str, str | list[str]] = {
    "p1": "Hình ảnh hạch cổ trái kích thước 12x14 mm, tăng chuyển hóa FDG (SUVmax: 8,2).",
    "p2": ["Nốt mờ thùy dưới phổi trái, không tăng chuyển hóa FDG.", "Nốt mờ phổi trái."],
    "p3": "No abnormal FDG uptake is seen in the chest.",
    "p4": "Gan, lách bắt xạ sinh lý.",
}


def _coco_inputs() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The same joined tokens nlg_scores feeds pycocoevalcap."""
    res = {k: [" ".join(tokenize_vi(v))] for k, v in PREDICTIONS.items()}
    gts = {
        k: [" ".join(tokenize_vi(r)) for r in ([v] if isinstance(v, str) else v)]
        for k, v in REFERENCES.items()
    }
    return gts, res


@pytest.fixture(scope="module")
def scores() -> dict:
    return nlg_scores(PREDICTIONS, REFERENCES, meteor=False)


def test_tokenizer_keeps_diacritics_numbers_and_splits_punctuation() -> None:
    tokens = tokenize_vi("Hạch CỔ phải (SUVmax: 8,1), 12x14 mm; 1.2 cm; đốt sống T8.")
    assert tokens == [
        "hạch", "cổ", "phải", "(", "suvmax", ":", "8,1", ")", ",", "12", "x", "14", "mm",
        ";", "1.2", "cm", ";", "đốt", "sống", "t8", ".",
    ]  # fmt: skip
    assert tokenize_vi("12 × 14") == tokenize_vi("12x14") == ["12", "x", "14"]
    assert tokenize_vi("The right lung.") == ["the", "right", "lung", "."]


def test_tokenizer_nfd_input_gives_nfc_tokens() -> None:
    text = "Tăng chuyển hóa FDG ở thượng đòn trái"
    nfd = unicodedata.normalize("NFD", text)
    assert nfd != text
    tokens = tokenize_vi(nfd)
    assert tokens == tokenize_vi(text)
    assert all(unicodedata.is_normalized("NFC", t) for t in tokens)
    assert "thượng" in tokens and "đòn" in tokens


def test_scores_equal_pycocoevalcap_on_same_tokens(scores: dict) -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _coco_inputs()
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        assert scores[f"bleu{n + 1}"] == bleu[n]
    assert scores["rouge_l"] == Rouge().compute_score(gts, res)[0]
    assert scores["cider"] == Cider().compute_score(gts, res)[0]
    assert scores["n"] == 4
    assert scores["meteor"] is None and any("METEOR" in n for n in scores["notes"])


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs java on PATH")
def test_meteor_equals_pycocoevalcap_through_java() -> None:
    from pycocoevalcap.meteor.meteor import Meteor

    gts, res = _coco_inputs()
    stock = Meteor()  # its JVM starts now and loads while ours runs (saves ~6 s)
    ours = nlg_scores(PREDICTIONS, REFERENCES, meteor=True)
    theirs = stock.compute_score(gts, res)[0]
    assert ours["meteor"] == pytest.approx(theirs, abs=1e-12)
    assert 0.0 < ours["meteor"] < 1.0


def test_rouge1_by_hand() -> None:
    # hyp "a b c d", ref "a c e": overlap 2 -> P = 2/4, R = 2/3, F1 = 2PR/(P+R) = 4/7.
    assert rouge1_f(["a", "b", "c", "d"], [["a", "c", "e"]]) == pytest.approx(4 / 7)
    # clipped counts: "a a" vs "a" -> overlap 1, P = 1/2, R = 1 -> F1 = 2/3; best ref kept.
    assert rouge1_f(["a", "a"], [["x"], ["a"]]) == pytest.approx(2 / 3)
    assert rouge1_f([], [["a"]]) == 0.0
    got = nlg_scores({"x": "Hạch cổ phải"}, {"x": "hạch cổ trái"}, meteor=False)
    assert got["rouge1"] == pytest.approx(2 / 3)  # 2 of 3 syllables each way


def test_identical_texts_score_one() -> None:
    text = "Hình ảnh nốt mờ thùy trên phổi phải kích thước 12 mm, tăng chuyển hóa FDG."
    got = nlg_scores({"a": text}, {"a": [text]}, meteor=False)
    assert got["bleu4"] == pytest.approx(1.0)
    assert got["rouge_l"] == pytest.approx(1.0)
    assert got["rouge1"] == pytest.approx(1.0)


def test_empty_prediction_scores_zero() -> None:
    got = nlg_scores({"a": ""}, {"a": "Gan bình thường."}, meteor=False)
    assert got["bleu1"] == 0.0 and got["rouge_l"] == 0.0 and got["rouge1"] == 0.0
    assert got["cider"] == 0.0


def test_mismatched_keys_raise() -> None:
    with pytest.raises(ValueError, match="keys"):
        nlg_scores({"a": "x"}, {"b": "x"}, meteor=False)


def test_meteor_without_java_is_none_with_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nlg.shutil, "which", lambda name: None)
    got = nlg_scores({"a": "gan"}, {"a": "gan"})
    assert got["meteor"] is None
    assert any("java" in note for note in got["notes"])


def test_meteor_failure_becomes_note(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise OSError("no jar")

    monkeypatch.setattr(nlg.shutil, "which", lambda name: "/usr/bin/java")
    monkeypatch.setattr(nlg, "_start_meteor", broken)
    got = nlg_scores({"a": "gan"}, {"a": "gan"}, meteor=True)
    assert got["meteor"] is None
    assert any("no jar" in note for note in got["notes"])


def test_bertscore_without_model_is_none_with_note(scores: dict) -> None:
    assert scores["bertscore"] is None
    assert any("BERTScore" in note for note in scores["notes"])


def _tiny_encoder(folder: Path) -> Path:
    """A random 2-layer BERT and a word-level tokenizer, saved offline into ``folder``."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    words = ["hạch", "cổ", "phải", "trái", "gan", "lách", "nốt", "mờ", "phổi", "tăng"]
    words += ["chuyển", "hóa", "fdg", ",", "."]
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]",
    )  # fmt: skip
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def test_bertscore_with_tiny_local_model(tmp_path: Path) -> None:
    model_dir = _tiny_encoder(tmp_path / "enc")
    same = nlg_scores(
        {"a": "hạch cổ phải", "b": "nốt mờ phổi trái"},
        {"a": "hạch cổ phải", "b": ["gan", "nốt mờ phổi trái"]},
        meteor=False,
        bertscore_model=model_dir,
    )
    assert same["bertscore"] == pytest.approx(1.0, abs=1e-5)
    scores = nlg.bertscore_f1(["gan lách", "", "hạch cổ trái"], [["nốt mờ phổi"], ["gan"],
                              ["hạch cổ phải"]], model_dir)  # fmt: skip
    assert scores[0] < 0.99 and scores[2] < 1.0
    assert scores[1] == 0.0  # an empty prediction


def test_bertscore_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        nlg.bertscore_f1(["a"], [["a"]], tmp_path / "nope")


def test_meteor_hang_is_killed_after_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    class FakeProcess:
        killed = False

        def poll(self) -> int | None:
            return 0 if self.killed else None

        def kill(self) -> None:
            self.killed = True

        def wait(self, timeout: float | None = None) -> int:
            return 0

    class HangingScorer:
        meteor_p = FakeProcess()
        lock = threading.Lock()

        def compute_score(self, gts: dict, res: dict) -> tuple[float, list]:
            time.sleep(0.5)  # a JVM that never answers, cut short for the test
            raise ValueError("could not convert string to float: b''")

    scorer = HangingScorer()
    monkeypatch.setattr(nlg.shutil, "which", lambda name: "/usr/bin/java")
    monkeypatch.setattr(nlg, "_start_meteor", lambda: scorer)
    score, why = nlg.meteor_score({"a": ["gan"]}, {"a": ["gan"]}, timeout_s=0.05)
    assert score is None and "timed out" in (why or "")
    assert scorer.meteor_p.killed
