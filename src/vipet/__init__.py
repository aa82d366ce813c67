"""ViPET: PET/CT report generation and question answering (ViPET-VLM)."""

from __future__ import annotations

__version__ = "0.1.0"
