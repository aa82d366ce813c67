"""Per-class detection thresholds, tuned on the validation split.

One heatmap threshold for every class holds a faint class (a non-avid node, seen on CT
alone: its peaks are lower) to the bar of the bright ones (an avid node), or lets a
class the head over-calls through. `calibrate` searches a threshold per type x avidity
class (the class the head reads at the peak) by coordinate ascent on the detector's
clinical scores over a split's studies (`vipet.evaluation.detector`); the thresholds go
in the model's config (`ViPetConfig.slot_thresholds`) and change no weight. The
language model was taught on teacher slots, so it writes what the slots show whatever
the threshold. Only classes with enough candidates move (``min_support``), so a class
seen twice in the split keeps the default rather than a threshold fitted to two peaks.

    vipet calibrate --checkpoint runs/cpu-small/model --data DATA --cache CACHE
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vipet.errors import InputError
from vipet.evaluation.detector import Candidate, quick_f1, select
from vipet.io.atomic import atomic_write_bytes

GRID: tuple[float, ...] = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8, 1.0)
"""Thresholds tried per class; 1.0 switches a class off (a sigmoid never exceeds it)."""
OBJECTIVE: tuple[str, ...] = ("f1_t", "f1_tpf")
"""Scores summed as the objective: type alone, and type + place + avidity."""


@dataclass
class Calibration:
    thresholds: dict[str, float]
    """Per class, only where it differs from the default."""
    default: float
    before: dict[str, float]
    after: dict[str, float]
    support: dict[str, int] = field(default_factory=dict)
    """Candidates per class (peaks above the floor they were collected at)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _objective(scores: Mapping[str, float], objective: Sequence[str]) -> float:
    return sum(scores[k] for k in objective)


def calibrate(
    found: Mapping[str, Sequence[Candidate]],
    refs: Mapping[str, Sequence[Mapping[str, Any]]],
    default: float,
    slots: int,
    grid: Sequence[float] = GRID,
    min_support: int = 5,
    passes: int = 2,
    objective: Sequence[str] = OBJECTIVE,
) -> Calibration:
    """Thresholds per class that maximise the summed ``objective`` scores of the
    selected candidates against ``refs``, every class starting at ``default``; each pass
    tries every grid value for each class in turn, the others held. A move must raise
    the objective (ties keep the current value, so the default stays where the split
    cannot tell)."""
    support = dict(Counter(c.label for cands in found.values() for c in cands))
    movable = sorted(k for k, n in support.items() if n >= min_support)
    current = dict.fromkeys(movable, default)

    def score(th: Mapping[str, float]) -> float:
        return _objective(quick_f1(select(found, default, slots, th), refs), objective)

    before = quick_f1(select(found, default, slots, None), refs)
    best = _objective(before, objective)
    for _ in range(passes):
        moved = False
        for label in movable:
            for value in grid:
                if value == current[label]:
                    continue
                trial = {**current, label: value}
                s = score(trial)
                if s > best + 1e-9:
                    best, current, moved = s, trial, True
        if not moved:
            break
    chosen = {k: v for k, v in current.items() if v != default}
    after = quick_f1(select(found, default, slots, chosen), refs)
    return Calibration(chosen, default, before, after, support)


def _config_entry(thresholds: Mapping[str, float]) -> dict[str, float] | None:
    """``ViPetConfig.slot_thresholds`` as saved: by class name, None when empty."""
    return dict(sorted(thresholds.items())) or None


def write_thresholds(model_dir: Path, thresholds: Mapping[str, float]) -> Path:
    """Set ``slot_thresholds`` in a saved model's config.json (atomically)."""
    return set_config_entry(model_dir, "slot_thresholds", _config_entry(thresholds))


def set_config_entry(model_dir: Path, key: str, value: Any) -> Path:
    """Set one entry of a saved model's config.json (atomically): the fits after
    training that change no weight."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise InputError("not a saved ViPET model (no config.json)", path)
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"config.json is not JSON ({exc.msg})", path) from None
    cfg[key] = value
    atomic_write_bytes(path, (json.dumps(cfg, indent=2, sort_keys=True) + "\n").encode())
    return path


def calibrate_model(
    model_dir: Path,
    data: Path,
    cache: Path,
    split: str = "val",
    max_studies: int | None = None,
    min_support: int = 5,
    write: bool = True,
    progress: bool = True,
    loaded: tuple[Any, Any] | None = None,
) -> Calibration:
    """Calibrate a saved model's slot thresholds on ``split`` and (``write``) store them.
    ``loaded``: the model and tokenizer of ``model_dir``, when already loaded."""
    from vipet.evaluation.detector import candidates, load_slot_model_split

    model, _, ds, ids, refs = load_slot_model_split(
        model_dir, data, cache, split, max_studies, loaded, "calibrate"
    )
    found = candidates(model, ds, ids, floor=min(GRID), progress=progress)
    result = calibrate(
        found,
        refs,
        model.config.slot_threshold,
        model.config.findings_slots,
        min_support=min_support,
    )
    if write:
        write_thresholds(model_dir, result.thresholds)
        # the loaded model is the saved one: a later fit on it (`vipet calibrate
        # --fit-yes-no`) detects with these thresholds and saves them again
        model.config.slot_thresholds = _config_entry(result.thresholds)
    return result


def calibration_table(result: Calibration) -> str:
    """Markdown: the moved classes, and the split's scores before and after."""
    lines = [
        f"default threshold {result.default}; classes with at least the support to move:",
        "",
        "| class | candidates | threshold |",
        "|---|---|---|",
    ]
    for label, n in sorted(result.support.items(), key=lambda x: -x[1]):
        lines.append(f"| {label} | {n} | {result.thresholds.get(label, result.default)} |")
    lines += ["", "| | F1-T | F1-TP | F1-TF | F1-TPF |", "|---|---|---|---|---|"]
    for name, sc in (("before", result.before), ("after", result.after)):
        lines.append(
            f"| {name} | "
            + " | ".join(f"{sc[k]:.3f}" for k in ("f1_t", "f1_tp", "f1_tf", "f1_tpf"))
            + " |"
        )
    return "\n".join(lines)
