"""Intensity transforms: pure array functions (MONAI style), no geometry involved."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def window_hu(x: np.ndarray, lo: float = -1000.0, hi: float = 1000.0) -> np.ndarray:
    """CT window: HU clipped to [lo, hi] and mapped linearly to [0, 1] (float32)."""
    if not hi > lo:
        raise ValueError(f"HU window needs hi > lo, got [{lo}, {hi}]")
    out = (np.asarray(x, dtype=np.float32) - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def scale_linear(x: np.ndarray, vmax: float) -> np.ndarray:
    """Values clipped to [0, vmax] and divided by vmax: 0..1, linear."""
    if not vmax > 0:
        raise ValueError(f"vmax must be positive, got {vmax}")
    out = np.clip(np.asarray(x, dtype=np.float32), 0.0, vmax)
    out *= np.float32(1.0 / vmax)
    return out


def scale_log(x: np.ndarray, vmax: float) -> np.ndarray:
    """``log1p(clip(x, 0, vmax)) / log1p(vmax)``: 0..1 with the low range spread out.

    For SUV with vmax 30 this keeps a liver (2), a borderline node (4) and a hot tumour
    (25) apart without saturating, and 0.5 falls at SUV ≈ 4.6 — where the PET-derived
    ROI mask's "normalised PET > 0.5" rule then selects clearly avid tissue.
    """
    if not vmax > 0:
        raise ValueError(f"vmax must be positive, got {vmax}")
    out = np.clip(np.asarray(x, dtype=np.float32), 0.0, vmax)
    np.log1p(out, out=out)
    out *= np.float32(1.0 / np.log1p(vmax))
    return out


PET_SCALINGS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "linear": scale_linear,
    "log": scale_log,
}


def scale_pet(x: np.ndarray, scaling: str, vmax: float) -> np.ndarray:
    """Apply a registered PET scaling by name."""
    try:
        fn = PET_SCALINGS[scaling]
    except KeyError:
        raise ValueError(
            f"unknown PET scaling {scaling!r}; choose from {sorted(PET_SCALINGS)}"
        ) from None
    return fn(x, vmax)


def percentile_clip_value(x: np.ndarray, q: float = 99.5) -> float:
    """The q-th percentile of positive values (a robust upper clip for raw PET)."""
    pos = np.asarray(x)[np.asarray(x) > 0]
    return float(np.percentile(pos, q)) if pos.size else 1.0
