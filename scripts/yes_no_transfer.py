"""Does a saved model's yes/no head carry over to studies its detector never saw?

The head (`vipet.model.yes_no_head`) is fitted on the training split, whose slots come
from a detector trained on those very studies. This prints, per split and language, the
accuracy of the head and of the LM's own word on the split's bare yes/no questions, each
study encoded from the cache as `vipet evaluate` encodes it (`head_accuracy`), and, when
the head has evidence rows (`fit_evidence`), of the head weighed with the detector's
candidates. A head that scores far lower on val/test than on train learnt slots better
than the unseen studies get (evidence rows are fitted on val: judge them on test).

    .venv/bin/python scripts/yes_no_transfer.py runs/cpu-small/model --data /tmp/ph600 \
        --cache /tmp/cache64 [--splits train,val,test] [--max-studies 60]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

from vipet.errors import ViPetError


def table(scores: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """``{split: {lang: head_accuracy row}}`` as Markdown."""
    lines = [
        "| split | lang | studies | questions | yes | LM's own word | yes/no head | head + "
        "evidence |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split, by_lang in scores.items():
        for lang, r in by_lang.items():
            weighed = f"{r['evidence']:.3f}" if "evidence" in r else "–"
            lines.append(
                f"| {split} | {lang} | {r['studies']} | {r['questions']} | {r['yes']} | "
                f"{r['lm']:.3f} | {r['head']:.3f} | {weighed} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--splits", default="train,val,test")
    ap.add_argument("--max-studies", type=int, default=None, help="first N studies of each")
    args = ap.parse_args(argv)
    from vipet.inference.yes_no import head_accuracy
    from vipet.model.checkpoint import load_vipet

    try:
        model, tok = load_vipet(args.model)
        scores = {
            split: head_accuracy(model, tok, args.data, args.cache, split, args.max_studies)
            for split in (s.strip() for s in args.splits.split(",") if s.strip())
        }
    except ViPetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(table(scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
