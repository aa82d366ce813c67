"""Training curves: every loss part of ``metrics.jsonl`` against the step, train and
validation, one panel per part, written as a PNG beside the metrics (`fit` does it at
the end of a run; ``vipet curves RUN_DIR`` redraws it)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from vipet.errors import InputError
from vipet.io.atomic import atomic_output


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` (one JSON object per line)."""
    p = Path(path)
    if not p.is_file():
        raise InputError("no metrics.jsonl here", p)
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InputError(f"line {n} is not JSON ({exc.msg})", p) from exc
    return rows


def curves(rows: list[dict]) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """``{part: {split: (steps, values)}}`` for every ``loss/*`` key."""
    out: dict[str, dict[str, tuple[list[int], list[float]]]] = defaultdict(dict)
    for row in rows:
        for key, value in row.items():
            if not key.startswith("loss/") or value is None:
                continue
            steps, values = out[key[5:]].setdefault(row.get("split", "train"), ([], []))
            steps.append(int(row["step"]))
            values.append(float(value))
    return dict(out)


def plot_curves(metrics: str | Path, out: str | Path | None = None, title: str = "") -> Path:
    """Draw the loss curves of ``metrics`` (a metrics.jsonl) into ``out`` (default:
    curves.png beside it)."""
    metrics = Path(metrics)
    out = Path(out) if out is not None else metrics.with_name("curves.png")
    data = curves(read_metrics(metrics))
    if not data:
        raise InputError("no loss values to plot", metrics)
    order = [k for k in ("total", "lm", "diag", "lesion", "align", "contrastive") if k in data]
    order += sorted(set(data) - set(order))
    cols = min(3, len(order))
    rows = (len(order) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, part in zip(axes.flat, order, strict=False):
        for split, style in (("train", "-"), ("val", "o-")):
            if split in data[part]:
                steps, values = data[part][split]
                ax.plot(steps, values, style, label=split, markersize=3, linewidth=1.2)
        ax.set_title(part)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(order) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_output(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out
