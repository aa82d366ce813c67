"""Fit a trained model's yes/no head (`vipet.model.yes_no_head`) on the training split.

Every question of the split whose reference answer is a bare yes/no word of its
language ("Có"/"Không", "Yes"/"No") is one example: the LM's last hidden state where its
answer begins — the study encoded as the saved model encodes it at test time, with its
own detections (candidate scorer and calibrated thresholds included) in the slots — and
the reference answer. One L2-regularised logistic regression per language; its strength
is chosen by cross-validation over studies (`fit_rows`). The network is not touched.

In training (`TrainConfig.fit_yes_no`) the studies come from the language phase's memo
and the scorer's peak book (`memo_contexts`): no volume is encoded again. Afterwards:

    vipet calibrate --checkpoint runs/cpu-small/model --data DATA --cache CACHE --fit-yes-no

Whether a fitted head carries over to studies the detector never saw: `head_accuracy`
(`scripts/yes_no_transfer.py`), on val or test encoded as at test time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from vipet.errors import InputError
from vipet.inference.evidence import question_evidence
from vipet.reports.questions import YES_NO

L2_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
"""Penalties tried (on standardised states, per example); cross-validation picks one."""
FOLDS: int = 5
"""Cross-validation folds, by study (a study's questions share its slots)."""


@dataclass(frozen=True)
class YesNoQuestion:
    study: str
    lang: str
    question: str
    region: str | None
    answer: bool


def yes_no_questions(
    data: Path, ids: Iterable[str], langs: Sequence[str] = tuple(YES_NO)
) -> list[YesNoQuestion]:
    """The questions of studies ``ids`` answered by a bare yes/no word of their language."""
    from vipet.io.vipet_dataset import ground_truth

    out = []
    for sid in ids:
        gt = ground_truth(data, sid)
        for lang in langs:
            yes, no = YES_NO[lang]
            for q in gt.get(f"questions_{lang}") or []:
                answer = str(q.get("answer", "")).strip()
                if answer in (yes, no):
                    out.append(
                        YesNoQuestion(sid, lang, q["question"], q.get("region"), answer == yes)
                    )
    return out


def _logistic(x: torch.Tensor, y: torch.Tensor, l2: float) -> tuple[torch.Tensor, float]:
    """``(w, b)`` minimising mean BCE + ``l2``·|w|² on standardised ``x``, folded back so
    that they apply to raw states."""
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mu) / sd
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w_raw = w.detach() / sd
    return w_raw, float(b.detach() - (w_raw * mu).sum())


def _accuracy(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: float) -> float:
    return float((((x @ w + b) > 0).double() == y).double().mean())


@dataclass
class RowFit:
    examples: int
    yes: int
    l2: float
    cv_accuracy: float
    """Accuracy on held-out studies at the chosen ``l2`` (cross-validation)."""
    train_accuracy: float
    lm_accuracy: float
    """The LM's own yes/no (its larger logit of the two words' first tokens) on the same
    examples: what the head replaces."""


def fit_rows(
    states: torch.Tensor,
    answers: torch.Tensor,
    groups: Sequence[str],
    grid: Sequence[float] = L2_GRID,
    folds: int = FOLDS,
) -> tuple[torch.Tensor, float, float, float]:
    """``(w, b, l2, cv_accuracy)`` for one language: the penalty of ``grid`` with the best
    accuracy on held-out studies (``groups``: each example's study; folds by study
    order), then refitted on all examples."""
    x, y = states.double(), answers.double()
    studies = sorted(set(groups))
    fold_of = {s: i % folds for i, s in enumerate(studies)}
    fold = torch.tensor([fold_of[g] for g in groups])
    k = min(folds, len(studies))
    best: tuple[float, float] | None = None
    for l2 in grid:
        right = 0.0
        for f in range(k):
            held = fold == f
            if held.all() or not held.any():
                continue
            w, b = _logistic(x[~held], y[~held], l2)
            right += _accuracy(x[held], y[held], w, b) * int(held.sum())
        score = right / len(y)
        if best is None or score > best[1]:
            best = (l2, score)
    assert best is not None
    w, b = _logistic(x, y, best[0])
    return w.float(), b, best[0], best[1]


@dataclass
class YesNoFit:
    rows: dict[str, RowFit]

    def to_dict(self) -> dict[str, Any]:
        return {lang: asdict(r) for lang, r in self.rows.items()}


Contexts = Callable[[str], Any]
"""``study → StudyContext`` (`vipet.inference.predictor`), or None when it has none."""


