"""Evaluation pictures: metric bars per system and per-class clinical F1."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from vipet.io.atomic import atomic_output


def _save(fig: Any, path: Path) -> Path:
    try:
        with atomic_output(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def plot_metric_bars(results: Mapping[str, dict[str, Any]], path: str | Path) -> Path:
    """Grouped bars: one group per metric, one bar per system (model, baselines)."""
    from vipet.evaluation.runner import TABLE_COLUMNS, _get

    names = list(results)
    # CIDEr lives on a 0-10 scale: it stays in the table, off this 0-1 chart.
    cols = [
        (label, p)
        for label, p in TABLE_COLUMNS
        if label != "CIDEr" and any(_get(results[n], p) is not None for n in names)
    ]
    fig, ax = plt.subplots(figsize=(1.2 * len(cols) + 3, 4.2))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(cols))
    for i, name in enumerate(names):
        vals = [float(_get(results[name], p) or 0.0) for _, p in cols]
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=name)
    ax.set_xticks(x, [label for label, _ in cols], rotation=30, ha="right")
    ax.set_ylabel("score")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("Report generation: NLG, clinical efficacy, VQA (CIDEr: see the table)")
    return _save(fig, Path(path))


def plot_per_class(results: Mapping[str, dict[str, Any]], path: str | Path) -> Path:
    """Per lesion type clinical F1 (TPF matching) per system."""
    names = list(results)
    per = {n: (results[n].get("clinical") or {}).get("per_type", {}) for n in names}
    # Only classes some reference or prediction holds (the 14-class schema is mostly empty).
    classes = sorted(
        {
            c
            for d in per.values()
            for c, v in d.items()
            if (v or {}).get("support") or (v or {}).get("n_pred")
        }
    )
    fig, ax = plt.subplots(figsize=(1.0 * max(4, len(classes)) + 2, 4.2))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(classes))
    for i, name in enumerate(names):
        vals = [float((per[name].get(c) or {}).get("f1", 0.0)) for c in classes]
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=name)
    ax.set_xticks(x, classes, rotation=35, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1 (type + location + FDG)")
    ax.legend(fontsize=8)
    ax.set_title("Clinical F1 per lesion type")
    return _save(fig, Path(path))
