"""The ViPET tokenizer: exact round trips, special tokens, save / load, adding tokens."""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from vipet.data.tokenizer import (
    CHAT_TEMPLATE,
    END_TOKEN,
    FINDING_TOKEN,
    IMAGE_TOKEN,
    SPECIAL_TOKENS,
    VIPET_TOKENS,
    add_vipet_tokens,
    corpus_from_dataset,
    load_tokenizer,
    region_token,
    save_tokenizer,
    stop_token_ids,
    synthetic_corpus,
    train_tokenizer,
)
from vipet.errors import InputError
from vipet.reports.render import render_report, report_text
from vipet.reports.schema import Lesion


def _report_vi() -> str:
    lesions = [
        Lesion.at(0, "lymph_node", "cervical", "left", size_mm=12, short_mm=8, suvmax=8.14,
                  fdg_avid=True, level="IV"),
        Lesion.at(1, "nodule", "lung_upper", "right", size_mm=14.6, short_mm=None, suvmax=5.2,
                  fdg_avid=True),
        Lesion.at(2, "mass", "liver", "none", size_mm=31, short_mm=24, suvmax=11.3,
                  fdg_avid=True, level="VII"),
    ]  # fmt: skip
    return report_text(render_report(lesions, "vi", np.random.default_rng(5)))


def _round_trip(tok, text: str) -> str:
    return tok.decode(tok.encode(text, add_special_tokens=False))


def test_synthetic_corpus_is_seeded_and_bilingual() -> None:
    a = list(synthetic_corpus(3, 7))
    assert a == list(synthetic_corpus(3, 7))
    assert a != list(synthetic_corpus(3, 8))
    joined = "\n".join(a)
    assert "Mô tả hình ảnh" in joined and "Findings" in joined
    assert list(synthetic_corpus(0, 0)) == []


TRICKY = [
    "Hình ảnh hạch cổ trái nhóm IV (SUVmax: 8,1)",
    "Increased FDG uptake (SUVmax 12.34) in a 12 x 8 mm node",
    "Đốt sống T8 — tăng chuyển hóa FDG; 🙂 ✓ 日本 ∑ \t tab  two  spaces\n",
    " leading space and trailing ",
    "0123456789 1e-3 -4,5",
    "",
]


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip_is_exact(tokenizer, text: str) -> None:
    assert _round_trip(tokenizer, text) == text


def test_round_trip_of_a_vietnamese_report(tokenizer) -> None:
    text = _report_vi()
    assert _round_trip(tokenizer, text) == text
    # Trained on report text: the report costs far fewer tokens than its UTF-8 bytes.
    assert len(tokenizer.encode(text, add_special_tokens=False)) < len(text.encode()) / 2


def test_nfd_input_comes_back_nfc(tokenizer) -> None:
    nfc = "Hình ảnh nốt mờ thùy trên phổi phải, tăng chuyển hóa FDG"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc
    assert _round_trip(tokenizer, nfd) == nfc
    assert tokenizer.encode(nfd) == tokenizer.encode(nfc)


def test_special_tokens_are_single_ids_and_never_split(tokenizer) -> None:
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(len(SPECIAL_TOKENS)))  # listed first, in order
    for token, i in zip(SPECIAL_TOKENS, ids, strict=True):
        assert tokenizer.encode(token, add_special_tokens=False) == [i]
        assert tokenizer.encode(f"x{token}y", add_special_tokens=False).count(i) == 1
    assert set(tokenizer.all_special_tokens) >= set(SPECIAL_TOKENS)
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id) == (0, 1)
    assert (tokenizer.eos_token_id, tokenizer.unk_token_id) == (2, 3)
    assert stop_token_ids(tokenizer) == [ids[SPECIAL_TOKENS.index(END_TOKEN)], 2]


def test_image_tokens_count_and_no_bos_added(tokenizer) -> None:
    image = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert tokenizer.encode(IMAGE_TOKEN * 5) == [image] * 5
    text = f"{region_token('chest')}<ct><pet>{IMAGE_TOKEN * 5}\nCâu hỏi?"
    ids = tokenizer.encode(text)
    assert ids.count(image) == 5
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == "\nCâu hỏi?"