def memo_contexts(model: Any, memo: Any, book: Any) -> Contexts:
    """Studies as the saved ``model`` encodes them, from training's frozen vision side:
    the fused tokens the language phase's memo kept (`vipet.train.memo.VisionMemo`) and
    the model's own slots rebuilt from the scorer's peak book
    (`vipet.inference.rescore.PeakBook.detections`) — no volume is encoded again. A
    study either lacks (a volume never trained on) gets None."""
    from vipet.inference.predictor import StudyContext
    from vipet.model.vipet import VisionOutput

    regions = list(model.config.regions)

    def context(sid: str) -> Any:
        keys = [(sid, r) for r in regions]
        stored = [memo.get(k) for k in keys]
        if any(s is None for s in stored) or any(k not in book for k in keys):
            return None
        grid = stored[0].grid
        detections = book.detections(model, keys, grid)
        vision = VisionOutput(
            torch.cat([s.fused for s in stored]).float(),
            grid,
            stored[0].image_shape,
            None,
            detections,
        )
        with torch.no_grad():
            visual = model.visual_tokens(vision, 1)
        return StudyContext(sid, regions, [], visual)

    return context


@dataclass
class QuestionStates:
    """Per language, each question's answer state, whether the LM's own word is yes,
    the reference answer and the question's study."""

    states: dict[str, list[torch.Tensor]]
    lm_yes: dict[str, list[bool]]
    answers: dict[str, list[bool]]
    groups: dict[str, list[str]]
    evidence: dict[str, list[tuple[str, tuple[float, ...]] | None]] = field(
        default_factory=lambda: defaultdict(list)
    )
    """Each question's kind and evidence values (`vipet.inference.evidence`) where its
    study kept its candidates and the question could be read; else None."""


def _encode_cached(
    predictor: Any, dataset: Any, sid: str, with_candidates: bool | None = None
) -> Any:
    """Study ``sid`` of a split's `ViPetDataset` (its cached region samples) encoded as
    at test time (`Predictor.encode_samples`)."""
    samples = dataset._samples(sid)
    regions = predictor.model.config.regions
    return predictor.encode_samples(
        sid, [samples[r] for r in regions], with_candidates=with_candidates
    )


def read_states(
    predictor: Any,
    questions: Sequence[YesNoQuestion],
    context: Contexts,
    progress: bool = True,
) -> QuestionStates:
    """The LM's answer state (`Predictor.answer_state`) for every question, its study
    encoded once by ``context``; the LM's own word is the larger logit of the first
    tokens of its language's yes and no."""
    tok = predictor.tokenizer
    first = {
        lang: [tok.encode(w, add_special_tokens=False)[0] for w in YES_NO[lang]]
        for lang in {q.lang for q in questions}
    }
    by_study: dict[str, list[YesNoQuestion]] = defaultdict(list)
    for q in questions:
        by_study[q.study].append(q)
    out = QuestionStates(defaultdict(list), defaultdict(list), defaultdict(list), defaultdict(list))
    for sid in tqdm(sorted(by_study), desc="yes/no states", disable=not progress, leave=False):
        ctx = context(sid)
        for q in by_study[sid]:
            h, logits = predictor.answer_state(ctx, q.question, q.lang, q.region)
            yes_id, no_id = first[q.lang]
            out.states[q.lang].append(h)
            out.lm_yes[q.lang].append(bool(logits[yes_id] > logits[no_id]))
            out.answers[q.lang].append(q.answer)
            out.groups[q.lang].append(sid)
            out.evidence[q.lang].append(
                None
                if ctx.candidates is None
                else question_evidence(q.question, q.lang, ctx.candidates, q.region)
            )
    return out


