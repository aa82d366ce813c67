"""A yes/no head: which of "yes" and "no" the model answers to a closed question.

The language model is taught its answers beside perfect finding slots (the teacher's,
`vipet.model.findings_slots`), so it answers a closed question as its slots say. At
test time the slots are the findings head's, which miss most small lesions seen on CT
only: "no lymph node in the slots" is then wrong more often than right, and the LM
cannot know it — it never saw its slots miss. How often each kind of answer from each
kind of slot is right is learnable from the training split, under the head's own slots.

This head is that lesson: one logistic regression per answer language over the LM's
last hidden state at the answer position (what the LM makes of the question and the
visual tokens, slots included; before its own yes/no logits), fitted after training on
the training split's bare yes/no answers with the saved model's own detections
(`vipet.inference.yes_no`). When the LM's answer is a bare "yes" or "no" word of the
question's language, the head decides which (`vipet.inference.predictor.Predictor.ask`);
every other answer is the LM's. The LM is not touched.

The LM's state cannot hold what the slots left out: a candidate just below its class's
threshold. Where the question says what it asks about (`vipet.inference.evidence`), a
second, tiny regression per language and question kind — ``evidence`` — weighs the
head's log-odds against the detector's strongest candidates for that type and place,
fitted on the validation split (`vipet.inference.yes_no.fit_evidence_model`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from vipet.model.layers import DictConfig, check_positive
from vipet.reports.questions import YES_NO


@dataclass(frozen=True)
class YesNoConfig(DictConfig):
    hidden: int = 256
    """The language model's hidden size (the head reads its last hidden state)."""
    langs: tuple[str, ...] = ("vi", "en")
    """Answer languages with a fitted row; their yes/no words are `YES_NO`'s."""
    evidence: dict[str, list[float]] = field(default_factory=dict)
    """Per ``"<lang>/<kind>"`` (`vipet.inference.evidence.EVIDENCE_KINDS`): the weights
    of the head's log-odds and of the question's evidence values, then the bias — the
    log-odds of "yes" for that kind of question. A kind without an entry: the head
    alone."""

    def __post_init__(self) -> None:
        check_positive(hidden=self.hidden)
        unknown = [lang for lang in self.langs if lang not in YES_NO]
        if unknown or not self.langs:
            raise ValueError(
                f"yes/no head languages must be among {list(YES_NO)}, got {self.langs}"
            )
        for key, row in self.evidence.items():
            lang = key.split("/", 1)[0]
            if lang not in self.langs or "/" not in key:
                raise ValueError(
                    f"yes/no evidence key {key!r} must be '<lang>/<kind>' with lang in {self.langs}"
                )
            if len(row) < 2:
                raise ValueError(f"yes/no evidence row {key!r} needs weights and a bias, got {row}")


class YesNoHead(nn.Module):
    """``P(yes)`` per language: ``sigmoid(w_lang · h + b_lang)``."""

    def __init__(self, config: YesNoConfig) -> None:
        super().__init__()
        self.config = config
        n = len(config.langs)
        self.weight = nn.Parameter(torch.zeros(n, config.hidden), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(n), requires_grad=False)

    def words(self, lang: str) -> tuple[str, str] | None:
        """The (yes, no) words the head chooses between in ``lang`` (None: no row)."""
        return YES_NO[lang] if lang in self.config.langs else None

    def logit(self, hidden: torch.Tensor, lang: str) -> torch.Tensor:
        """Log-odds of "yes" for last hidden states ``(..., hidden)`` of ``lang``."""
        i = self.config.langs.index(lang)
        return hidden.float() @ self.weight[i].float() + self.bias[i].float()

    def with_evidence(
        self, logit: float, lang: str, kind: str, values: Sequence[float]
    ) -> float | None:
        """The log-odds of "yes" from the head's ``logit`` and a question's evidence
        ``values`` (`vipet.inference.evidence.evidence`), for a question of ``kind`` in
        ``lang``; None when no row was fitted for it."""
        row = self.config.evidence.get(f"{lang}/{kind}")
        if row is None:
            return None
        if len(row) != len(values) + 2:
            raise ValueError(
                f"yes/no evidence row {lang}/{kind} has {len(row) - 2} evidence weights, "
                f"got {len(values)} values"
            )
        x = (logit, *values)
        return float(sum(w * v for w, v in zip(row[:-1], x, strict=True)) + row[-1])

    def set_rows(self, rows: Mapping[str, tuple[torch.Tensor, float]]) -> None:
        """Each language's fitted ``(w, b)``."""
        with torch.no_grad():
            for lang, (w, b) in rows.items():
                i = self.config.langs.index(lang)
                self.weight[i] = w.to(self.weight)
                self.bias[i] = float(b)
