"""Natural-language-generation metrics for generated reports and free-text answers.

BLEU-1..4, ROUGE-L, METEOR and CIDEr-D come from pycocoevalcap, computed corpus-level
exactly as pycocoevalcap computes them, on *our* tokenisation (`tokenize_vi`) joined
with single spaces: pycocoevalcap's own PTBTokenizer needs Java and splits Vietnamese
syllables on their diacritics, so it is never used. ROUGE-1 (unigram F1, the number the
ViMed-PET paper reports) and BERTScore (greedy matching over a local encoder) are
computed here.

CIDEr-D multiplies each n-gram similarity by exp(-(len_hyp - len_ref)^2 / 72): for
whole reports whose lengths differ by tens of tokens it is ~0 by construction (it was
made for one-sentence captions); compare it only between texts of similar length.

METEOR runs the METEOR 1.5 jar shipped with pycocoevalcap (English resources: stems,
synonyms and paraphrases do not help Vietnamese; exact matches dominate). It runs only
when ``java`` is on PATH, with a timeout; any failure yields ``None`` and a note.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "METEOR_TIMEOUT_S",
    "bertscore_f1",
    "meteor_score",
    "nlg_scores",
    "rouge1_f",
    "tokenize_vi",
]

METEOR_TIMEOUT_S = 300.0  # JVM start + English resources take ~8 s; leave room for long runs

# "12x14", "12 × 14" -> "12 x 14": a size reads the same whether or not it was spaced.
_SIZE_X = re.compile(r"(\d)\s*[x×]\s*(?=\d)")
# A decimal number ("8,1", "8.1", "1.234,5") stays one token; then words of letters and
# digits ("suvmax", "t8", "18f"); then every other visible character on its own.
_TOKEN = re.compile(r"\d+(?:[.,]\d+)+|\w+|[^\w\s]")


def tokenize_vi(text: str) -> list[str]:
    """Lower-cased NFC tokens of Vietnamese (or English) text, diacritics kept.

    Syllables split on whitespace; punctuation becomes separate tokens ("(suvmax:" ->
    "(", "suvmax", ":"); a decimal number keeps its separator ("8,1" and "8.1" stay one
    token each, so a comma decimal is not mistaken for a list comma); a size written
    "12x14" or "12×14" becomes "12", "x", "14" like "12 x 14"; letters with digits stay
    together ("t8", "18f"). NFD input gives the same tokens as NFC input.
    """
    text = unicodedata.normalize("NFC", text).lower()
    text = _SIZE_X.sub(r"\1 x ", text)
    return _TOKEN.findall(text)


def _as_list(refs: str | Sequence[str]) -> list[str]:
    return [refs] if isinstance(refs, str) else list(refs)


def _ngram_f1(hyp: list[str], ref: list[str]) -> float:
    overlap = sum((Counter(hyp) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(hyp), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge1_f(hypothesis: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """ROUGE-1 F1 of one tokenised hypothesis: clipped unigram overlap, best reference.

    With several references the best F1 is kept (as ROUGE-L in pycocoevalcap keeps the
    best precision and recall); an empty hypothesis or reference scores 0.
    """
    return max((_ngram_f1(list(hypothesis), list(ref)) for ref in references), default=0.0)


def _start_meteor() -> Any:
    """pycocoevalcap's METEOR wrapper, its JVM started with UTF-8 I/O and stderr dropped.

    The stock constructor reads Vietnamese in the JVM's default charset (ASCII under a
    C locale, which would turn every diacritic into "?") and never drains stderr (a
    chatty JVM could block on a full pipe). Scoring is the stock ``compute_score``.
    """
    from pycocoevalcap.meteor import meteor as meteor_module

    scorer = meteor_module.Meteor.__new__(meteor_module.Meteor)
    scorer.meteor_cmd = [
        "java", "-Dfile.encoding=UTF-8", "-jar", "-Xmx2G", meteor_module.METEOR_JAR,
        "-", "-", "-stdio", "-l", "en", "-norm",
    ]  # fmt: skip
    scorer.meteor_p = subprocess.Popen(
        scorer.meteor_cmd,
        cwd=os.path.dirname(os.path.abspath(meteor_module.__file__)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    scorer.lock = threading.Lock()
    return scorer


def meteor_score(
    gts: Mapping[str, list[str]], res: Mapping[str, list[str]], timeout_s: float = METEOR_TIMEOUT_S
) -> tuple[float | None, str | None]:
    """Corpus METEOR of pycocoevalcap-style dicts (tokens joined by spaces), or (None, why).

    The jar talks over pipes and pycocoevalcap reads them without a timeout, so scoring
    runs in a thread; when it fails or outlives ``timeout_s`` the JVM is killed.
    """
    if shutil.which("java") is None:
        return None, "METEOR skipped: java is not on PATH"
    try:
        scorer = _start_meteor()
    except Exception as exc:  # no jar, java cannot start, ...
        return None, f"METEOR failed to start: {exc}"
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["score"] = float(scorer.compute_score(dict(gts), dict(res))[0])
        except Exception as exc:  # a dead JVM makes readline return b"" -> ValueError
            result["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout_s)
    timed_out = thread.is_alive()
    # Stop the JVM now, not at garbage collection; after a hang this also unblocks
    # the reader thread (readline returns b"").
    if scorer.meteor_p.poll() is None:
        scorer.meteor_p.kill()
        scorer.meteor_p.wait(10)
    thread.join(5.0)
    # A crashed compute_score leaves its lock held; pycocoevalcap's __del__ takes the
    # lock, so give it a fresh one or garbage collection would hang.
    scorer.lock = threading.Lock()
    if timed_out:
        return None, f"METEOR timed out after {timeout_s:g} s"
    if "score" in result:
        return result["score"], None
    return None, f"METEOR failed: {result.get('error')!r}"


def _coco_scores(gts: dict[str, list[str]], res: dict[str, list[str]]) -> dict[str, float]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"bleu{n}": float(b) for n, b in enumerate(bleu, start=1)}
    out["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    # CIDEr's document frequencies are empty when every reference is empty (max() of
    # nothing): no reference n-gram can be matched, so the score is 0.
    if any(ref for refs in gts.values() for ref in refs):
        out["cider"] = float(Cider().compute_score(gts, res)[0])
    else:
        out["cider"] = 0.0
    return out


def nlg_scores(
    predictions: Mapping[str, str],
    references: Mapping[str, str | list[str]],
    meteor: bool | None = None,
    bertscore_model: str | Path | None = None,
) -> dict[str, Any]:
    """NLG metrics of ``predictions`` against ``references`` (same keys), corpus-level.

    Returns ``bleu1``..``bleu4``, ``rouge_l``, ``cider`` (CIDEr-D), ``rouge1``,
    ``meteor`` (``None`` when skipped or failed), ``bertscore`` (F1, ``None`` without
    ``bertscore_model``), ``n`` and ``notes`` (why a metric is missing). Scores are in
    [0, 1] except CIDEr (0..10). ``meteor=None`` runs METEOR when java is on PATH,
    ``False`` never runs it, ``True`` runs it and notes why when it cannot.
    """
    if set(predictions) != set(references):
        missing = sorted(set(references) ^ set(predictions))[:5]
        raise ValueError(f"predictions and references differ in keys, e.g. {missing}")
    keys = sorted(predictions)
    notes: list[str] = []
    out: dict[str, Any] = {"n": len(keys)}
    if not keys:
        notes.append("no predictions to score")
        empty = dict.fromkeys(("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider"), 0.0)
        return out | empty | {"rouge1": 0.0, "meteor": None, "bertscore": None, "notes": notes}
    hyp_tokens = {k: tokenize_vi(predictions[k]) for k in keys}
    ref_tokens = {k: [tokenize_vi(r) for r in _as_list(references[k])] for k in keys}
    res = {k: [" ".join(hyp_tokens[k])] for k in keys}
    gts = {k: [" ".join(t) for t in ref_tokens[k]] for k in keys}
    out |= _coco_scores(gts, res)
    out["rouge1"] = sum(rouge1_f(hyp_tokens[k], ref_tokens[k]) for k in keys) / len(keys)
    out["meteor"] = None
    if meteor is False:
        notes.append("METEOR not requested")
    else:
        out["meteor"], why = meteor_score(gts, res)
        if why:
            notes.append(why)
    out["bertscore"] = None
    if bertscore_model is None:
        notes.append("BERTScore skipped: no local encoder given (bertscore_model)")
    else:
        hyps = [predictions[k] for k in keys]
        refs = [_as_list(references[k]) for k in keys]
        out["bertscore"] = sum(bertscore_f1(hyps, refs, bertscore_model)) / len(keys)
    out["notes"] = notes
    return out


def _embed(texts: list[str], tokenizer: Any, model: Any, layer: int, batch_size: int) -> list:
    """L2-normalised token embeddings per text, special tokens dropped: list of (T, D)."""
    import torch

    out = []
    limit = getattr(model.config, "max_position_embeddings", 512)
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=limit,
            return_tensors="pt",
            return_special_tokens_mask=True,
        )
        special = batch.pop("special_tokens_mask").bool()
        with torch.no_grad():
            hidden = model(**batch, output_hidden_states=True).hidden_states[layer]
        keep = batch["attention_mask"].bool() & ~special
        for i in range(hidden.shape[0]):
            out.append(torch.nn.functional.normalize(hidden[i][keep[i]].float(), dim=-1))
    return out


def bertscore_f1(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    model_dir: str | Path,
    *,
    layer: int = -1,
    batch_size: int = 16,
) -> list[float]:
    """BERTScore F1 per prediction (best over its references), from a local HF encoder.

    Greedy matching as in Zhang et al. (2020): cosine similarity of contextual token
    embeddings, each hypothesis token matched to its most similar reference token
    (precision) and vice versa (recall), no idf weighting and no baseline rescaling.
    Embeddings come from hidden layer ``layer`` (default: the last; ``hidden_states[0]``
    is the embedding layer), special tokens excluded. The model is loaded with
    ``local_files_only=True``: nothing is downloaded. An empty text scores 0.
    """
    from transformers import AutoModel, AutoTokenizer

    path = Path(model_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: BERTScore model folder not found")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    flat_refs = [r for refs in references for r in refs]
    hyp_emb = _embed([unicodedata.normalize("NFC", t) for t in predictions], tokenizer, model,
                     layer, batch_size)  # fmt: skip
    ref_emb = _embed([unicodedata.normalize("NFC", t) for t in flat_refs], tokenizer, model,
                     layer, batch_size)  # fmt: skip
    scores, pos = [], 0
    for hyp, refs in zip(hyp_emb, references, strict=True):
        best = 0.0
        for ref in ref_emb[pos : pos + len(refs)]:
            if len(hyp) and len(ref):
                sim = hyp @ ref.T  # (T_hyp, T_ref) cosines
                p, r = sim.max(dim=1).values.mean().item(), sim.max(dim=0).values.mean().item()
                best = max(best, 2 * p * r / (p + r) if p + r > 0 else 0.0)
        scores.append(best)
        pos += len(refs)
    return scores
