"""`vipet demo`: the whole pipeline end to end on a laptop CPU, from nothing.

1. a ViPET-Phantom dataset (whole-body PET/CT with ground truth, reports, questions);
2. its region samples, preprocessed into a disk cache;
3. cpu-small trained from scratch on the train split (its tokenizer first);
4. the evaluation runner on the test split: the model against the built-in baselines;
5. one test study's report, written with the consistency guard's marks, its summary
   picture, and the model's answers to the study's own questions beside the truth;
6. a summary of what was written and how long each step took (``demo.json``).

A `DemoPlan` is the size of the run: ``full`` (the README's, about a quarter of an
hour on a 2-core CPU) or ``quick`` (a couple of minutes: the same steps at a size where
the model learns little — a check that everything runs, not a result). The training
config is cpu-small's own YAML with the plan's step budget as overrides, so the demo
trains the model the README describes, only for less time.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vipet.errors import ConfigError

Log = Callable[[str], None]


@dataclass(frozen=True)
class DemoPlan:
    """How big the demo's run is."""

    studies: int
    """Phantom studies generated (split 70/15/15 into train/val/test)."""
    vision_steps: int
    """Steps of cpu-small's vision phase (findings head on region crops)."""
    language_steps: int
    """Steps of its language phase (reports and answers)."""
    warmup_steps: int
    """Warm-up steps of each phase's learning-rate schedule."""
    meteor: bool = True
    """Score METEOR (a Java process: seconds the quick plan does without)."""
    questions: int = 6
    """Questions asked about the report's study (one per kind, in the dataset's order)."""

    @property
    def max_steps(self) -> int:
        return self.vision_steps + self.language_steps

    def overrides(self, out_dir: Path) -> list[str]:
        """The training config overrides that give cpu-small this plan's budget."""
        every = max(1, self.max_steps // 4)
        return [
            f"vision_steps={self.vision_steps}",
            f"optim.max_steps={self.max_steps}",
            f"optim.warmup_steps={self.warmup_steps}",
            f"eval_every={every}",
            f"checkpoint_every={every}",
            f"out_dir={out_dir}",
        ]


PLANS: dict[str, DemoPlan] = {
    # Sized for the 20 minutes on this 2-core machine with room for its slower
    # hours: at 120 studies and 500 + 400 steps it took 12.9 min at commit 99ddfaf, 23.2
    # and 29.7 min on later days (docs/usage.md), the code of its phantom and
    # preprocessing steps unchanged.
    "full": DemoPlan(studies=100, vision_steps=350, language_steps=300, warmup_steps=50),
    "quick": DemoPlan(studies=16, vision_steps=40, language_steps=40, warmup_steps=8, meteor=False),
}
"""The demo's sizes (read-only registry): ``vipet demo`` runs ``full``, ``--quick`` the other."""

TABLE = (
    ("BLEU-4", ("nlg", "bleu4")),
    ("ROUGE-L", ("nlg", "rouge_l")),
    ("F1-T", ("clinical", "f1_t")),
    ("F1-TPF", ("clinical", "f1_tpf")),
    ("closed acc.", ("vqa", "closed_accuracy")),
    ("distinct", ("distinct_reports",)),
)
"""The columns the demo prints (metrics.md beside it has them all)."""


class _Steps:
    """Numbered steps with their wall time, printed as they start and end."""

    def __init__(self, total: int, log: Log) -> None:
        self.total, self.log, self.n = total, log, 0
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str, title: str) -> Iterator[None]:
        self.n += 1
        self.log(f"[{self.n}/{self.total}] {title}")
        t0 = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t0, 1)
        self.log(f"      {name}: {self.seconds[name]:.1f} s")


def _phantom(out: Path, plan: DemoPlan, log: Log) -> Path:
    """The demo's dataset and its sample cache, both reused when an earlier demo left
    the same dataset complete (``dataset.json`` is written last); otherwise both are
    made anew (a cache manifest is trusted as it is, so a stale one must go)."""
    from vipet.phantom.dataset import write_dataset

    data = out / "phantom"
    meta = data / "dataset.json"
    if meta.is_file():
        old = json.loads(meta.read_text(encoding="utf-8"))
        if old.get("n") == plan.studies and old.get("seed") == 0:
            log(f"      reusing {data} ({plan.studies} studies, seed 0)")
            return data
    for folder in (data, out / "cache"):  # the demo's own output from an earlier run
        if folder.exists():
            shutil.rmtree(folder)
    write_dataset(data, plan.studies, seed=0, workers=2)
    return data


def _report_study(data: Path) -> str:
    """The test study with most lesions (the first such in id order): the most to see."""
    from vipet.evaluation.runner import split_ids
    from vipet.io.vipet_dataset import ground_truth

    ids = split_ids(data, "test")
    if not ids:
        raise ConfigError(f"{data}: the demo dataset has no test study")
    return max(ids, key=lambda sid: len(ground_truth(data, sid)["lesions"]))


def _pick_questions(questions: list[dict], n: int) -> list[dict]:
    """Up to ``n`` questions, one per kind first, in the dataset's order."""
    first: dict[str, dict] = {}
    for q in questions:
        first.setdefault(q["kind"], q)
    picked = list(first.values())
    picked += [q for q in questions if q not in picked]
    return picked[:n]


def table(results: dict[str, dict[str, Any]]) -> str:
    """The demo's compact results table (markdown)."""
    from vipet.evaluation.runner import markdown_table

    return markdown_table(results, columns=TABLE)


