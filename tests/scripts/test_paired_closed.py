"""scripts/paired_closed.py: McNemar's exact p and the paired yes/no table."""

from __future__ import annotations

import math

import pytest


@pytest.fixture(scope="module")
def pc(load_script):
    return load_script("paired_closed")


def test_mcnemar_p_is_the_two_sided_binomial_tail(pc) -> None:
    assert pc.mcnemar_p(0, 0) == 1.0
    assert pc.mcnemar_p(5, 5) == 1.0  # an even split says nothing
    assert pc.mcnemar_p(6, 0) == pytest.approx(2 / 64)
    assert pc.mcnemar_p(0, 6) == pc.mcnemar_p(6, 0)  # symmetric
    n, k = 30, 8
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    assert pc.mcnemar_p(22, 8) == pytest.approx(2 * tail)


def test_only_bare_yes_no_questions_are_paired(pc) -> None:
    refs = {
        "s1": {
            "questions": [
                {"question": "A?", "answer": "Yes"},
                {"question": "B?", "answer": "No"},
                {"question": "C?", "answer": "2"},
            ]
        }
    }

    def rows(said: dict[str, str]) -> list[dict]:
        answers = [{"question": q, "prediction": a} for q, a in said.items()]
        return [{"id": "s1", "answers": answers}]

    model = rows({"A?": "Yes", "B?": "Yes", "C?": "2"})
    base = rows({"A?": "No", "B?": "No"})
    a, b = pc.closed_right(model, refs, "en"), pc.closed_right(base, refs, "en")
    assert a == {("s1", "A?"): True, ("s1", "B?"): False}
    c = pc.compare(a, b)
    assert (c["questions"], c["a"], c["b"], c["only_a"], c["only_b"]) == (2, 1, 1, 1, 1)
