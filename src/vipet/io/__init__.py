"""Study I/O: the `Volume` and `Study` types and readers for every supported layout."""

from __future__ import annotations

from vipet.io.layouts import LAYOUTS, Layout, StudyRef, detect_layout, find_studies, load_study
from vipet.io.study import LoadOptions, Study
from vipet.io.suv import SuvCalibration
from vipet.io.volume import Grid, Units, Volume

__all__ = [
    "LAYOUTS",
    "Grid",
    "Layout",
    "LoadOptions",
    "Study",
    "StudyRef",
    "SuvCalibration",
    "Units",
    "Volume",
    "detect_layout",
    "find_studies",
    "load_study",
]
