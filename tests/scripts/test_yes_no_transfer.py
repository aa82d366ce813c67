"""scripts/yes_no_transfer.py: its table, and a model without a head refused in one line."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def yt(load_script):
    return load_script("yes_no_transfer")


def test_table_has_a_row_per_split_and_language(yt) -> None:
    row = {"studies": 3, "questions": 10, "yes": 4, "lm": 0.7, "head": 0.8}
    weighed = {**row, "evidence": 0.9}
    text = yt.table({"train": {"vi": row, "en": row}, "test": {"vi": weighed}})
    lines = text.splitlines()
    assert len(lines) == 2 + 3
    assert lines[2] == "| train | vi | 3 | 10 | 4 | 0.700 | 0.800 | – |"
    assert lines[4] == "| test | vi | 3 | 10 | 4 | 0.700 | 0.800 | 0.900 |"


def test_bad_model_is_one_line(yt, tmp_path, capsys) -> None:
    assert yt.main([str(tmp_path / "none"), "--data", str(tmp_path), "--cache", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
