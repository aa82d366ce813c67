"""How long, in a model's tokens, the answers a training batch mixes are: a report
section and a question's answer (each with its end token), over a split's studies —
the weights the LM loss gives them when it averages over tokens (`lm_reduction`), and
with ``--vqa-turns N`` how many question examples a split makes when a scope's
questions go N to a conversation (`DataConfig.vqa_turns`) and how often a run of
``--steps`` language steps shows each question.

    .venv/bin/python scripts/answer_lengths.py runs/cpu-small/model /tmp/ph600 [--split train] [--vqa-turns 4]
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections import Counter
from pathlib import Path

from vipet.evaluation.runner import references, split_ids
from vipet.model.checkpoint import load_tokenizer
from vipet.reports.schema import FINDINGS_KEY


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--split", default="train")
    parser.add_argument("--lang", default="vi", choices=["vi", "en"])
    parser.add_argument("--vqa-turns", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1350, help="language steps of a run")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--langs", type=int, default=2, help="languages trained on")
    args = parser.parse_args()
    tok = load_tokenizer(args.model)
    refs = references(args.data, split_ids(args.data, args.split), args.lang)

    def length(text: str) -> int:  # with the turn's end token
        return len(tok.encode(text, add_special_tokens=False)) + 1

    findings = [(r["report"] or {}).get(FINDINGS_KEY[args.lang], {}) for r in refs.values()]
    sections = [length(text) for f in findings for text in f.values()]
    answers = [length(q["answer"]) for r in refs.values() for q in r["questions"]]
    s, a = statistics.mean(sections), statistics.mean(answers)
    print(f"{len(refs)} {args.split} studies: a report section {s:.1f} tokens, an answer {a:.1f}")
    # Examples per study and language: one per question, or one per started group of
    # ``vqa_turns`` questions of one scope (a region, or the whole study).
    scopes = [Counter(q.get("region") or "whole" for q in r["questions"]) for r in refs.values()]
    n_questions = sum(sum(c.values()) for c in scopes)
    n_examples = sum(math.ceil(n / args.vqa_turns) for c in scopes for n in c.values())
    per = n_questions / n_examples
    print(
        f"in a batch of half each, the answers are {a * per / (a * per + s):.1%} of the answer "
        f"tokens ({per:.2f} answers a question example)"
    )
    shown = args.steps * args.batch / 2 / (n_examples * args.langs)
    print(
        f"{n_questions} questions in {n_examples} examples a language; in {args.steps} steps "
        f"of {args.batch} (half questions, {args.langs} languages) each is seen {shown:.2f} times"
    )


if __name__ == "__main__":
    main()
