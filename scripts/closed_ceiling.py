"""How far the closed (yes/no) questions can go from what a model's slots show.

Each yes/no question of a split is answered by a reader that takes a lesion list at its
word:

- "is there a lesion of type X in Y?": yes when a listed lesion of that type lies in Y
  (`vipet.reports.questions.type_questions` reads the question back to Y and X);
- "is <named lesion> FDG-avid?": the avidity of a listed lesion of the named one's type
  and location class, and "no" when none is listed (the head misses non-avid lesions
  far more often than avid ones);
- "is the study normal?": yes when nothing is listed.

The lists are the findings the model's head puts in its slots (`--model M --cache C`:
the detector's peaks at the model's calibrated thresholds, what `detect` gives the
language model), and/or the lesions read back from the reports of a predictions file
(`--predictions P`, `vipet evaluate`'s predictions.jsonl), whose own answers are then
scored beside the reader's, with how often the two agree. A language model that answers
as its slots say cannot do better than the slots' column: this tells a question
error of the language model from one of the detector.

A reader that takes its slots at their word is not the best one: the head misses most
small lesions only CT shows, so "no lymph node here" from the slots is wrong more often
than right. ``--rates-from train`` adds a reader that answers, for each kind of evidence
(the slots' answer, the lesion type asked about, a type question's region), what most
questions with that evidence answer on that split — what a language model taught on the
head's own slots can learn (`TrainConfig.question_slots` "head").

    .venv/bin/python scripts/closed_ceiling.py DATA [--model M --cache C]
        [--rates-from train] [--predictions P] [--split test] [--lang vi]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from vipet.evaluation.vqa import parse_yes_no
from vipet.io.vipet_dataset import ground_truth
from vipet.reports.extract import extract_findings
from vipet.reports.questions import type_questions
from vipet.reports.schema import Lesion

KINDS = ("type_in_region", "avid", "normal")


def slot_lesions(
    model_dir: Path, data: Path, cache: Path, split: str, loaded: tuple[Any, Any] | None = None
) -> dict[str, list[Lesion]]:
    """Per study, the findings the model's head puts in its slots (``loaded``: the model
    and its tokenizer, when already loaded)."""
    from vipet.evaluation.detector import candidates, load_slot_model_split, select

    model, _, ds, ids, _ = load_slot_model_split(
        model_dir, data, cache, split, loaded=loaded, task="read"
    )
    found = candidates(model, ds, ids, floor=0.1)
    cfg = model.config
    chosen = select(found, cfg.slot_threshold, cfg.findings_slots, cfg.slot_thresholds)
    out = {}
    for sid, findings in chosen.items():
        out[sid] = [
            Lesion.at(
                i,
                f["type"],
                f["location_detail"],
                f["laterality"],
                size_mm=f["size_mm"],
                short_mm=None,
                suvmax=f["suvmax"],
                fdg_avid=bool(f["fdg_avid"]),
            )
            for i, f in enumerate(findings)
        ]
    return out


def report_lesions(rows: Sequence[Mapping[str, Any]], lang: str) -> dict[str, list[Lesion]]:
    """Per study, the lesions read back from its generated report."""
    return {
        r["id"]: [e.to_lesion(i) for i, e in enumerate(extract_findings(r["report"], lang))]
        for r in rows
    }


def closed_questions(
    data: Path, studies: Iterable[str], lang: str
) -> Iterator[tuple[str, Mapping[str, Any], dict[int, Mapping]]]:
    """``(study, question, the study's lesions by id)`` for every yes/no question of
    `KINDS` the studies have."""
    for sid in studies:
        gt = ground_truth(data, sid)
        truth = {int(les["id"]): les for les in gt.get("lesions") or []}
        for qa in gt.get(f"questions_{lang}") or []:
            if qa["kind"] in KINDS:
                yield sid, qa, truth


def read_answer(
    qa: Mapping[str, Any], lesions: Sequence[Lesion], truth: Mapping[int, Mapping], table
) -> bool:
    """The reader's answer to one yes/no question from ``lesions``."""
    if qa["kind"] == "normal":
        return not lesions
    if qa["kind"] == "type_in_region":
        scope, lesion_type = table[qa["question"]]
        return any(x.type == lesion_type and scope.contains(x) for x in lesions)
    named = truth[qa["lesion_id"]]
    same = [x for x in lesions if x.type == named["type"] and x.location == named["location"]]
    return same[0].fdg_avid if same else False


def evidence(qa: Mapping[str, Any], read: bool, truth: Mapping[int, Mapping], table) -> tuple:
    """What a reader that knows how often its slots err conditions on: the question's
    kind, the slots' answer, the lesion type it asks about, and a type question's region."""
    if qa["kind"] == "normal":
        return ("normal", read)
    if qa["kind"] == "type_in_region":
        scope, lesion_type = table[qa["question"]]
        return ("type_in_region", read, lesion_type, scope.region)
    return ("avid", read, truth[qa["lesion_id"]]["type"])


def answer_rates(
    data: Path, lists: Mapping[str, Sequence[Lesion]], lang: str, table
) -> dict[tuple, bool]:
    """Per `evidence`, the reference answer most questions of these studies have (``lists``:
    their slots); evidence whose answers split evenly is left out (the slots' answer
    stands). The answer rates of the training split's own slots are what a language
    model taught on them can learn (`TrainConfig.question_slots` "head")."""
    tally: dict[tuple, Counter[bool]] = {}
    for sid, qa, truth in closed_questions(data, lists, lang):
        key = evidence(qa, read_answer(qa, lists[sid], truth, table), truth, table)
        tally.setdefault(key, Counter())[bool(parse_yes_no(qa["answer"]))] += 1
    return {k: c[True] > c[False] for k, c in tally.items() if c[True] != c[False]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--model", type=Path, help="a saved model: answer from its slots")
    ap.add_argument("--cache", type=Path, help="the preprocessing cache (with --model)")
    ap.add_argument("--predictions", type=Path, help="vipet evaluate's predictions.jsonl")
    ap.add_argument("--split", default="test")
    ap.add_argument("--lang", default="vi", choices=("vi", "en"))
    ap.add_argument(
        "--rates-from",
        metavar="SPLIT",
        help="with --model: also answer from the slots and the answer rates of the slots on "
        "this split (e.g. train)",
    )
    args = ap.parse_args()
    if args.model is None and args.predictions is None:
        ap.error("give --model (with --cache) and/or --predictions")
    if args.model is not None and args.cache is None:
        ap.error("--model needs --cache")
    if args.rates_from and args.model is None:
        ap.error("--rates-from needs --model")

    sources: dict[str, dict[str, list[Lesion]]] = {}
    answers: dict[str, dict[str, str]] = {}
    loaded = None
    if args.model is not None:
        from vipet.model.checkpoint import load_vipet

        loaded = load_vipet(args.model)
        sources["slots"] = slot_lesions(args.model, args.data, args.cache, args.split, loaded)
    if args.predictions is not None:
        rows = [json.loads(line) for line in args.predictions.read_text().splitlines() if line]
        sources["report"] = report_lesions(rows, args.lang)
        answers = {r["id"]: {a["question"]: a["prediction"] for a in r["answers"]} for r in rows}
    studies = sorted(set.intersection(*(set(s) for s in sources.values())))
    table = type_questions(args.lang)
    rates = None
    if args.rates_from:
        fit = slot_lesions(args.model, args.data, args.cache, args.rates_from, loaded)
        rates = answer_rates(args.data, fit, args.lang, table)

    right: Counter[tuple[str, str]] = Counter()
    wrong: Counter[tuple[str, str, bool]] = Counter()  # (kind, column, reference answer)
    asked: Counter[str] = Counter()
    agree: Counter[tuple[str, bool, bool]] = Counter()  # (kind, LM = report reader, LM right)
    for sid, qa, truth in closed_questions(args.data, studies, args.lang):
        ref = parse_yes_no(qa["answer"])
        asked[qa["kind"]] += 1
        read = {name: read_answer(qa, lists[sid], truth, table) for name, lists in sources.items()}
        if rates is not None:
            key = evidence(qa, read["slots"], truth, table)
            read["rates"] = rates.get(key, read["slots"])
        for name, answer in read.items():
            right[(qa["kind"], name)] += answer == ref
            wrong[(qa["kind"], name, bool(ref))] += answer != ref
        if answers:
            lm = parse_yes_no(answers[sid].get(qa["question"], ""))
            right[(qa["kind"], "LM")] += lm == ref
            wrong[(qa["kind"], "LM", bool(ref))] += lm != ref
            agree[(qa["kind"], lm == read["report"], lm == ref)] += 1

    columns = [*sources, *(["rates"] if rates is not None else []), *(["LM"] if answers else [])]
    head = {
        "slots": "reader of the slots",
        "rates": f"slots + answer rates of {args.rates_from}",
        "report": "reader of the report",
        "LM": "LM's answer",
    }
    print(f"{args.split} split, {len(studies)} studies, {args.lang}\n")
    print("| kind | questions | " + " | ".join(head[c] for c in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for kind in (*KINDS, "all"):
        n = sum(asked.values()) if kind == "all" else asked[kind]
        cells = []
        for c in columns:
            k = sum(right[(x, c)] for x in KINDS) if kind == "all" else right[(kind, c)]
            cells.append(f"{k} ({k / n:.3f})" if n else "–")
        print(f"| {kind} | {n} | " + " | ".join(cells) + " |")
    print(
        "\nWrong answers by the reference answer (a type or avidity question's yes → no: a"
        " lesion the list lacks or misreads; a normal study's yes → no: a false finding):\n"
    )
    print("| kind | " + " | ".join(f"{head[c]}: yes → no / no → yes" for c in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for kind in KINDS:
        cells = [f"{wrong[(kind, c, True)]} / {wrong[(kind, c, False)]}" for c in columns]
        print(f"| {kind} | " + " | ".join(cells) + " |")
    if answers:
        print("\nThe LM against the reader of its own report:\n")
        print("| kind | LM agrees, right | agrees, wrong | differs, right | differs, wrong |")
        print("|---|---|---|---|---|")
        for kind in KINDS:
            cells = [agree[(kind, a, r)] for a in (True, False) for r in (True, False)]
            print(f"| {kind} | " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
