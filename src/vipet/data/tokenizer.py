"""ViPET's tokens, its own small tokenizer, and the one chat template.

The special tokens are listed here and nowhere else (`SPECIAL_TOKENS`): the four usual
ones (pad, bos, eos, unk), the visual placeholder `<image>` (repeated once per visual
token; the model swaps its embeddings for image features), the modality and region
markers of a visual block, the chat-role markers of `CHAT_TEMPLATE`, and `<finding>`,
which opens a lesion's sentence (`FINDING_TOKEN`).

Two ways to get a tokenizer:

- `train_tokenizer` — a byte-level BPE trained on report / question text (from a
  dataset on disk with `corpus_from_dataset`, or with no data at all from
  `synthetic_corpus`): what the tiny and CPU models use. Text is NFC-normalised and
  every byte has a token, so ``decode(encode(s)) == NFC(s)`` for any string.
- `add_vipet_tokens` — registers the same tokens (and the chat template) on any
  pretrained Hugging Face tokenizer, so a real LLM reads the same prompts; the caller
  resizes the LLM's embeddings to ``len(tokenizer)``.

Generation stops at either `END_TOKEN` (the end of an assistant turn) or eos:
`stop_token_ids` gives both ids.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from vipet.errors import InputError
from vipet.io.vipet_dataset import ground_truth, read_dataset
from vipet.reports.questions import make_questions
from vipet.reports.render import render_report, report_text
from vipet.reports.schema import FINE_LOCATIONS, LESION_TYPES, REGIONS, Lesion

# ---- the tokens -----------------------------------------------------------------------

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"
IMAGE_TOKEN = "<image>"
CT_TOKEN = "<ct>"
PET_TOKEN = "<pet>"
WHOLE = "whole"  # the region name of a whole-study prompt
REGION_TOKENS: dict[str, str] = {r: f"<region:{r}>" for r in (*REGIONS, WHOLE)}
ROLE_TOKENS: dict[str, str] = {
    "system": "<|system|>",
    "user": "<|user|>",
    "assistant": "<|assistant|>",
}
END_TOKEN = "<|end|>"  # closes every chat turn; an assistant answer ends with it
FINDING_TOKEN = "<finding>"
"""Opens each lesion's sentence in a region's findings text when the model points its
finding slots into the text (`ViPetConfig.slot_pointer`): the k-th marker takes the
k-th filled slot's embedding, so the words that follow describe that slot. The first
lesion reported under another section opens that section's line instead, heading
included (`vipet.reports.render.render_region_findings`)."""

# The tokens ViPET's prompts need beyond a language model's own bos/eos/pad/unk.
VIPET_TOKENS: tuple[str, ...] = (
    IMAGE_TOKEN,
    CT_TOKEN,
    PET_TOKEN,
    *REGION_TOKENS.values(),
    *ROLE_TOKENS.values(),
    END_TOKEN,
    FINDING_TOKEN,
)
# In a trained tokenizer these take ids 0, 1, 2, ... in this order (pad is 0).
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, *VIPET_TOKENS)


def region_token(region: str) -> str:
    """`<region:NAME>` for a body region of `REGIONS` or "whole"."""
    if region not in REGION_TOKENS:
        raise ValueError(f"unknown region {region!r}; choose from {list(REGION_TOKENS)}")
    return REGION_TOKENS[region]


def _chat_template() -> str:
    """ViPET's chat format, as Jinja (built from the marker constants so they cannot
    drift apart)::

        <s><|system|>\\n{system}<|end|>\\n<|user|>\\n{user}<|end|>\\n<|assistant|>\\n{answer}<|end|>

    Turns are joined by a newline *before* the next marker rather than after `<|end|>`,
    so an assistant turn ends exactly at its end marker: the training target is
    "answer + <|end|>" and the prompt with the generation prompt is a prefix of it.
    """
    markers = ", ".join(f"'{role}': '{tok}'" for role, tok in ROLE_TOKENS.items())
    return (
        "{%- set markers = {" + markers + "} -%}"
        "{%- if bos_token %}{{ bos_token }}{% endif -%}"
        "{%- for message in messages -%}"
        "{%- if message['role'] not in markers -%}"
        "{{ raise_exception('unknown chat role ' ~ message['role']) }}"
        "{%- endif -%}"
        "{%- if not loop.first %}{{ '\\n' }}{% endif -%}"
        "{{ markers[message['role']] ~ '\\n' ~ message['content'] ~ '" + END_TOKEN + "' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt %}{{ '\\n' ~ markers['assistant'] ~ '\\n' }}{% endif -%}"
    )


CHAT_TEMPLATE = _chat_template()


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids that end generation: the turn end marker, and eos when the tokenizer has one."""
    ids = [tokenizer.convert_tokens_to_ids(END_TOKEN)]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


