"""Fixtures of the training tests: a tokenizer (in memory and saved) and a 5-study tiny
phantom with its cache on the tiny grid; built once per test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import phantom_with_cache
from tests.train.common import GRID
from vipet.data.tokenizer import save_tokenizer, synthetic_corpus, train_tokenizer


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(synthetic_corpus(20, 0), vocab_size=600)


@pytest.fixture(scope="module")
def tok_dir(tok, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tok")
    save_tokenizer(tok, folder)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    return phantom_with_cache(tmp_path_factory.mktemp("vipet_train"), 5, GRID)
