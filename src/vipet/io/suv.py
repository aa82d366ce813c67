"""SUVbw calibration of PET activity (DOMAIN.md §5).

``SUVbw = activity [Bq/mL] × weight [g] / decay-corrected dose [Bq]``.

This module holds the pure arithmetic and the record of how a factor was obtained; the
DICOM reader gathers the inputs from tags (or user overrides) and calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class SuvCalibration:
    """How PET values were turned into SUVbw: the factor and every input behind it."""

    factor: float  # SUVbw = activity_Bq_per_mL × factor
    weight_kg: float
    injected_dose_bq: float
    half_life_s: float
    injection_time: datetime
    reference_time: datetime  # time the dose is decayed to (scan start for START)
    reference_source: str  # which tag gave reference_time, e.g. "SeriesDate/SeriesTime"
    decay_correction: str  # DICOM DecayCorrection: "START", "ADMIN" or "NONE"
    decay_factor: float  # multiplies the dose; 1.0 when no decay correction is needed
    units: str = "BQML"  # DICOM Units of the stored values
    overridden: tuple[str, ...] = ()  # inputs the user supplied instead of tags

    def describe(self) -> list[str]:
        """Human-readable lines for `vipet inspect`."""
        src = lambda name: " (user override)" if name in self.overridden else ""  # noqa: E731
        dt = (self.reference_time - self.injection_time).total_seconds()
        return [
            f"SUVbw factor: {self.factor:.6g} (SUV per Bq/mL)",
            f"  patient weight: {self.weight_kg:g} kg{src('weight_kg')}",
            f"  injected dose: {self.injected_dose_bq / 1e6:.2f} MBq{src('dose_mbq')}",
            f"  injection time: {self.injection_time.isoformat(sep=' ')}{src('injection_time')}",
            f"  reference time: {self.reference_time.isoformat(sep=' ')} ({self.reference_source})",
            f"  uptake interval: {dt / 60:.1f} min; half-life {self.half_life_s:g} s",
            f"  decay correction: {self.decay_correction} -> dose x {self.decay_factor:.4f}",
            f"  stored units: {self.units}",
        ]
