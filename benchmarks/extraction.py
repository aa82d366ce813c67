"""How well rule-based extraction recovers the ground truth from ViPET's own reports.

For each study of a phantom dataset split, lesions are extracted from the ground-truth
VI and EN reports (findings sections) and scored against the ground-truth lesion lists
with the clinical protocol (`clinical_scores`). Only protocol fields are compared (type,
location class, FDG avidity); region, level and centre are not in the text.

Two rows per language: "protocol" (bone lesions, type/location "other", can never match,
so even a perfect extractor stays below 1) and "ceiling" (the ground truth scored against
itself, i.e. the best the protocol allows), plus "other-ok" (with `match_other`: 1.0
means every lesion, bone included, was recovered).

    python benchmarks/extraction.py /tmp/ph40 --split test [--errors]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vipet.evaluation.clinical import clinical_scores
from vipet.reports.extract import extract_findings

_FIELDS = ("type", "location", "fdg_avid")


def _load(root: Path, split: str) -> dict[str, dict]:
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    ids = meta["splits"][split] if split != "all" else sorted(meta["studies"])
    return {
        sid: json.loads((root / "ground_truth" / f"{sid}.json").read_text(encoding="utf-8"))
        for sid in ids
    }


def _row(name: str, scores: dict) -> str:
    f1 = "  ".join(f"F1-{k}={scores[k]['f1']:.4f}" for k in ("T", "TP", "TF", "TPF"))
    suv = scores["suvmax_mae"]
    size = scores["size_mae_mm"]
    tpf = scores["TPF"]
    return (
        f"  {name:9s} {f1}  (TPF tp={tpf['tp']} pred={tpf['n_pred']} ref={tpf['n_ref']})"
        f"  SUV MAE={suv if suv is None else round(suv, 3)}"
        f"  size MAE={size if size is None else round(size, 2)} mm"
    )


def _show_errors(sid: str, pred: list, ref: list, report: dict) -> None:
    key = lambda d: tuple(d[f] for f in _FIELDS)  # noqa: E731
    p = sorted(key(x.to_dict()) for x in pred)
    r = sorted(key(x) for x in ref)
    if p != r:
        print(f"--- {sid}\n  pred {p}\n  ref  {r}")
        for x in pred:
            print("   ", key(x.to_dict()), "<-", x.sentence)
        print("   ", json.dumps(report, ensure_ascii=False)[:1500])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--split", default="test", help="train, val, test or all")
    parser.add_argument("--errors", action="store_true", help="print mismatching studies")
    args = parser.parse_args()
    studies = _load(args.dataset, args.split)
    ref = {sid: gt["lesions"] for sid, gt in studies.items()}
    print(f"{args.dataset} split={args.split}: {len(studies)} studies, "
          f"{sum(map(len, ref.values()))} lesions")  # fmt: skip
    for lang in ("vi", "en"):
        pred = {sid: extract_findings(gt[f"report_{lang}"], lang) for sid, gt in studies.items()}
        if args.errors:
            for sid in studies:
                _show_errors(sid, pred[sid], ref[sid], studies[sid][f"report_{lang}"])
        print(lang)
        print(_row("protocol", clinical_scores(pred, ref)))
        print(_row("ceiling", clinical_scores(ref, ref)))
        print(_row("other-ok", clinical_scores(pred, ref, match_other=True)))


if __name__ == "__main__":
    main()
