"""Fixtures of the data tests: a tokenizer trained once per session on synthetic report
text, and a 4-study tiny phantom with its cache on the (8, 32, 32) grid."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import phantom_with_cache
from vipet.data.tokenizer import synthetic_corpus, train_tokenizer

GRID = (8, 32, 32)


@pytest.fixture(scope="session")
def tokenizer():
    return train_tokenizer(synthetic_corpus(30, 0), vocab_size=800)


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """Phantom studies 0 and 3 are the train split, 1 val, 2 test."""
    return phantom_with_cache(tmp_path_factory.mktemp("vipet_data"), 4, GRID)
