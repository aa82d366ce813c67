"""User-facing errors.

Every failure a user can cause (a bad file, a missing DICOM tag, a wrong unit) is a
`ViPetError` whose message names the file and the problem in one line. The CLI prints
that line and exits non-zero; only `--debug` shows a traceback.
"""

from __future__ import annotations

from pathlib import Path


class ViPetError(Exception):
    """Base class for every error ViPET reports to a user."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        text = f"{self.path}: {message}" if self.path is not None else message
        super().__init__(text)


class InputError(ViPetError):
    """The input on disk cannot be read as asked: missing, unreadable, malformed."""


class LayoutError(InputError):
    """No reader recognises the path, or the path is ambiguous (e.g. two PET series)."""


class MissingTagError(InputError):
    """A DICOM attribute needed for a computation (e.g. SUV) is absent."""


class GeometryError(InputError):
    """Volumes whose geometry is inconsistent (shape/affine mismatch, uneven slices)."""


class UnitsError(ViPetError):
    """A function received data in units it cannot use (e.g. raw counts where SUV is needed)."""


class ConfigError(ViPetError):
    """An invalid configuration value or override."""
