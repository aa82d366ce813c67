"""Where each lesion type may be placed, read off the training split's lesions.

The findings head reads a peak's type and its fine location from two separate maps, so
on its own it may pair them as no report ever does: a hypermetabolic focus "in the
pleura", a lymph node "in the upper lobe", a nodule "in the pleura" (run 33 of
docs/training.md: 32 of its 198 test detections), or a paratracheal node in the
abdomen's volume (run 35: 6 of them). The language model was taught on slots built from
real lesions, has never seen such a slot written, and rewrites it as some finding it
knows — a mass in the lung, a focus in the iliac bone — so the type the head had right is
lost from the report. `fit_places` lists, per region volume and type, the fine locations
the training split's lesions take (a lesion counts for the volume it is filed under,
`Lesion.region`); `vipet.model.findings_slots.place` then puts a detection at the head's
likeliest location among its type's in its volume. It changes no weight and no type:
only where a detection is said to be.

    vipet calibrate --checkpoint runs/cpu-small/model --data DATA --fit-places
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vipet.errors import InputError
from vipet.model.diag_head import FINE_NAMES
from vipet.reports.schema import LESION_TYPES, REGIONS


@dataclass
class Places:
    counts: dict[str, dict[str, dict[str, int]]]
    """Per region and type seen there, lesions at each of its locations (`FINE_NAMES`
    order)."""
    studies: int
    lesions: int
    split: str = "train"

    @property
    def places(self) -> dict[str, dict[str, list[str]]]:
        """Per region and type seen there, its fine locations (`ViPetConfig.slot_places`)."""
        return {
            r: {k: list(where) for k, where in kinds.items()} for r, kinds in self.counts.items()
        }

    def to_dict(self) -> dict[str, Any]:
        return {"places": self.places, **asdict(self)}


def fit_places(
    lesions_by_study: Mapping[str, Iterable[Mapping[str, Any]] | None], split: str = "train"
) -> Places:
    """The fine locations each lesion type takes in each region's volume among
    ``lesions_by_study`` (lesions with a known region, type and fine location; others
    are skipped)."""
    counts: dict[tuple[str, str], Counter[str]] = {}
    n = 0
    for lesions in lesions_by_study.values():
        for les in lesions or ():
            region, kind, fine = les.get("region"), les.get("type"), les.get("location_detail")
            if region in REGIONS and kind in LESION_TYPES and fine in FINE_NAMES:
                counts.setdefault((region, kind), Counter())[fine] += 1
                n += 1
    tally: dict[str, dict[str, dict[str, int]]] = {}
    for region in REGIONS:
        for kind in LESION_TYPES:
            seen = counts.get((region, kind))
            if seen:
                tally.setdefault(region, {})[kind] = {f: seen[f] for f in FINE_NAMES if seen[f]}
    return Places(tally, len(lesions_by_study), n, split)


def write_places(model_dir: Path, places: Mapping[str, Mapping[str, list[str]]]) -> Path:
    """Set ``slot_places`` in a saved model's config.json (atomically)."""
    from vipet.inference.calibrate import set_config_entry

    return set_config_entry(model_dir, "slot_places", dict(places) or None)


def fit_places_model(
    model_dir: Path,
    data: Path,
    split: str = "train",
    write: bool = True,
    loaded: tuple[Any, Any] | None = None,
) -> Places:
    """Fit the places on ``split``'s lesion lists and (``write``) store them in the saved
    model at ``model_dir`` (and in ``loaded``'s model, when given, so a later fit on it
    detects with them). A dataset without lesion lists is refused: nothing to fit."""
    from vipet.evaluation.runner import references, split_ids

    ids = split_ids(Path(data), split)
    refs = references(Path(data), ids, "en")
    fit = fit_places({sid: refs[sid]["lesions"] for sid in ids}, split)
    if not fit.lesions:
        raise InputError(
            f"no lesion of the {split} split has a region, type and fine location to fit places on",
            Path(data),
        )
    if write:
        write_places(model_dir, fit.places)
        if loaded is not None:
            loaded[0].config.slot_places = dict(fit.places)
    return fit


def places_table(fit: Places) -> str:
    """Markdown: each region's types and their places with their lesion counts."""
    lines = [
        f"places fitted on {fit.lesions} lesions of {fit.studies} {fit.split} studies:",
        "",
        "| region | type | lesions | places |",
        "|---|---|---|---|",
    ]
    for region, kinds in fit.counts.items():
        for kind, where in kinds.items():
            lines.append(
                f"| {region} | {kind} | {sum(where.values())} | "
                + ", ".join(f"{f} ({n})" for f, n in where.items())
                + " |"
            )
    return "\n".join(lines)