def head_accuracy(
    model: Any,
    tok: Any,
    data: Path,
    cache: Path,
    split: str,
    max_studies: int | None = None,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """How the saved model's yes/no head and its LM's own word score on ``split``'s bare
    yes/no questions, each study encoded from the cache as at test time: per language,
    ``{"studies", "questions", "yes", "lm", "head"}`` (accuracies), and ``"evidence"``
    — the head weighed with the detector's candidates as `Predictor.ask` weighs it —
    when it has evidence rows. Does the head fitted on the training split carry over to
    studies the detector never saw?"""
    from vipet.evaluation.detector import load_split
    from vipet.inference.predictor import Predictor

    head = model.yes_no_head
    if head is None:
        raise InputError("the model has no yes/no head (fit one with --fit-yes-no)")
    dataset, ids, _ = load_split(data, cache, split, model, tok, max_studies)
    questions = yes_no_questions(data, ids, head.config.langs)
    if not questions:
        raise InputError(f"no question of the {split} split is answered yes or no", data)
    predictor = Predictor(model, tok)
    read = read_states(
        predictor, questions, lambda sid: _encode_cached(predictor, dataset, sid), progress
    )
    out = {}
    for lang, states in read.states.items():
        y = torch.tensor(read.answers[lang])
        logits = head.logit(torch.stack(states), lang)
        out[lang] = {
            "studies": len(set(read.groups[lang])),
            "questions": len(y),
            "yes": int(y.sum()),
            "lm": float((torch.tensor(read.lm_yes[lang]) == y).double().mean()),
            "head": float(((logits > 0) == y).double().mean()),
        }
        if head.config.evidence:
            weighed = []
            for logit, found in zip(logits.tolist(), read.evidence[lang], strict=True):
                stacked = None if found is None else head.with_evidence(logit, lang, *found)
                weighed.append(logit if stacked is None else stacked)
            said = torch.tensor(weighed) > 0
            out[lang]["evidence"] = float((said == y).double().mean())
    return out


def fit_yes_no_model(
    model_dir: Path,
    data: Path,
    cache: Path,
    split: str = "train",
    loaded: tuple[Any, Any] | None = None,
    contexts: Contexts | None = None,
    dataset: Any = None,
    progress: bool = True,
    max_studies: int | None = None,
    langs: Sequence[str] = tuple(YES_NO),
) -> YesNoFit:
    """Fit the saved model's yes/no head on ``split`` and save the model with it, a row
    per language of ``langs`` (those the LM was taught; `YES_NO`'s by default).
    ``loaded``: the model and tokenizer of ``model_dir``, when already loaded;
    ``contexts``: studies already encoded (`memo_contexts`), the others are encoded from
    the cache (``dataset``: the split's `ViPetDataset`, when already loaded)."""
    from vipet.evaluation.runner import split_ids
    from vipet.inference.predictor import Predictor
    from vipet.model.checkpoint import load_vipet, save_vipet
    from vipet.model.yes_no_head import YesNoConfig, YesNoHead

    model, tok = loaded or load_vipet(model_dir)
    ids = split_ids(data, split, max_studies)
    questions = yes_no_questions(data, ids, [lang for lang in YES_NO if lang in langs])
    if not questions:
        raise InputError(f"no question of the {split} split is answered yes or no", data)
    langs = sorted({q.lang for q in questions}, key=list(YES_NO).index)
    predictor = Predictor(model, tok)

    def context(sid: str) -> Any:
        nonlocal dataset
        ctx = contexts(sid) if contexts is not None else None
        if ctx is None:
            if dataset is None:
                from vipet.evaluation.detector import load_split

                dataset, _, _ = load_split(data, cache, split, model, tok, max_studies)
            ctx = _encode_cached(predictor, dataset, sid)
        return ctx

    read = read_states(predictor, questions, context, progress)
    states, lm_yes, answers, groups = read.states, read.lm_yes, read.answers, read.groups
    config = YesNoConfig(hidden=int(states[langs[0]][0].shape[0]), langs=tuple(langs))
    head = YesNoHead(config)
    rows, fits = {}, {}
    for lang in langs:
        x, y = torch.stack(states[lang]), torch.tensor(answers[lang], dtype=torch.float64)
        w, b, l2, cv = fit_rows(x, y, groups[lang])
        rows[lang] = (w, b)
        lm = torch.tensor(lm_yes[lang], dtype=torch.float64)
        fits[lang] = RowFit(
            examples=len(y),
            yes=int(y.sum()),
            l2=l2,
            cv_accuracy=round(cv, 4),
            train_accuracy=round(_accuracy(x.double(), y, w.double(), b), 4),
            lm_accuracy=round(float((lm == y).double().mean()), 4),
        )
    head.set_rows(rows)
    model.yes_no_head = head.eval()
    model.config.yes_no_head = config.to_dict()
    save_vipet(model, tok, model_dir)
    return YesNoFit(fits)


def yes_no_table(fit: YesNoFit, split: str = "train") -> str:
    """A fit's examples and accuracies per language, as Markdown."""
    lines = [
        f"| {split}, bare yes/no answers | examples | yes | L2 | LM's own word | head, held-out "
        "studies | head, fitted |",
        "|---|---|---|---|---|---|---|",
    ]
    for lang, r in fit.rows.items():
        lines.append(
            f"| {lang} | {r.examples} | {r.yes} | {r.l2:g} | {r.lm_accuracy:.3f} | "
            f"{r.cv_accuracy:.3f} | {r.train_accuracy:.3f} |"
        )
    return "\n".join(lines)


@dataclass
class EvidenceRow:
    examples: int
    yes: int
    l2: float
    head_accuracy: float
    """The head alone on these questions (it was fitted on another split)."""
    cv_accuracy: float
    """Head and evidence together, on held-out studies of this split (cross-validation)."""
    kept: bool
    """Whether the row is used: only when it beats the head alone on held-out studies."""


@dataclass
class EvidenceFit:
    rows: dict[str, EvidenceRow]  # by "<lang>/<kind>"

    def to_dict(self) -> dict[str, Any]:
        return {key: asdict(r) for key, r in self.rows.items()}


def fit_evidence_model(
    model_dir: Path,
    data: Path,
    cache: Path,
    split: str = "val",
    loaded: tuple[Any, Any] | None = None,
    progress: bool = True,
    max_studies: int | None = None,
) -> EvidenceFit:
    """Fit the yes/no head's evidence rows (`YesNoConfig.evidence`) on ``split`` and save
    the model with them: per language and question kind (`EVIDENCE_KINDS`), a logistic
    regression of the reference answer on the head's log-odds and the question's
    evidence (`vipet.inference.evidence.evidence`), each study encoded from the cache as
    at test time with its candidates. The split must be one the detector was not
    trained on — the validation split — or the candidates would look surer than they
    are at test time. A row is kept only where it beats the head alone on held-out
    studies."""
    from vipet.evaluation.detector import load_split
    from vipet.inference.predictor import Predictor
    from vipet.model.checkpoint import load_vipet, save_vipet

    model, tok = loaded or load_vipet(model_dir)
    head = model.yes_no_head
    if head is None:
        raise InputError("the model has no yes/no head to weigh evidence with (fit it first)")
    dataset, ids, _ = load_split(data, cache, split, model, tok, max_studies)
    questions = yes_no_questions(data, ids, head.config.langs)
    by_study: dict[str, list[YesNoQuestion]] = defaultdict(list)
    for q in questions:
        by_study[q.study].append(q)
    predictor = Predictor(model, tok)
    rows: dict[str, list[tuple[list[float], bool, str]]] = defaultdict(list)
    for sid in tqdm(sorted(by_study), desc="yes/no evidence", disable=not progress, leave=False):
        ctx = _encode_cached(predictor, dataset, sid, with_candidates=True)
        for q in by_study[sid]:
            found = question_evidence(q.question, q.lang, ctx.candidates or [], q.region)
            if found is None:
                continue
            kind, values = found
            h, _ = predictor.answer_state(ctx, q.question, q.lang, q.region)
            rows[f"{q.lang}/{kind}"].append(
                ([float(head.logit(h, q.lang)), *values], q.answer, sid)
            )
    if not rows:
        raise InputError(f"no closed question of the {split} split could be read", data)
    fitted: dict[str, list[float]] = {}
    report: dict[str, EvidenceRow] = {}
    for key in sorted(rows):
        xs, ys, groups = zip(*rows[key], strict=True)
        x = torch.tensor(xs, dtype=torch.float64)
        y = torch.tensor(ys, dtype=torch.float64)
        alone = float(((x[:, 0] > 0).double() == y).double().mean())
        if len(set(groups)) < 2 or int(y.sum()) in (0, len(y)):
            # nothing to hold out, or one answer only: no fit says anything
            report[key] = EvidenceRow(
                len(y), int(y.sum()), 0.0, round(alone, 4), round(alone, 4), False
            )
            continue
        w, b, l2, cv = fit_rows(x, y, list(groups))
        kept = cv > alone
        if kept:
            fitted[key] = [*(float(v) for v in w), float(b)]
        report[key] = EvidenceRow(len(y), int(y.sum()), l2, round(alone, 4), round(cv, 4), kept)
    head.config = replace(head.config, evidence=fitted)
    model.config.yes_no_head = head.config.to_dict()
    save_vipet(model, tok, model_dir)
    return EvidenceFit(report)


def evidence_table(fit: EvidenceFit, split: str = "val") -> str:
    """An evidence fit's questions and accuracies per language and kind, as Markdown."""
    lines = [
        f"| {split}, closed questions read | examples | yes | L2 | head alone | head + "
        "evidence, held-out studies | used |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, r in fit.rows.items():
        lines.append(
            f"| {key} | {r.examples} | {r.yes} | {r.l2:g} | {r.head_accuracy:.3f} | "
            f"{r.cv_accuracy:.3f} | {'yes' if r.kept else 'no'} |"
        )
    return "\n".join(lines)
