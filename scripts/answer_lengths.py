"""How long, in a model's tokens, the answers a training batch mixes are: a report
section and a question's answer (each with its end token), over a split's studies —
the weights the LM loss gives them when it averages over tokens (`lm_reduction`).

    .venv/bin/python scripts/answer_lengths.py runs/cpu-small/model /tmp/ph600 [--split train]
"""

from __future__ import annotations

import argparse
import statistics
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
    print(f"in a batch of half each, the answers are {a / (a + s):.1%} of the answer tokens")


if __name__ == "__main__":
    main()
