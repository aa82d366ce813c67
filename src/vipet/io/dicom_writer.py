"""Write volumes as DICOM CT and PET series (for the synthetic phantom and the demo).

CT is stored as signed 16-bit with RescaleIntercept −1024; PET as activity concentration
(Units BQML, decay-corrected to the series start), signed 16-bit with a per-slice
RescaleSlope that makes each slice use the full range. Reading a written study back with
`vipet.io.dicom` reproduces the HU, the SUVbw (to int16 quantisation) and the geometry.

Slices are written one per file along the volume's D axis. DICOM readers order slices
along row cosine × column cosine; a volume whose D axis points the other way (a
left-handed direction) therefore reads back as the same image in world space with its D
axis reversed.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    PositronEmissionTomographyImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from vipet.errors import ConfigError, InputError, UnitsError
from vipet.io.study import Study
from vipet.io.suv import suv_bw_calibration
from vipet.io.volume import Units, Volume

F18_HALF_LIFE_S = 6586.2
_SOP_CLASSES = {"CT": CTImageStorage, "PT": PositronEmissionTomographyImageStorage}
_INT16_MAX = 32767
_CT_INTERCEPT = -1024.0


@dataclass(frozen=True)
class PetAcquisition:
    """The radiopharmaceutical and timing a PET series is written with."""

    injected_dose_bq: float
    injection_time: datetime
    series_time: datetime  # scan start: SeriesTime and AcquisitionTime of every slice
    half_life_s: float = F18_HALF_LIFE_S
    decay_correction: str = "START"  # "START" or "ADMIN"
    radiopharmaceutical: str = "Fluorodeoxyglucose"

    def __post_init__(self) -> None:
        if not self.injected_dose_bq > 0 or not self.half_life_s > 0:
            raise ConfigError("PET acquisition needs a positive injected dose and half-life")
        if self.series_time < self.injection_time:
            raise ConfigError("PET series time is before the injection time")
        if self.decay_correction not in ("START", "ADMIN"):
            raise ConfigError(
                f"decay_correction must be START or ADMIN, not {self.decay_correction!r}"
            )


def _ds(value: float) -> str:
    return format_number_as_ds(float(value))


def _da(when: datetime) -> str:
    return when.strftime("%Y%m%d")


def _tm(when: datetime) -> str:
    return when.strftime("%H%M%S") + (f".{when.microsecond:06d}" if when.microsecond else "")


@contextmanager
def _atomic_folder(folder: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``folder``, renamed onto it when the block succeeds.

    Refuses a ``folder`` that exists and is not empty, so nothing is ever overwritten; a
    failure leaves no partial folder behind.
    """
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InputError("refusing to overwrite: the output folder exists and is not empty", folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield tmp
        if folder.exists():
            folder.rmdir()  # empty (checked above); rename cannot replace a directory
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _patient_tags(ds: Dataset, patient: dict[str, Any]) -> None:
    ds.PatientName = str(patient.get("name", "Anonymous"))
    ds.PatientID = str(patient.get("id", "VIPET"))
    ds.PatientSex = {"M": "M", "F": "F"}.get(str(patient.get("sex") or ""), "O")
    if patient.get("age") is not None:
        ds.PatientAge = f"{int(patient['age']):03d}Y"
    if patient.get("weight_kg") is not None:
        ds.PatientWeight = _ds(patient["weight_kg"])
    if patient.get("height_cm") is not None:
        ds.PatientSize = _ds(float(patient["height_cm"]) / 100.0)


def _pet_tags(ds: Dataset, pet: PetAcquisition) -> None:
    ds.Units = "BQML"
    ds.DecayCorrection = pet.decay_correction
    ds.CorrectedImage = ["ATTN", "DECY"]
    drug = Dataset()
    drug.Radiopharmaceutical = pet.radiopharmaceutical
    drug.RadionuclideTotalDose = _ds(pet.injected_dose_bq)
    drug.RadionuclideHalfLife = _ds(pet.half_life_s)
    drug.RadiopharmaceuticalStartTime = _tm(pet.injection_time)
    drug.RadiopharmaceuticalStartDateTime = _da(pet.injection_time) + _tm(pet.injection_time)
    ds.RadiopharmaceuticalInformationSequence = DicomSequence([drug])


def _series_dataset(
    modality: str, series: dict[str, Any], patient: dict[str, Any], when: datetime
) -> Dataset:
    """Tags shared by every slice of a series."""
    ds = Dataset()
    ds.SOPClassUID = _SOP_CLASSES[modality]
    ds.Modality = modality
    ds.StudyInstanceUID = series["study_uid"]
    ds.SeriesInstanceUID = series["series_uid"]
    ds.FrameOfReferenceUID = series["frame_uid"]
    ds.SeriesNumber = int(series["number"])
    ds.SeriesDescription = series["description"]
    ds.StudyID = "1"
    ds.Manufacturer = "ViPET"
    for prefix in ("Study", "Series", "Acquisition", "Content"):
        setattr(ds, f"{prefix}Date", _da(when))
        setattr(ds, f"{prefix}Time", _tm(when))
    _patient_tags(ds, patient)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1  # signed
    return ds


def _quantise(
    volume: Volume, modality: str, factor: float
) -> Iterator[tuple[np.ndarray, float, float]]:
    """Per slice: int16 stored values, RescaleSlope, RescaleIntercept."""
    for values in volume.array:
        if modality == "CT":
            hu = np.clip(np.rint(values), -32768 + _CT_INTERCEPT, _INT16_MAX + _CT_INTERCEPT)
            yield (hu - _CT_INTERCEPT).astype(np.int16), 1.0, _CT_INTERCEPT
            continue
        activity = np.asarray(values, dtype=np.float64) / factor  # SUV → Bq/mL
        peak = float(np.max(np.abs(activity)))
        # The slope as DICOM will store it (DS, 16 characters), so stored × slope is exact.
        slope = float(_ds(peak / _INT16_MAX)) if peak > 0 else 1.0
        stored = np.clip(np.rint(activity / slope), -_INT16_MAX, _INT16_MAX)
        yield stored.astype(np.int16), slope, 0.0


def _to_bqml_factor(volume: Volume, patient: dict[str, Any], pet: PetAcquisition | None) -> float:
    """Divisor taking the volume's values to Bq/mL (1 for CT and BQML PET)."""
    if volume.units is Units.BQML or volume.modality == "CT":
        return 1.0
    weight = patient.get("weight_kg")
    if pet is None or weight is None:
        raise InputError("writing SUVbw PET needs a PetAcquisition and the patient's weight_kg")
    calibration = suv_bw_calibration(
        weight,
        pet.injected_dose_bq,
        pet.half_life_s,
        pet.injection_time,
        pet.series_time,
        "SeriesDate/SeriesTime",
        pet.decay_correction,
    )
    return calibration.factor


def _check_writable(volume: Volume, modality: str, pet: PetAcquisition | None) -> None:
    """Refuse what cannot be stored: other modalities, wrong units, NaN/inf values."""
    if modality not in _SOP_CLASSES:
        raise InputError(f"cannot write modality {modality!r}; choose from {sorted(_SOP_CLASSES)}")
    if modality == "CT":
        volume.require_units(Units.HU, purpose="writing a DICOM CT series")
    else:
        volume.require_units(Units.SUVBW, Units.BQML, purpose="writing a DICOM PET series")
        if pet is None:
            raise UnitsError("writing a DICOM PET series needs a PetAcquisition")
    volume.check_finite(f"writing a DICOM {modality} series")


def write_dicom_series(
    volume: Volume,
    folder: Path,
    *,
    modality: str,
    series_number: int,
    series_description: str,
    study_uid: str,
    patient: dict[str, Any],
    pet: PetAcquisition | None = None,
    frame_of_reference_uid: str | None = None,
    series_time: datetime | None = None,
    uid_seed: str | None = None,
) -> Path:
    """Write ``volume`` as one DICOM series, one file per D slice, into a new ``folder``.

    ``patient`` may hold ``name``, ``id``, ``sex`` ("M"/"F"), ``age`` (years),
    ``weight_kg`` (needed for SUVbw PET) and ``height_cm``. ``series_time`` defaults to
    ``pet.series_time`` (or now). The folder must not exist or be empty; it appears
    whole or not at all. Returns ``folder``.
    """
    _check_writable(volume, modality, pet)
    factor = _to_bqml_factor(volume, patient, pet)
    when = series_time or (
        pet.series_time if pet is not None else datetime.now().replace(microsecond=0)
    )
    series = {
        "study_uid": study_uid,
        "series_uid": _uid(uid_seed, "series", modality, series_number),
        "frame_uid": frame_of_reference_uid or _uid(uid_seed, "frame", modality),
        "number": series_number,
        "description": series_description,
    }
    base = _series_dataset(modality, series, patient, when)
    if modality == "PT" and pet is not None:
        _pet_tags(base, pet)
    direction = np.asarray(volume.direction)
    row, col = direction[:, 2], direction[:, 1]
    normal = np.cross(row, col)
    with _atomic_folder(folder) as tmp:
        slices = _quantise(volume, modality, factor)
        for k, (stored, slope, intercept) in enumerate(slices):
            position = np.asarray(volume.origin) + direction[:, 0] * volume.spacing[0] * k
            ds = copy.deepcopy(base)
            ds.SOPInstanceUID = _uid(uid_seed, "instance", modality, series_number, k)
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [_ds(v) for v in position]
            ds.ImageOrientationPatient = [_ds(v) for v in (*row, *col)]
            ds.PixelSpacing = [_ds(volume.spacing[1]), _ds(volume.spacing[2])]
            ds.SliceThickness = _ds(volume.spacing[0])
            ds.SliceLocation = _ds(float(position @ normal))
            ds.Rows, ds.Columns = stored.shape
            ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
            ds.PixelData = stored.astype("<i2").tobytes()
            _save(ds, tmp / f"{modality}_{k + 1:04d}.dcm")
    return folder


def _uid(seed: str | None, *parts: object) -> str:
    """A fresh random UID, or with ``seed`` one derived from it (the same dataset written
    twice from one seed is then byte-identical)."""
    if seed is None:
        return generate_uid()
    return generate_uid(entropy_srcs=[seed, *(str(p) for p in parts)])


def _save(ds: Dataset, path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)


def write_dicom_study(
    study: Study, folder: Path, *, pet_acquisition: PetAcquisition, uid_seed: str | None = None
) -> Path:
    """Write ``study`` as ``folder/CT`` and ``folder/PT`` DICOM series (one study UID, one
    frame of reference). ``folder`` must not exist or be empty; it appears whole or not
    at all. ``uid_seed`` makes the UIDs reproducible. Returns ``folder``.
    """
    patient = {
        "id": study.id,
        "name": study.id,
        "sex": study.sex,
        "age": study.age,
        "weight_kg": study.weight_kg,
        "height_cm": study.height_cm,
    }
    study_uid, frame_uid = _uid(uid_seed, "study"), _uid(uid_seed, "frame")
    with _atomic_folder(folder) as tmp:
        common = {
            "study_uid": study_uid,
            "patient": patient,
            "frame_of_reference_uid": frame_uid,
            "uid_seed": uid_seed,
        }
        write_dicom_series(
            study.ct,
            tmp / "CT",
            modality="CT",
            series_number=1,
            series_description="CT",
            series_time=pet_acquisition.series_time,
            **common,
        )
        write_dicom_series(
            study.pet,
            tmp / "PT",
            modality="PT",
            series_number=2,
            series_description="PET SUVbw as BQML",
            pet=pet_acquisition,
            **common,
        )
    return folder