def run_demo(
    out: Path, plan: DemoPlan, config: Path, lang: str = "vi", log: Log = print
) -> dict[str, Any]:
    """Run the six steps of the module doc into ``out``; returns what ``demo.json`` holds."""
    from vipet.config import load_config
    from vipet.data.tokenizer import corpus_from_dataset, train_tokenizer
    from vipet.evaluation.runner import BASELINES, baseline_predictions, evaluate, write_results
    from vipet.evaluation.vqa import score_item
    from vipet.inference.bundle import make_report, write_report
    from vipet.inference.predictor import Predictor, predict_dataset
    from vipet.io import LoadOptions, load_study
    from vipet.io.atomic import atomic_write_bytes
    from vipet.io.vipet_dataset import ground_truth
    from vipet.model.presets import model_grid
    from vipet.preprocess.cache import ensure_cache
    from vipet.reports.render import report_text
    from vipet.train.config import TrainConfig
    from vipet.train.trainer import fit

    if not config.is_file():
        raise ConfigError(
            f"{config}: training config not found (run the demo from the checkout, or pass "
            "--config configs/cpu-small.yaml from it)"
        )
    run = out / "run"
    cfg = load_config(TrainConfig, config, plan.overrides(run))
    t0 = time.perf_counter()
    step = _Steps(6, log)
    out.mkdir(parents=True, exist_ok=True)

    with step("phantom", f"vipet phantom --n {plan.studies} --out {out / 'phantom'}"):
        data = _phantom(out, plan, log)
    with step("preprocess", f"vipet preprocess {data} --out {out / 'cache'} (3 regions each)"):
        built = ensure_cache(data, out / "cache", model_grid(cfg.model), workers=2)
        if built is None:
            log(f"      reusing {out / 'cache'}")
        elif built.failed:
            raise ConfigError(
                f"{out / 'cache'}: {len(built.failed)} phantom studies failed to preprocess"
            )
        else:
            log(f"      {built.built} studies preprocessed")
    with step(
        "train",
        f"vipet train --config {config} ({cfg.model}: {plan.vision_steps} vision + "
        f"{plan.language_steps} language steps, from scratch)",
    ):
        if run.exists():
            shutil.rmtree(run)  # a fresh run: an old checkpoint would otherwise resume
        tok = train_tokenizer(corpus_from_dataset(data), vocab_size=4000)
        trained = fit(cfg, tok, data, out / "cache")
        model_dir = Path(trained["model"])
        log(f"      model: {model_dir}; curves: {run / 'curves.png'}")
    with step("evaluate", f"vipet evaluate --checkpoint {model_dir} --lang {lang} --by-region"):
        meteor = None if plan.meteor else False
        preds = predict_dataset(model_dir, data, "test", lang, by_region=True)
        results = {"cpu-small (demo)": evaluate(preds, data, "test", lang, meteor=meteor)}
        for kind in BASELINES:
            results[f"baseline: {kind}"] = evaluate(
                baseline_predictions(data, "test", lang, kind), data, "test", lang, meteor=meteor
            )
        write_results(results, out / "eval")
        lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in preds)
        atomic_write_bytes(out / "eval" / "predictions.jsonl", lines.encode())
        n_test = len(preds)
        log(f"      test split, {n_test} studies ({out / 'eval' / 'metrics.md'} has every metric):")
        log(_indent(table(results).rstrip()))
    sid = _report_study(data)
    with step("report", f"vipet report {data / sid} and vipet ask, on test study {sid}"):
        predictor = Predictor.from_checkpoint(model_dir)
        study = load_study(data, LoadOptions(study_id=sid))
        rep = make_report(predictor, study, lang)
        written = write_report(rep, study, out / "report" / sid, model_dir.name, predictor.model)
        gt = ground_truth(data, sid)
        log("      --- the model's report " + "-" * 40)
        log(_indent(rep.text))
        log("      guard: " + ", ".join(f"{k} {v}" for k, v in rep.guard_counts.items()))
        log("      --- the reference report " + "-" * 38)
        log(_indent(report_text(gt[f"report_{lang}"])))
        log("      --- questions (the study is encoded once) " + "-" * 21)
        answers = []
        for q in _pick_questions(gt.get(f"questions_{lang}", []), plan.questions):
            got = predictor.ask(rep.context, q["question"], lang, region=q.get("region"))
            ok = bool(score_item({**q, "prediction": got, "lang": lang})["correct"])
            answers.append(
                {"question": q["question"], "answer": got, "truth": q["answer"], "correct": ok}
            )
            log(
                f"      Q: {q['question']}\n         model: {got or '(nothing)'}   truth: {q['answer']}"
                f"   {'right' if ok else 'wrong'}"
            )
    log("[6/6] what the demo wrote")
    summary = {
        "plan": asdict(plan),
        "config": str(config),
        "lang": lang,
        "seconds": step.seconds,
        "report_study": sid,
        "test_studies": n_test,
        "scores": {name: {c: _at(res, path) for c, path in TABLE} for name, res in results.items()},
        "answers": answers,
        "files": {
            "summary_png": str(written["png"]),
            "report": str(written["text"]),
            "report_json": str(written["json"]),
            "metrics": str(out / "eval" / "metrics.md"),
            "curves": str(run / "curves.png"),
            "model": str(model_dir),
        },
    }
    for kind, path in summary["files"].items():
        log(f"      {kind:12s} {path}")
    summary["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    atomic_write_bytes(
        out / "demo.json", json.dumps(summary, indent=2, ensure_ascii=False).encode()
    )
    log(f"demo done in {summary['seconds']['total'] / 60:.1f} min ({out / 'demo.json'})")
    return summary


def _at(d: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        d = d.get(key) if isinstance(d, dict) else None
    return d


def _indent(text: str) -> str:
    return "      " + text.replace("\n", "\n      ")