def test_chat_template_is_set(tokenizer) -> None:
    assert tokenizer.chat_template == CHAT_TEMPLATE


def test_save_load_round_trip(tokenizer, tmp_path) -> None:
    written = save_tokenizer(tokenizer, tmp_path / "tok")
    assert (tmp_path / "tok" / "tokenizer.json") in written
    assert not [p for p in (tmp_path / "tok").iterdir() if p.name.startswith(".")]
    loaded = load_tokenizer(tmp_path / "tok")
    text = _report_vi() + IMAGE_TOKEN * 3 + END_TOKEN
    assert loaded.encode(text) == tokenizer.encode(text)
    assert loaded.chat_template == tokenizer.chat_template
    assert loaded.special_tokens_map == tokenizer.special_tokens_map
    assert len(loaded) == len(tokenizer)


def test_load_errors_name_the_folder(tmp_path) -> None:
    with pytest.raises(InputError, match="no such tokenizer folder") as missing:
        load_tokenizer(tmp_path / "nothing")
    assert str(tmp_path / "nothing") in str(missing.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a tokenizer folder"):
        load_tokenizer(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot load") as broken:
        load_tokenizer(tmp_path / "broken")
    assert str(tmp_path / "broken") in str(broken.value)


def _plain_tokenizer(specials: list[str]) -> PreTrainedTokenizerFast:
    """Stands in for a pretrained LLM tokenizer: byte-level BPE, eos only, no pad."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(["plain text for a plain tokenizer"] * 3, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", extra_special_tokens=specials[1:]
    )


def test_add_vipet_tokens_adds_exactly_the_missing_ones() -> None:
    tok = _plain_tokenizer(["<|endoftext|>", IMAGE_TOKEN])  # already has <image>
    before = len(tok)
    assert tok.encode("<ct>", add_special_tokens=False) != [tok.convert_tokens_to_ids("<ct>")]
    added = add_vipet_tokens(tok)
    missing = len(VIPET_TOKENS) - 1 + 1  # every ViPET token but <image>, plus a pad
    assert added == missing and len(tok) == before + missing
    assert tok.pad_token == "<pad>" and tok.eos_token == "<|endoftext|>"
    for token in VIPET_TOKENS:
        assert (
            tok.encode(f"a{token}b", add_special_tokens=False).count(
                tok.convert_tokens_to_ids(token)
            )
            == 1
        )
    assert tok.chat_template == CHAT_TEMPLATE
    assert add_vipet_tokens(tok) == 0  # idempotent


def test_train_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["a"], vocab_size=100)
    with pytest.raises(ValueError, match="no texts"):
        train_tokenizer([], vocab_size=400)


def test_corpus_from_dataset_reads_ground_truth(tmp_path) -> None:
    gt = tmp_path / "ground_truth"
    gt.mkdir()
    studies = [{"id": "a", "split": "train"}, {"id": "b", "split": "test"}]
    (tmp_path / "dataset.json").write_text(json.dumps({"studies": studies}))
    report = {"Mô tả hình ảnh": {"Đầu - cổ": "Bình thường."}, "Nhận định kết quả": "Ổn."}
    qa = {"question": "Có hạch không?", "answer": "Không"}
    for sid in ("a", "b"):
        record = {"report_vi": report, "report_en": None, "questions_vi": [qa]}
        (gt / f"{sid}.json").write_text(json.dumps(record, ensure_ascii=False))
    texts = list(corpus_from_dataset(tmp_path))
    assert texts == [report_text(report), "Có hạch không?", "Không"]
    assert len(list(corpus_from_dataset(tmp_path, splits=None))) == 6


def test_finding_markers_vanish_from_decoded_text(tokenizer) -> None:
    marked = "Lồng ngực:<finding> Hình ảnh nốt mờ thùy trên phổi phải.<finding> Hạch nách trái."
    ids = tokenizer.encode(marked, add_special_tokens=False)
    assert ids.count(tokenizer.convert_tokens_to_ids(FINDING_TOKEN)) == 2
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert decoded == marked.replace(FINDING_TOKEN, "")
