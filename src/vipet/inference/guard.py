"""Consistency guard: does the image evidence back what the report says?

A generated report is text; the findings head's detections are what the image shows the
model. The guard reads the report back with the offline extractor
(`vipet.reports.extract`), region by region, and lines each stated lesion up with the
head's detections of that region:

- **supported**: a detection of the same type, location class and FDG avidity, whose
  SUVmax and size agree within tolerance;
- **differs**: a detection at the same place that disagrees on something — avidity,
  type, SUVmax or size (each difference is named, with both values);
- **unsupported**: no detection of the region explains the statement;

and lists the **omitted** findings: detections the text does not mention. With an
attention summary per statement (the share of the statement's attention on visual
tokens that fell on its detection's slot), a supported statement whose attention went
elsewhere is flagged too: the words match the image, but the model did not look there.

Matching is greedy per region in reading order, like the clinical evaluation
(`vipet.evaluation.clinical.match_lesions`), tightest agreement first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from vipet.reports.extract import extract_findings

SUPPORTED, DIFFERS, UNSUPPORTED = "supported", "differs", "unsupported"


@dataclass(frozen=True)
class GuardConfig:
    """Tolerances of the guard."""

    suv_abs: float = 1.0
    """SUVmax values agree when within this many SUV units …"""
    suv_rel: float = 0.2
    """… or this share of the measured value, whichever is larger."""
    size_abs_mm: float = 3.0
    """Sizes agree when within this many mm …"""
    size_rel: float = 0.25
    """… or this share of the head's size, whichever is larger."""
    min_attention: float = 0.2
    """A statement whose attention share on its detection's slot is below this is
    flagged as looking elsewhere (when an attention summary is given)."""


@dataclass
class Statement:
    """One lesion the report states, and what the image evidence says of it."""

    region: str
    sentence: str
    lesion: dict[str, Any]
    status: str
    detection: int | None = None
    """Index of the matched finding in the region's detections (None: unsupported)."""
    differences: list[str] = field(default_factory=list)
    attention: float | None = None
    looked_elsewhere: bool = False


@dataclass
class Omission:
    """A finding of the head that the report does not mention."""

    region: str
    detection: int
    finding: dict[str, Any]


@dataclass
class GuardResult:
    statements: list[Statement]
    omitted: list[Omission]

    @property
    def counts(self) -> dict[str, int]:
        out = {SUPPORTED: 0, DIFFERS: 0, UNSUPPORTED: 0}
        for s in self.statements:
            out[s.status] += 1
        out["omitted"] = len(self.omitted)
        out["looked_elsewhere"] = sum(s.looked_elsewhere for s in self.statements)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "statements": [asdict(s) for s in self.statements],
            "omitted": [asdict(o) for o in self.omitted],
        }


def _agree(said: float | None, seen: float | None, absolute: float, relative: float) -> bool:
    if said is None or seen is None:
        return True  # nothing to contradict: the report or the head gives no number
    return abs(said - seen) <= max(absolute, relative * abs(seen))


def _differences(said: Mapping[str, Any], seen: Mapping[str, Any], cfg: GuardConfig) -> list[str]:
    out = []
    if said["type"] != seen["type"]:
        out.append(f"type: report {said['type']}, image {seen['type']}")
    if bool(said["fdg_avid"]) != bool(seen["fdg_avid"]):
        word = lambda a: "FDG-avid" if a else "not FDG-avid"  # noqa: E731
        out.append(f"uptake: report {word(said['fdg_avid'])}, image {word(seen['fdg_avid'])}")
    if not _agree(said.get("suvmax"), seen.get("suvmax"), cfg.suv_abs, cfg.suv_rel):
        out.append(f"SUVmax: report {said['suvmax']:g}, image {seen['suvmax']:g}")
    if not _agree(said.get("size_mm"), seen.get("size_mm"), cfg.size_abs_mm, cfg.size_rel):
        out.append(f"size: report {said['size_mm']:g} mm, image {seen['size_mm']:g} mm")
    return out


# Tightest agreement first: everything the extractor reads, then the place with one of
# type or avidity, then the place alone (a mistyped lesion at a detected place).
_PASSES: tuple[tuple[str, ...], ...] = (
    ("type", "location", "fdg_avid"),
    ("type", "location"),
    ("location", "fdg_avid"),
    ("location",),
)


def check_region(
    region: str,
    text: str,
    findings: Sequence[Mapping[str, Any]],
    lang: str,
    attention: Sequence[float | None] | None = None,
    config: GuardConfig | None = None,
    slot_attention: Sequence[Sequence[float]] | None = None,
) -> GuardResult:
    """The guard on one region: its generated ``text`` against its ``findings`` (the
    head's detections as `vipet.model.findings_slots.Detections.attributes` lists them).
    ``attention``: per stated lesion, in reading order, the share of its attention on
    its detection's slot (None where unknown); or ``slot_attention``: per stated lesion
    its share on every finding's slot, of which the guard takes its match's."""
    cfg = config or GuardConfig()
    said = [les.to_dict() for les in extract_findings(text, lang)]
    for name, given in (("attention", attention), ("slot_attention", slot_attention)):
        if given is not None and len(given) != len(said):
            raise ValueError(f"{len(given)} {name} values for {len(said)} stated lesions")
    match: dict[int, int] = {}
    used: set[int] = set()
    for fields in _PASSES:
        for i, s in enumerate(said):
            if i in match:
                continue
            for j, f in enumerate(findings):
                if j not in used and all(s.get(k) == f.get(k) for k in fields):
                    match[i] = j
                    used.add(j)
                    break
    statements = []
    for i, s in enumerate(said):
        sentence = s.pop("sentence")
        j = match.get(i)
        if j is None:
            st = Statement(region, sentence, s, UNSUPPORTED)
        else:
            diff = _differences(s, findings[j], cfg)
            st = Statement(region, sentence, s, DIFFERS if diff else SUPPORTED, j, diff)
        share = None if attention is None else attention[i]
        if slot_attention is not None and j is not None and j < len(slot_attention[i]):
            share = slot_attention[i][j]
        if share is not None:
            st.attention = float(share)
            st.looked_elsewhere = st.detection is not None and st.attention < cfg.min_attention
        statements.append(st)
    omitted = [Omission(region, j, dict(f)) for j, f in enumerate(findings) if j not in used]
    return GuardResult(statements, omitted)


def check_report(
    texts: Mapping[str, str],
    findings: Mapping[str, Sequence[Mapping[str, Any]]],
    lang: str,
    attention: Mapping[str, Sequence[float | None]] | None = None,
    config: GuardConfig | None = None,
) -> GuardResult:
    """The guard over a study written region by region: ``texts`` and ``findings`` keyed
    by region (a region with findings but no text has them all omitted)."""
    statements: list[Statement] = []
    omitted: list[Omission] = []
    for region in dict.fromkeys([*texts, *findings]):
        part = check_region(
            region,
            texts.get(region, ""),
            findings.get(region, ()),
            lang,
            None if attention is None else attention.get(region),
            config,
        )
        statements += part.statements
        omitted += part.omitted
    return GuardResult(statements, omitted)


__all__ = [
    "DIFFERS",
    "SUPPORTED",
    "UNSUPPORTED",
    "GuardConfig",
    "GuardResult",
    "Omission",
    "Statement",
    "check_region",
    "check_report",
]
