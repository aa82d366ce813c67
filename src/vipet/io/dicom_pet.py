"""PET calibration from DICOM headers: which tags (or user overrides) feed the SUV factor.

The arithmetic lives in `vipet.io.suv`; this module reads DICOM dates and times, picks the
scan reference time, and decides per DICOM ``Units`` what the stored values mean:

- ``BQML``: activity concentration; SUVbw factor from weight, dose and decay (QIBA).
- ``GML``: the scanner already stored SUVbw (g/mL); used as is, no factor recorded.
- ``CNTS``: counts; only Philips scanners record the SUV scale factor that makes them
  SUVbw (private (7053,1000)), otherwise refused.
- anything else: refused with `UnitsError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from pydicom.dataset import Dataset

from vipet.errors import InputError, MissingTagError, UnitsError, ViPetError
from vipet.io.dicom_series import DicomSeries
from vipet.io.study import LoadOptions
from vipet.io.suv import SuvCalibration, resolve_injection_datetime, suv_bw_calibration

PHILIPS_PET_CREATOR = "Philips PET Private Group"


def parse_da(value: Any) -> date | None:
    """DICOM DA ``YYYYMMDD`` (also the old ``YYYY.MM.DD``) → date; blank → None."""
    text = str(value or "").strip().replace(".", "").replace("-", "")
    if not text:
        return None
    try:
        return datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError as exc:
        raise InputError(f"malformed DICOM date {value!r}") from exc


def parse_tm(value: Any) -> time | None:
    """DICOM TM ``HH[MM[SS[.FFFFFF]]]`` (also the old ``HH:MM:SS``) → time; blank → None."""
    text = str(value or "").strip().replace(":", "")
    if not text:
        return None
    whole, _, frac = text.partition(".")
    try:
        hour, minute, second = int(whole[0:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
        micro = int((frac + "000000")[:6]) if frac else 0
        # Leap second "60" is legal in TM; fold it into 59 rather than fail.
        return time(hour, minute, min(second, 59), micro)
    except ValueError as exc:
        raise InputError(f"malformed DICOM time {value!r}") from exc


def parse_dt(value: Any) -> datetime | None:
    """DICOM DT ``YYYYMMDDHHMMSS.FFFFFF&ZZXX`` → naive datetime; blank → None.

    The UTC offset, when present, is dropped: the other PET times (TM) carry none, and
    only differences between them matter.
    """
    text = str(value or "").strip()
    if not text:
        return None
    for sign in ("+", "-"):
        text = text.split(sign)[0]
    day = parse_da(text[:8])
    clock = parse_tm(text[8:]) if len(text) > 8 else time(0)
    return datetime.combine(day, clock) if day is not None else None


def header_datetime(ds: Dataset, date_keyword: str, time_keyword: str) -> datetime | None:
    """``date_keyword`` + ``time_keyword`` of a header, or None when the time is absent."""
    clock = parse_tm(ds.get(time_keyword))
    day = parse_da(ds.get(date_keyword))
    if clock is None or day is None:
        return None
    return datetime.combine(day, clock)


def _acquisition_times(
    series: DicomSeries, scan_day: date | None, series_time: datetime | None
) -> list[datetime]:
    times = []
    for ds in series.headers:
        clock = parse_tm(ds.get("AcquisitionTime"))
        day = parse_da(ds.get("AcquisitionDate"))
        if clock is None or (day is None and scan_day is None):
            continue
        when = datetime.combine(day or scan_day, clock)  # type: ignore[arg-type]
        if day is None and series_time is not None and series_time - when > timedelta(hours=12):
            # Undated, and clocked long before the series began: the scan crossed midnight.
            when += timedelta(days=1)
        times.append(when)
    return times


def scan_reference_time(series: DicomSeries) -> tuple[datetime, str]:
    """The time the dose is decayed to, and which tags gave it (QIBA's vendor-neutral rule).

    SeriesDate/SeriesTime is the scan start for decay correction "START". Some scanners
    rewrite SeriesTime when a series is post-processed or re-saved, which puts it *after*
    the first bed position was acquired; then the earliest AcquisitionDate/AcquisitionTime
    of the series is the better scan start. (AutoPET's conversion used AcquisitionTime.)
    """
    first = series.first
    scan_day = parse_da(first.get("SeriesDate")) or parse_da(first.get("StudyDate"))
    series_clock = parse_tm(first.get("SeriesTime"))
    series_time = None
    if scan_day is not None and series_clock is not None:
        series_time = datetime.combine(scan_day, series_clock)
    acquired = _acquisition_times(series, scan_day, series_time)
    earliest = min(acquired) if acquired else None
    if series_time is None and earliest is None:
        raise MissingTagError(
            "no scan time: SeriesDate/SeriesTime (0008,0021/0031) and "
            "AcquisitionDate/AcquisitionTime (0008,0022/0032) are absent",
            series.files[0],
        )
    if series_time is None and earliest is not None:
        return earliest, "AcquisitionDate/AcquisitionTime (earliest; no SeriesTime)"
    if earliest is not None and series_time is not None and series_time > earliest:
        return earliest, "AcquisitionDate/AcquisitionTime (earliest; SeriesTime is later)"
    return series_time, "SeriesDate/SeriesTime"  # type: ignore[return-value]


def _positive(value: Any) -> float | None:
    """A numeric header value, or None when blank, zero or junk (anonymisers zero them)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


@dataclass(frozen=True)
class PetScaling:
    """How to turn rescaled PET values into SUVbw: ``suv = value × factor``."""

    factor: float
    suv: SuvCalibration | None  # None when the factor does not come from weight/dose/decay
    units: str  # DICOM Units of the stored values
    note: str  # one line for study.meta


def _radiopharmaceutical(ds: Dataset) -> Dataset:
    items = ds.get("RadiopharmaceuticalInformationSequence") or []
    return items[0] if len(items) else Dataset()


def _injection_time(drug: Dataset, reference: datetime, options: LoadOptions) -> datetime | None:
    """Injection date and time from the override or the tags; None when neither exists."""
    if options.injection_time is not None:
        return resolve_injection_datetime(reference, start_time=options.injection_time)
    start_dt = parse_dt(drug.get("RadiopharmaceuticalStartDateTime"))
    start_tm = parse_tm(drug.get("RadiopharmaceuticalStartTime"))
    if start_dt is None and start_tm is None:
        return None
    return resolve_injection_datetime(reference, start_dt, start_tm)


def bqml_calibration(series: DicomSeries, options: LoadOptions) -> SuvCalibration:
    """SUVbw calibration of a BQML series from its tags and the user's overrides.

    Every missing input is named in one `MissingTagError` (tag and CLI flag), so a user
    fixes an anonymised header in one go.
    """
    ds, path = series.first, series.files[0]
    drug = _radiopharmaceutical(ds)
    reference, source = scan_reference_time(series)
    weight = options.weight_kg or _positive(ds.get("PatientWeight"))
    dose = (
        options.dose_mbq * 1e6 if options.dose_mbq else _positive(drug.get("RadionuclideTotalDose"))
    )
    half_life = options.half_life_s or _positive(drug.get("RadionuclideHalfLife"))
    injection = _injection_time(drug, reference, options)
    needed = (
        (weight, "PatientWeight (0010,1030) — give --weight-kg"),
        (dose, "RadionuclideTotalDose (0018,1074) — give --dose-mbq"),
        (half_life, "RadionuclideHalfLife (0018,1075) — give --half-life-s (F-18: 6586.2)"),
        (
            injection,
            "RadiopharmaceuticalStartDateTime (0018,1078) / RadiopharmaceuticalStartTime "
            "(0018,1072) — give --injection-time",
        ),
    )
    missing = [text for value, text in needed if value is None]
    if missing:
        raise MissingTagError("cannot compute SUVbw, missing or zero: " + "; ".join(missing), path)
    decay = str(ds.get("DecayCorrection") or "").strip().upper()
    if not decay:
        raise MissingTagError("DecayCorrection (0054,1102) is absent; cannot place the dose", path)
    overrides = {
        "weight_kg": options.weight_kg,
        "dose_mbq": options.dose_mbq,
        "injection_time": options.injection_time,
        "half_life_s": options.half_life_s,
    }
    return suv_bw_calibration(
        weight,  # type: ignore[arg-type]
        dose,  # type: ignore[arg-type]
        half_life,  # type: ignore[arg-type]
        injection,  # type: ignore[arg-type]
        reference,
        source,
        decay,
        units="BQML",
        overridden=[name for name, value in overrides.items() if value is not None],
    )


def _philips_suv_factor(ds: Dataset) -> float | None:
    try:
        element = ds.get_private_item(0x7053, 0x00, PHILIPS_PET_CREATOR)
    except KeyError:
        return None
    value = element.value
    if isinstance(value, bytes):  # implicit VR without a private dictionary entry
        value = value.decode("ascii", errors="ignore").strip("\x00 ")
    return _positive(value)


def pet_scaling(series: DicomSeries, options: LoadOptions) -> PetScaling:
    """Decide, from DICOM Units, how the series' values become SUVbw (see module doc).

    Every error names the file whose header gave the inputs.
    """
    try:
        return _scaling_for_units(series, options)
    except ViPetError as exc:
        if exc.path is not None:
            raise
        raise type(exc)(str(exc), series.files[0]) from exc


def _scaling_for_units(series: DicomSeries, options: LoadOptions) -> PetScaling:
    ds, path = series.first, series.files[0]
    units = str(ds.get("Units") or "").strip().upper()
    if units == "BQML":
        calibration = bqml_calibration(series, options)
        return PetScaling(calibration.factor, calibration, units, "SUVbw from BQML (QIBA)")
    if units == "GML":
        return PetScaling(1.0, None, units, "DICOM Units GML: values are already SUVbw")
    if units == "CNTS":
        factor = _philips_suv_factor(ds)
        if factor is not None:
            note = "SUVbw from Philips private SUV scale factor (7053,1000) on CNTS"
            return PetScaling(factor, None, units, note)
        raise UnitsError(
            "PET Units is CNTS (scanner counts) and no Philips SUV scale factor (7053,1000) "
            "is present; export the series in BQML (activity concentration) instead",
            path,
        )
    shown = units or "absent"
    raise UnitsError(
        f"PET Units (0054,1001) is {shown}: only BQML, GML and Philips CNTS can become SUVbw",
        path,
    )


def as_meta(scaling: PetScaling) -> dict[str, Any]:
    """What study.meta records about the PET calibration."""
    return {"pet_units": scaling.units, "suv_note": scaling.note, "suv_factor": scaling.factor}
