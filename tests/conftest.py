"""Shared test settings: offline by default, fixed seeds."""

from __future__ import annotations

import os

# Nothing may reach a model hub from the tests: fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
