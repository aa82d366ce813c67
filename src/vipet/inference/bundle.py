"""`vipet report`'s output: the report, its structured findings and the evidence.

One study in, one folder out (written to a temporary folder beside it and renamed, so a
failed run never leaves half a report):

- ``report.txt`` — the report as a reader sees it;
- ``report.json`` — its sections, every stated lesion (type, place, avidity, SUVmax,
  size) with the consistency guard's verdict and the detection behind it, where the
  model looked writing it (the share of attention on its detection's slot, the peak of
  its attention map in region-grid voxels, world millimetres and CT voxels), the
  findings the text omits, and the model (name, ViPET version, config hash);
- ``attention/NN_<region>.nii.gz`` — each stated lesion's attention map, resampled onto
  the study's CT grid (so it overlays the CT in any viewer);
- ``summary.png`` — a PET MIP with each stated lesion numbered, a fused coronal slice,
  and per lesion a fused axial slice with its attention outline.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import vipet
from vipet.data.prompts import merge_region_texts
from vipet.inference.explain import RegionReport, StatedLesion, explain_region
from vipet.inference.guard import GuardConfig, Statement
from vipet.inference.predictor import Predictor, StudyContext
from vipet.io.nifti import write_nifti_volume
from vipet.io.study import Study
from vipet.io.volume import Grid, Units, Volume
from vipet.preprocess.resample import resample_to_grid
from vipet.reports.schema import SECTIONS
from vipet.reports.vocab import nfc


@dataclass
class StudyReport:
    study_id: str
    lang: str
    text: str
    regions: list[RegionReport]
    context: StudyContext

    def numbered(self) -> Iterator[tuple[int, RegionReport, StatedLesion, Statement]]:
        """Every stated lesion of the study, numbered from 1 in reading order, with its
        region's report and the guard's verdict: the numbers report.json, the attention
        files and the viewer use."""
        n = 0
        for reg in self.regions:
            for s, verdict in zip(reg.stated, reg.guard.statements, strict=True):
                n += 1
                yield n, reg, s, verdict

    @property
    def guard_counts(self) -> dict[str, int]:
        """The guard's counts over all regions (supported, differs, unsupported, ...)."""
        out: dict[str, int] = {}
        for reg in self.regions:
            for k, v in reg.guard.counts.items():
                out[k] = out.get(k, 0) + v
        return out


def report_from_context(
    predictor: Predictor,
    ctx: StudyContext,
    lang: str = "vi",
    max_new_tokens: int = 400,
    guard: GuardConfig | None = None,
) -> StudyReport:
    """The report of a study encoded with attention, region by region, with evidence."""
    regions = [explain_region(predictor, ctx, r, lang, max_new_tokens, guard) for r in ctx.regions]
    text = merge_region_texts({r.region: r.text for r in regions}, lang)
    return StudyReport(ctx.study_id, lang, text, regions, ctx)


def make_report(
    predictor: Predictor,
    study: Study,
    lang: str = "vi",
    max_new_tokens: int = 400,
    guard: GuardConfig | None = None,
) -> StudyReport:
    """Encode ``study`` once and write its report (`report_from_context`)."""
    ctx = predictor.encode(study, with_attention=True)
    return report_from_context(predictor, ctx, lang, max_new_tokens, guard)


def nearest_voxel(grid: Grid, world_mm: Sequence[float]) -> list[int]:
    """The voxel of ``grid`` nearest a world point (clipped into the grid)."""
    idx = np.round(grid.world_to_index(np.asarray(world_mm, dtype=np.float64)))
    return [int(np.clip(v, 0, n - 1)) for v, n in zip(idx, grid.shape, strict=True)]


def attention_file(n: int, region: str) -> str:
    return f"attention/{n:02d}_{region}.nii.gz"


