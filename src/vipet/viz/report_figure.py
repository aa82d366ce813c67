"""`vipet report`'s summary picture: the report's findings on the images.

Top: the PET maximum-intensity projection (coronal, inverted grey) with every stated
lesion numbered where its attention map peaks, coloured by the consistency guard's
verdict (green supported, orange differs, red unsupported), and a fused coronal slice
through the first lesion. Below, one panel per stated lesion (the first eight): a fused
axial slice through its attention peak with the map's outline (half its maximum) and
its number, type, place and verdict. All on the whole-body display grid of
`vipet.viz.study_figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from vipet.inference.bundle import nearest_voxel
from vipet.io.study import Study
from vipet.io.volume import Units, Volume
from vipet.preprocess.pipeline import resample_pair
from vipet.preprocess.resample import resample_to_grid
from vipet.viz.study_figure import _fused, _save, display_grid

STATUS_COLOURS = {"supported": "#2ca02c", "differs": "#ff7f0e", "unsupported": "#d62728"}
MAX_PANELS = 8


def _label(f: Mapping[str, Any]) -> str:
    place = f.get("location_detail") or f.get("location") or "?"
    side = f.get("laterality")
    if side and side not in ("none", "both"):
        place += f" ({side[0].upper()})"
    return f"{f['id']}. {f['type'].replace('_', ' ')}, {place.replace('_', ' ')}"


def write_report_figure(
    study: Study,
    report: Mapping[str, Any],
    maps: Sequence[tuple[int, Volume]],
    path: Path,
) -> Path:
    """``report``: report.json's dict; ``maps``: (finding id, attention map on any grid)."""
    grid = display_grid(study)
    ct, pet = resample_pair(study, grid)
    suv = pet.array
    vmax = 10.0 if study.pet.units is Units.SUVBW else float(np.percentile(suv, 99.5) or 1.0)
    sz, sy, sx = grid.spacing
    on_grid = {i: resample_to_grid(m, grid, order=1, fill=0.0).array for i, m in maps}
    findings = list(report["findings"])
    peaks: dict[int, tuple[int, int, int]] = {}
    for f in findings:
        peak = f["attention"]["peak"]
        if peak is None:
            continue
        d, h, w = nearest_voxel(grid, peak["world_mm"])
        peaks[f["id"]] = (d, h, w)

    shown = findings[:MAX_PANELS]
    cols = max(4, len(shown))
    fig = plt.figure(figsize=(2.6 * cols, 9.5 if shown else 6.5))
    rows = 2 if shown else 1
    gs = fig.add_gridspec(rows, cols, height_ratios=[1.7, 1][:rows])
    half = cols // 2
    ax_mip = fig.add_subplot(gs[0, :half])
    ax_cor = fig.add_subplot(gs[0, half:])
    ax_mip.imshow(suv.max(axis=1), cmap="gray_r", vmin=0, vmax=vmax, aspect=sz / sx)
    ax_mip.set_title("PET MIP (coronal): stated lesions")
    first = peaks.get(shown[0]["id"]) if shown else None
    row = first[1] if first else grid.shape[1] // 2
    _fused(ax_cor, ct.array[:, row, :], suv[:, row, :], vmax, aspect=sz / sx)
    ax_cor.set_title(f"fused coronal (row {row})")
    for f in findings:
        if f["id"] not in peaks:
            continue
        d, _, w = peaks[f["id"]]
        c = STATUS_COLOURS.get(f["guard"]["status"], "w")
        for ax in (ax_mip, ax_cor):
            ax.plot(w, d, "o", ms=11, mfc="none", mec=c, mew=2)
            ax.text(w + 6, d, str(f["id"]), color=c, fontsize=10, weight="bold")
    for i, f in enumerate(shown):
        ax = fig.add_subplot(gs[1, i])
        d = peaks[f["id"]][0] if f["id"] in peaks else grid.shape[0] // 2
        _fused(ax, ct.array[d], suv[d], vmax, aspect=sy / sx)
        amap = on_grid.get(f["id"])
        if amap is not None and amap[d].max() > 0:
            ax.contour(amap[d], levels=[0.5 * float(amap.max())], colors="cyan", linewidths=1.2)
        c = STATUS_COLOURS.get(f["guard"]["status"], "k")
        ax.set_title(f"{_label(f)}\n{f['guard']['status']}", fontsize=8, color=c)
    for ax in fig.axes:
        ax.set_xticks([])
        ax.set_yticks([])
    counts = report.get("guard", {})
    fig.suptitle(
        f"{report['study_id']} — {report['model']['name']} — guard: "
        + ", ".join(f"{k} {v}" for k, v in counts.items()),
        fontsize=11,
    )
    return _save(fig, path, dpi=80)
