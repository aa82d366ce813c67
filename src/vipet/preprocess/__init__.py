"""Preprocessing: world-space resampling, intensity scaling, body regions, ROI masks, cache."""

from __future__ import annotations

from vipet.preprocess.pipeline import PreprocessConfig, RegionSample, preprocess_study

__all__ = ["PreprocessConfig", "RegionSample", "preprocess_study"]