def config_hash(model: Any) -> str:
    """sha256 of the model's config (sorted JSON): which model wrote a report."""
    blob = json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def sections(text: str, lang: str) -> dict[str, str]:
    """``{section key: text}`` of a report laid out as `merge_region_texts` writes it."""
    by_heading = {nfc(vi if lang == "vi" else en): key for key, vi, en in SECTIONS}
    out: dict[str, str] = {}
    for line in text.splitlines():
        head, sep, body = line.partition(":")
        if sep and head.strip() in by_heading:
            out[by_heading[head.strip()]] = body.strip()
    return out


def _world(sample: Any, voxel: tuple[int, int, int]) -> list[float]:
    return [round(float(v), 1) for v in sample.grid.index_to_world(np.asarray(voxel))]


def report_dict(report: StudyReport, study: Study, model_name: str, model: Any) -> dict:
    """What report.json holds (see the module doc); attention files are named in it."""
    samples = {s.region: s for s in report.context.samples}
    stated = []
    for n, reg, s, verdict in report.numbered():
        peak = None
        if s.peak_voxel is not None:
            world = _world(samples[reg.region], s.peak_voxel)
            peak = {
                "region_voxel": list(s.peak_voxel),
                "world_mm": world,
                "ct_voxel": nearest_voxel(study.ct.grid, world),
            }
        stated.append(
            {
                "id": n,
                "region": reg.region,
                "sentence": s.sentence,
                **s.lesion,
                "guard": {
                    "status": verdict.status,
                    "differences": verdict.differences,
                    "looked_elsewhere": verdict.looked_elsewhere,
                },
                "detection": None if verdict.detection is None else reg.findings[verdict.detection],
                "attention": {
                    "on_its_detection": verdict.attention,
                    "on_slots": [round(v, 4) for v in s.slot_attention],
                    "peak": peak,
                    "map": attention_file(n, reg.region) if s.attention_map is not None else None,
                },
            }
        )
    omitted = [
        {"region": o.region, **o.finding} for reg in report.regions for o in reg.guard.omitted
    ]
    return {
        "study_id": report.study_id,
        "lang": report.lang,
        "text": report.text,
        "sections": sections(report.text, report.lang),
        "regions": {r.region: r.text for r in report.regions},
        "findings": stated,
        "omitted": omitted,
        "guard": report.guard_counts,
        "model": {
            "name": model_name,
            "vipet_version": vipet.__version__,
            "config_hash": config_hash(model),
        },
    }


def write_report(
    report: StudyReport, study: Study, out_dir: str | Path, model_name: str, model: Any
) -> dict[str, Path]:
    """Write the folder of the module doc; returns the paths written, by kind."""
    from vipet.viz.report_figure import write_report_figure

    dest = Path(out_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    tmp.chmod(0o755)  # mkdtemp's 0700 would stay on the renamed folder: readable by its owner only
    try:
        data = report_dict(report, study, model_name, model)
        (tmp / "report.txt").write_text(report.text + "\n", encoding="utf-8")
        (tmp / "report.json").write_text(
            json.dumps(data, ensure_ascii=False, indent=2, default=_plain), encoding="utf-8"
        )
        samples = {s.region: s for s in report.context.samples}
        maps: list[tuple[int, Volume]] = []
        for n, reg, s, _ in report.numbered():
            if s.attention_map is None:
                continue
            vol = Volume.on_grid(s.attention_map, samples[reg.region].grid, "OT", Units.NORMALISED)
            on_ct = resample_to_grid(vol, study.ct.grid, order=1, fill=0.0, antialias=False)
            (tmp / "attention").mkdir(exist_ok=True)
            write_nifti_volume(on_ct, tmp / attention_file(n, reg.region))
            maps.append((n, on_ct))
        write_report_figure(study, data, maps, tmp / "summary.png")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    out = {"text": dest / "report.txt", "json": dest / "report.json", "png": dest / "summary.png"}
    for f in data["findings"]:
        if f["attention"]["map"]:
            out[f"attention_{f['id']:02d}"] = dest / f["attention"]["map"]
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


__all__ = [
    "StudyReport",
    "make_report",
    "nearest_voxel",
    "report_dict",
    "report_from_context",
    "write_report",
]