# ---- corpora --------------------------------------------------------------------------


def _study_texts(reports: Mapping[str, Any], questions: Mapping[str, Any]) -> Iterator[str]:
    for lang in ("vi", "en"):
        if reports.get(lang):
            yield report_text(reports[lang])
        for qa in questions.get(lang) or ():
            yield qa["question"]
            yield qa["answer"]


def corpus_from_dataset(
    root: str | Path, splits: Collection[str] | None = ("train",)
) -> Iterator[str]:
    """Report texts (VI and EN, as `report_text` lays them out) and question and answer
    strings of a ViPET dataset folder (dataset.json + ground_truth/<id>.json).

    Only the ``splits`` studies are read (default: train, so the vocabulary never sees a
    test report); ``None`` reads every study.
    """
    for entry in read_dataset(root)["studies"]:
        if splits is not None and entry.get("split") not in splits:
            continue
        gt = ground_truth(root, entry["id"])
        reports = {lang: gt.get(f"report_{lang}") for lang in ("vi", "en")}
        questions = {lang: gt.get(f"questions_{lang}") for lang in ("vi", "en")}
        yield from _study_texts(reports, questions)


# Levels a fine location can carry in report wording ("nhóm IV", "T8", "hạ phân thùy VII").
_LEVELS: dict[str, tuple[str, ...]] = {
    "cervical": ("I", "II", "III", "IV", "V", "VI"),
    "supraclavicular": ("IV", "V"),
    "paratracheal": ("2R", "2L", "4R", "4L"),
    "spine": tuple(f"C{i}" for i in range(1, 8))
    + tuple(f"T{i}" for i in range(1, 13))
    + tuple(f"L{i}" for i in range(1, 6)),
    "rib": tuple(str(i) for i in range(1, 13)),
    "liver": ("I", "II", "III", "IV", "V", "VI", "VII", "VIII"),
}
# Physiological SUVmean ranges per organ (the keys `render_report` knows).
_PHYSIOLOGY = {
    "brain": (6.0, 12.0),
    "myocardium": (1.5, 10.0),
    "liver": (1.5, 3.0),
    "spleen": (1.2, 2.5),
    "kidneys": (4.0, 20.0),
    "bladder": (8.0, 40.0),
    "bowel": (1.2, 4.0),
    "blood_pool": (1.2, 2.2),
}


def _random_lesion(rng: np.random.Generator, id: int) -> Lesion:
    """Any lesion type at any fine location: the corpus needs every word in every
    context, not anatomical plausibility."""
    detail = sorted(FINE_LOCATIONS)[int(rng.integers(len(FINE_LOCATIONS)))]
    size = float(rng.uniform(3.0, 60.0)) if rng.random() < 0.9 else None
    levels = _LEVELS.get(detail, ())
    return Lesion.at(
        id,
        LESION_TYPES[int(rng.integers(len(LESION_TYPES)))],
        detail,
        ("right", "left", "both")[int(rng.integers(3))],
        size_mm=size,
        short_mm=float(rng.uniform(2.0, size)) if size is not None and rng.random() < 0.5 else None,
        suvmax=float(rng.uniform(0.8, 20.0)) if rng.random() < 0.9 else None,
        fdg_avid=bool(rng.random() < 0.65),
        level=levels[int(rng.integers(len(levels)))] if levels and rng.random() < 0.6 else "",
    )


def synthetic_corpus(n_studies: int, seed: int = 0) -> Iterator[str]:
    """Texts of ``n_studies`` random studies (0–6 random lesions, random physiology):
    their VI and EN reports and question / answer strings, rendered exactly as the
    phantom renders them, with no image simulated. Same seed, same texts."""
    if n_studies < 0:
        raise ValueError(f"n_studies must be >= 0, got {n_studies}")
    for i in range(n_studies):
        rng = np.random.default_rng([seed, i])
        lesions = [_random_lesion(rng, k) for k in range(int(rng.integers(0, 7)))]
        physiology = {organ: float(rng.uniform(lo, hi)) for organ, (lo, hi) in _PHYSIOLOGY.items()}
        reports = {lang: render_report(lesions, lang, rng, physiology) for lang in ("vi", "en")}
        questions = {
            lang: [qa.to_dict() for qa in make_questions(lesions, lang, rng)]
            for lang in ("vi", "en")
        }
        yield from _study_texts(reports, questions)


# ---- training, saving, loading --------------------------------------------------------


