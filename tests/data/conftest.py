"""A tokenizer trained once per test session on synthetic report text (no data on disk)."""

from __future__ import annotations

import pytest

from vipet.data.tokenizer import synthetic_corpus, train_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return train_tokenizer(synthetic_corpus(30, 0), vocab_size=800)
