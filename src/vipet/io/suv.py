"""SUVbw calibration of PET activity (DOMAIN.md §5).

``SUVbw = activity [Bq/mL] × weight [g] / decay-corrected dose [Bq]``.

This module holds the pure arithmetic and the record of how a factor was obtained; the
DICOM reader gathers the inputs from tags (or user overrides) and calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from vipet.errors import InputError, MissingTagError, UnitsError


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
            f"  uptake interval: {dt / 60:.1f} min; half-life {self.half_life_s:g} s"
            f"{src('half_life_s')}",
            f"  decay correction: {self.decay_correction} -> dose x {self.decay_factor:.4f}",
            f"  stored units: {self.units}",
        ]


def decay_factor(half_life_s: float, injection_time: datetime, reference_time: datetime) -> float:
    """Fraction of the injected activity left at ``reference_time``: ``2^(−Δt/T½)``.

    Raises `InputError` when the reference time precedes the injection (Δt < 0): that
    means a wrong clock or date in the header, and a factor above 1 would silently
    understate every SUV.
    """
    if not half_life_s > 0:
        raise InputError(f"radionuclide half-life must be positive, got {half_life_s} s")
    dt = (reference_time - injection_time).total_seconds()
    if dt < 0:
        raise InputError(
            f"scan reference time {reference_time.isoformat(sep=' ')} is before the injection "
            f"time {injection_time.isoformat(sep=' ')}; check the header times or give "
            "--injection-time"
        )
    return float(2.0 ** (-dt / half_life_s))


def resolve_injection_datetime(
    reference_time: datetime,
    start_datetime: datetime | None = None,
    start_time: time | None = None,
) -> datetime:
    """The injection date and time.

    ``start_datetime`` (RadiopharmaceuticalStartDateTime) is used as is when given.
    Otherwise ``start_time`` (RadiopharmaceuticalStartTime, or the user's
    ``--injection-time``) carries no date, so it takes the scan's date; if that puts the
    injection after the scan, the patient was injected before midnight and scanned after
    it, so the injection was the previous day.
    """
    if start_datetime is not None:
        return start_datetime
    if start_time is None:
        raise MissingTagError(
            "injection time unknown: RadiopharmaceuticalStartDateTime (0018,1078) and "
            "RadiopharmaceuticalStartTime (0018,1072) are both absent; give --injection-time"
        )
    candidate = datetime.combine(reference_time.date(), start_time)
    if candidate > reference_time:
        candidate -= timedelta(days=1)
    return candidate


def suv_bw_calibration(
    weight_kg: float,
    dose_bq: float,
    half_life_s: float,
    injection_time: datetime,
    reference_time: datetime,
    reference_source: str,
    decay_correction: str,
    units: str = "BQML",
    overridden: Sequence[str] = (),
) -> SuvCalibration:
    """SUVbw factor (SUV per Bq/mL) = weight [g] / decay-corrected dose [Bq].

    ``decay_correction`` is DICOM DecayCorrection (0054,1102):

    - ``"START"``: images are decay-corrected to the series start (``reference_time``),
      so the dose is decayed from injection to that time;
    - ``"ADMIN"``: images are already decay-corrected to the injection time, so the dose
      is used as injected (factor 1);
    - anything else, ``"NONE"`` included, is **refused** with `UnitsError`: uncorrected
      images would need a different dose decay per slice (each slice's own acquisition
      time and frame duration), which one factor cannot express, and a single factor
      would be wrong by up to the whole-body scan time (~15 % for F-18).
    """
    if units != "BQML":
        raise UnitsError(f"SUVbw calibration needs activity in BQML, got Units {units!r}")
    for name, value in (("weight_kg", weight_kg), ("dose_bq", dose_bq)):
        if not value > 0:
            raise InputError(f"{name} must be positive for SUVbw, got {value}")
    mode = decay_correction.strip().upper()
    if mode == "START":
        decay = decay_factor(half_life_s, injection_time, reference_time)
    elif mode == "ADMIN":
        if not half_life_s > 0:
            raise InputError(f"radionuclide half-life must be positive, got {half_life_s} s")
        decay = 1.0
    else:
        raise UnitsError(
            f"PET DecayCorrection is {decay_correction!r}: only START and ADMIN are supported; "
            "images without decay correction need a per-slice dose decay that ViPET does not "
            "apply — reconstruct with decay correction to scan start"
        )
    factor = weight_kg * 1000.0 / (dose_bq * decay)
    return SuvCalibration(
        factor=factor,
        weight_kg=float(weight_kg),
        injected_dose_bq=float(dose_bq),
        half_life_s=float(half_life_s),
        injection_time=injection_time,
        reference_time=reference_time,
        reference_source=reference_source,
        decay_correction=mode,
        decay_factor=decay,
        units=units,
        overridden=tuple(overridden),
    )