def _counted(texts: Iterable[str], seen: list[int]) -> Iterator[str]:
    for text in texts:
        seen[0] += 1
        yield text


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 4000, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts``, ready for ViPET prompts.

    - NFC normaliser: Vietnamese typed with combining marks (NFD) gets the same ids as
      precomposed text, and decoding returns NFC.
    - Digits split one by one before the byte-level split, so "8,1" and "12 x 8 mm" are
      read digit by digit — a small model then copies numbers instead of memorising them.
    - Byte-level pre-tokenizer / decoder with the 256-byte alphabet: no unknown
      characters, ``decode(encode(s)) == NFC(s)`` for any string (emoji included).
    - `SPECIAL_TOKENS` first (ids 0…), registered as special: never split, and dropped by
      ``decode(..., skip_special_tokens=True)``.
    - bos/eos/pad/unk set and `CHAT_TEMPLATE` attached; encoding adds no bos/eos by
      itself (the chat template writes bos).
    """
    floor = len(SPECIAL_TOKENS) + len(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size <= floor:
        raise ValueError(f"vocab_size must exceed {floor} (special tokens + 256 bytes)")
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    seen = [0]
    backend.train_from_iterator(_counted(texts, seen), trainer=trainer)
    if seen[0] == 0:
        raise ValueError("no texts to train the tokenizer on")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        extra_special_tokens=list(VIPET_TOKENS),
        chat_template=CHAT_TEMPLATE,
        add_bos_token=False,
        add_eos_token=False,
        # The BPE byte decoder restores spacing exactly; WordPiece-style clean-up would not.
        clean_up_tokenization_spaces=False,
    )


def add_vipet_tokens(tokenizer: PreTrainedTokenizerBase, *, set_chat_template: bool = True) -> int:
    """Register `VIPET_TOKENS` as special tokens on any Hugging Face tokenizer (and a pad
    token when it has none); returns how many ids are new — resize the language model's
    embeddings to ``len(tokenizer)`` afterwards.

    With ``set_chat_template`` (default) the tokenizer gets ViPET's `CHAT_TEMPLATE`, so a
    real LLM reads exactly the prompts the tiny model is trained on; without it the
    model's own template is kept (`build_example` works with any template whose
    generation prompt is a prefix of the answered conversation).
    """
    special: dict[str, Any] = {"extra_special_tokens": list(VIPET_TOKENS)}
    if tokenizer.pad_token is None:
        special["pad_token"] = PAD_TOKEN
    added = tokenizer.add_special_tokens(special, replace_extra_special_tokens=False)
    if set_chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return added


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: str | Path) -> list[Path]:
    """Write ``tokenizer`` (files, special tokens, chat template) into ``directory``;
    returns the paths written. Files are written to a hidden folder beside them and
    renamed into place, so a reader never sees a half-written tokenizer file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=".tokenizer."))
    try:
        tokenizer.save_pretrained(staging)
        written = []
        for path in sorted(staging.iterdir()):
            os.replace(path, directory / path.name)
            written.append(directory / path.name)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in the local folder ``directory`` (never a hub download)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError("no such tokenizer folder", directory)
    if not any((directory / name).is_file() for name in _TOKENIZER_FILES):
        raise InputError(
            f"not a tokenizer folder (none of {', '.join(_TOKENIZER_FILES)})", directory
        )
    try:
        # The class the folder names, loaded directly: AutoTokenizer would first read the
        # folder's config.json, which in a saved ViPET model is the whole model's
        # (model_type "vipet"), and warn that it is not a tokenizer's.
        cls = _saved_tokenizer_class(directory)
        if cls is not None:
            return cls.from_pretrained(str(directory), local_files_only=True)
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise InputError(f"cannot load the tokenizer ({exc})", directory) from exc


__all__ = [
    "BOS_TOKEN",
    "CHAT_TEMPLATE",
    "CT_TOKEN",
    "END_TOKEN",
    "EOS_TOKEN",
    "IMAGE_TOKEN",
    "PAD_TOKEN",
    "PET_TOKEN",
    "REGION_TOKENS",
    "ROLE_TOKENS",
    "SPECIAL_TOKENS",
    "UNK_TOKEN",
    "VIPET_TOKENS",
    "WHOLE",
    "add_vipet_tokens",
    "corpus_from_dataset",
    "load_tokenizer",
    "region_token",
    "save_tokenizer",
    "stop_token_ids",
    "synthetic_corpus",
    "train_tokenizer",
]


def _saved_tokenizer_class(directory: Path) -> Any:
    """The tokenizer class named by ``directory/tokenizer_config.json``, or None."""
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    cfg = directory / "tokenizer_config.json"
    if not cfg.is_file():
        return None
    name = json.loads(cfg.read_text(encoding="utf-8")).get("tokenizer_class")
    return tokenizer_class_from_name(name) if isinstance(name, str) else None
