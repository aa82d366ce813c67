"""A PET/CT study: CT and PET volumes with what is known about the patient."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import time
from pathlib import Path
from typing import Any

from vipet.errors import ConfigError
from vipet.io.suv import SuvCalibration
from vipet.io.volume import Units, Volume


@dataclass(frozen=True)
class LoadOptions:
    """Choices a user can make when loading a study (CLI flags map onto these)."""

    series: tuple[str, ...] = ()
    """DICOM series to use when a folder holds several: SeriesInstanceUID, or SeriesNumber
    as text. Needed only when the choice is ambiguous."""
    weight_kg: float | None = None
    """Patient weight overriding PatientWeight (anonymised data often blanks it)."""
    dose_mbq: float | None = None
    """Injected activity overriding RadionuclideTotalDose."""
    injection_time: time | None = None
    """Injection clock time overriding RadiopharmaceuticalStartTime (date taken from the scan)."""
    half_life_s: float | None = None
    """Radionuclide half-life in seconds overriding RadionuclideHalfLife (F-18: 6586.2)."""
    uneven_slices: str = "resample"
    """Uneven DICOM slice spacing: "resample" onto the median spacing, or "refuse"."""
    study_id: str | None = None
    """Which study of a multi-study layout (ViMed-PET row name, nnU-Net case id)."""
    pet_units: Units | None = None
    """Units of PET values in formats that do not record them (NIfTI): None takes the
    layout's convention (SUVbw for AutoPET SUV.nii.gz and NIfTI pairs)."""

    def __post_init__(self) -> None:
        if self.uneven_slices not in ("resample", "refuse"):
            raise ConfigError(
                f"uneven_slices must be 'resample' or 'refuse', got {self.uneven_slices!r}"
            )
        if self.pet_units is not None:
            object.__setattr__(self, "pet_units", Units(self.pet_units))
        for name in ("weight_kg", "dose_mbq", "half_life_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be positive, got {value}")


@dataclass(frozen=True, eq=False)
class Study:
    """One PET/CT examination.

    ``ct`` is in HU; ``pet`` in SUVbw when calibration is known, else BQML or raw. The two
    volumes keep their own grids: aligning them is preprocessing's job, in world space.
    """

    id: str
    ct: Volume
    pet: Volume
    layout: str = "unknown"  # which reader produced it (see vipet.io.layouts)
    source: Path | None = None
    sex: str | None = None  # "M" / "F"
    age: float | None = None  # years
    weight_kg: float | None = None
    height_cm: float | None = None
    report: dict[str, Any] | None = None  # ViMed-PET JSON structure (Vietnamese)
    report_en: dict[str, Any] | None = None
    lesion_mask: Volume | None = None  # Units.LABEL; on its own grid (often the PET's)
    lesions: tuple[dict[str, Any], ...] | None = None
    suv: SuvCalibration | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ct.units is not Units.HU:
            raise ConfigError(f"study {self.id}: CT must be in HU, got {self.ct.units.value}")
        if self.lesion_mask is not None and self.lesion_mask.units is not Units.LABEL:
            raise ConfigError(f"study {self.id}: lesion mask must have units 'label'")

    def replace(self, **changes: Any) -> Study:
        return replace(self, **changes)

    def describe(self) -> list[str]:
        lines = [f"study {self.id} (layout: {self.layout})"]
        if self.source is not None:
            lines.append(f"  source: {self.source}")
        patient = [
            f"sex {self.sex or '?'}",
            f"age {self.age:g} y" if self.age is not None else "age ?",
            f"weight {self.weight_kg:g} kg" if self.weight_kg is not None else "weight ?",
            f"height {self.height_cm:g} cm" if self.height_cm is not None else "height ?",
        ]
        lines.append("  patient: " + ", ".join(patient))
        lines.append("  " + self.ct.describe())
        lines.append("  " + self.pet.describe())
        if self.lesion_mask is not None:
            lines.append("  lesion mask: " + self.lesion_mask.describe())
        if self.lesions is not None:
            lines.append(f"  lesions listed: {len(self.lesions)}")
        if self.report is not None:
            lines.append(f"  report: {len(self.report)} top-level keys")
        return lines
