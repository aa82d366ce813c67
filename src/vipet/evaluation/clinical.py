"""Clinical-efficacy scores of the ViMed-PET protocol (DOMAIN.md §4).

Each report is a list of lesions (`schema.Lesion`, `extract.ExtractedLesion` or dicts
with the same keys). Per patient, predicted lesions are matched greedily to reference
lesions; precision, recall and F1 are micro-averaged over all lesions of all patients for

- F1-T: type; F1-TP: type + location class; F1-TF: type + FDG avidity;
- F1-TPF: type + location class + FDG avidity.

A lesion whose compared type or location is "other" never matches. When no lesion is
predicted (or none is in the reference) precision (or recall) is undefined: it is
reported as 0, with the counts (``n_pred``, ``n_ref``, ``tp``) alongside so a reader can
tell "undefined" from "all wrong".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vipet.reports.schema import LESION_TYPES, LOCATION_CLASSES

METRICS: dict[str, tuple[str, ...]] = {
    "T": ("type",),
    "TP": ("type", "location"),
    "TF": ("type", "fdg_avid"),
    "TPF": ("type", "location", "fdg_avid"),
}
OTHER = "other"


def _field(lesion: Any, name: str) -> Any:
    """A field of a lesion object or dict (None when absent)."""
    if isinstance(lesion, Mapping):
        return lesion.get(name)
    return getattr(lesion, name, None)


def match_lesions(
    pred: Sequence[Any],
    ref: Sequence[Any],
    fields: Sequence[str],
    *,
    match_other: bool = False,
) -> list[tuple[int, int]]:
    """Greedy matching of one patient's lesions: (pred index, ref index) pairs.

    In prediction order, each predicted lesion takes the FIRST unused reference lesion
    whose ``fields`` are all equal and none of them is "other" (the protocol). With
    ``match_other`` "other" may match too — a diagnostic, not the protocol (e.g. to tell
    extraction errors from the protocol's built-in misses on bone lesions).
    """
    used = [False] * len(ref)
    pairs: list[tuple[int, int]] = []
    for i, p in enumerate(pred):
        values = [_field(p, f) for f in fields]
        if not match_other and any(v == OTHER for v in values):
            continue
        for j, r in enumerate(ref):
            if not used[j] and all(_field(r, f) == v for f, v in zip(fields, values, strict=True)):
                used[j] = True
                pairs.append((i, j))
                break
    return pairs


def _prf(tp: int, n_pred: int, n_ref: int) -> dict[str, float | int]:
    """Precision, recall, F1 (undefined ratios → 0) with the counts they come from."""
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "n_pred": n_pred,
        "n_ref": n_ref,
    }


def _mean_abs(pairs: list[tuple[float | None, float | None]]) -> tuple[float | None, int]:
    diffs = [abs(float(a) - float(b)) for a, b in pairs if a is not None and b is not None]
    return (sum(diffs) / len(diffs) if diffs else None), len(diffs)


def _per_class(
    counts: dict[str, list[int]], names: Sequence[str]
) -> dict[str, dict[str, float | int]]:
    """Per class: support (reference lesions) and P/R/F1 under TPF."""
    out = {}
    for name in names:
        tp, n_pred, n_ref = counts.get(name, [0, 0, 0])
        scores = _prf(tp, n_pred, n_ref)
        out[name] = {"support": n_ref, **scores}
    return out


def clinical_scores(
    pred_by_study: Mapping[str, Sequence[Any]],
    ref_by_study: Mapping[str, Sequence[Any]],
    *,
    match_other: bool = False,
) -> dict[str, Any]:
    """F1-T / TP / TF / TPF over all studies (a study missing on one side is empty).

    Returns ``{"T"|"TP"|"TF"|"TPF": {precision, recall, f1, tp, n_pred, n_ref},
    "f1_t", "f1_tp", "f1_tf", "f1_tpf", "n_studies", "suvmax_mae", "suvmax_n",
    "size_mae_mm", "size_n", "per_type", "per_location", "per_study"}``; ``per_study``
    maps each study to its own f1_t ... f1_tpf (1 when both sides are empty); the SUVmax and size errors and
    the per-class breakdown are over TPF-matched pairs (errors only where both values are
    known). ``match_other``: see `match_lesions`.
    """
    studies = sorted(set(pred_by_study) | set(ref_by_study))
    totals = {name: [0, 0, 0] for name in METRICS}  # tp, n_pred, n_ref
    suv_pairs: list[tuple[Any, Any]] = []
    size_pairs: list[tuple[Any, Any]] = []
    by_type: dict[str, list[int]] = {}
    by_loc: dict[str, list[int]] = {}
    per_study: dict[str, dict[str, float]] = {}
    for study in studies:
        pred = list(pred_by_study.get(study, ()))
        ref = list(ref_by_study.get(study, ()))
        per_study[study] = {}
        for name, fields in METRICS.items():
            pairs = match_lesions(pred, ref, fields, match_other=match_other)
            per_study[study][f"f1_{name.lower()}"] = _study_f1(len(pairs), len(pred), len(ref))
            totals[name][0] += len(pairs)
            totals[name][1] += len(pred)
            totals[name][2] += len(ref)
            if name != "TPF":
                continue
            for i, j in pairs:
                suv_pairs.append((_field(pred[i], "suvmax"), _field(ref[j], "suvmax")))
                size_pairs.append((_field(pred[i], "size_mm"), _field(ref[j], "size_mm")))
                by_type.setdefault(_field(ref[j], "type"), [0, 0, 0])[0] += 1
                by_loc.setdefault(_field(ref[j], "location"), [0, 0, 0])[0] += 1
        for lesions, slot in ((pred, 1), (ref, 2)):
            for lesion in lesions:
                by_type.setdefault(_field(lesion, "type"), [0, 0, 0])[slot] += 1
                by_loc.setdefault(_field(lesion, "location"), [0, 0, 0])[slot] += 1
    result: dict[str, Any] = {name: _prf(*totals[name]) for name in METRICS}
    result.update({f"f1_{name.lower()}": result[name]["f1"] for name in METRICS})
    suv_mae, suv_n = _mean_abs(suv_pairs)
    size_mae, size_n = _mean_abs(size_pairs)
    result.update(
        n_studies=len(studies),
        suvmax_mae=suv_mae,
        suvmax_n=suv_n,
        size_mae_mm=size_mae,
        size_n=size_n,
        per_type=_per_class(by_type, LESION_TYPES),
        per_location=_per_class(by_loc, LOCATION_CLASSES),
        per_study=per_study,
    )
    return result


def _study_f1(tp: int, n_pred: int, n_ref: int) -> float:
    """One study's F1; a normal study reported normal (nothing on either side) is 1."""
    if n_pred == 0 and n_ref == 0:
        return 1.0
    return 2 * tp / (n_pred + n_ref)
