"""SUVbw arithmetic (vipet.io.suv): decay, injection date, calibration factor."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import pytest

from vipet.errors import InputError, MissingTagError, UnitsError, ViPetError
from vipet.io.suv import (
    decay_factor,
    resolve_injection_datetime,
    suv_bw_calibration,
)

F18 = 6586.2
INJECTED = datetime(2024, 5, 1, 9, 0, 0)
SCAN = datetime(2024, 5, 1, 10, 0, 0)


@pytest.mark.parametrize(
    ("minutes", "expected"),
    [
        (0, 1.0),
        (6586.2 / 60, 0.5),  # one half-life
        (2 * 6586.2 / 60, 0.25),
        (60, 0.6846329),  # 2^(-3600/6586.2)
    ],
)
def test_decay_factor(minutes: float, expected: float) -> None:
    reference = INJECTED + timedelta(minutes=minutes)
    assert decay_factor(F18, INJECTED, reference) == pytest.approx(expected, rel=1e-6)


def test_decay_factor_refuses_reference_before_injection() -> None:
    with pytest.raises(InputError, match="before the injection"):
        decay_factor(F18, SCAN, INJECTED)


def test_decay_factor_refuses_bad_half_life() -> None:
    with pytest.raises(InputError, match="half-life"):
        decay_factor(0.0, INJECTED, SCAN)


@pytest.mark.parametrize(
    ("reference", "start_datetime", "start_time", "expected"),
    [
        pytest.param(SCAN, None, time(9, 0), INJECTED, id="same-day"),
        pytest.param(
            datetime(2024, 5, 2, 0, 45),
            None,
            time(23, 40),
            datetime(2024, 5, 1, 23, 40),
            id="past-midnight",
        ),
        pytest.param(
            SCAN,
            datetime(2024, 4, 30, 9, 0),
            time(9, 30),
            datetime(2024, 4, 30, 9, 0),
            id="datetime-wins",
        ),
    ],
)
def test_resolve_injection_datetime(
    reference: datetime, start_datetime: datetime | None, start_time: time, expected: datetime
) -> None:
    assert resolve_injection_datetime(reference, start_datetime, start_time) == expected


def test_resolve_injection_datetime_missing() -> None:
    with pytest.raises(MissingTagError, match="--injection-time"):
        resolve_injection_datetime(SCAN)


def test_calibration_start() -> None:
    cal = suv_bw_calibration(70, 370e6, F18, INJECTED, SCAN, "SeriesDate/SeriesTime", "START")
    # 70 kg = 70 000 g; 370 MBq decayed 60 min: 370e6 × 0.6846329 = 253.314 MBq.
    assert cal.decay_factor == pytest.approx(0.6846329, rel=1e-6)
    assert cal.factor == pytest.approx(70_000 / 253.31418e6, rel=1e-6)
    assert cal.decay_correction == "START"
    assert cal.overridden == ()
    text = "\n".join(cal.describe())
    assert "SeriesDate/SeriesTime" in text and "uptake interval: 60.0 min" in text


def test_calibration_admin_does_not_decay() -> None:
    cal = suv_bw_calibration(70, 370e6, F18, INJECTED, SCAN, "SeriesDate/SeriesTime", "ADMIN")
    assert cal.decay_factor == 1.0
    assert cal.factor == pytest.approx(70_000 / 370e6)


@pytest.mark.parametrize("mode", ["NONE", "", "weird"])
def test_calibration_refuses_no_decay_correction(mode: str) -> None:
    with pytest.raises(UnitsError, match="DecayCorrection"):
        suv_bw_calibration(70, 370e6, F18, INJECTED, SCAN, "x", mode)


@pytest.mark.parametrize(
    ("weight", "dose", "units"),
    [(0.0, 370e6, "BQML"), (70.0, -1.0, "BQML"), (70.0, 370e6, "CNTS")],
)
def test_calibration_refuses_bad_inputs(weight: float, dose: float, units: str) -> None:
    with pytest.raises(ViPetError):
        suv_bw_calibration(weight, dose, F18, INJECTED, SCAN, "x", "START", units=units)
