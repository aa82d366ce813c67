"""Uploaded studies held for a while: files in a temporary folder, features in memory.

Each study gets a random id (never a patient identifier: ids, not names, reach the
logs). A study expires ``ttl_s`` seconds after its last use, and at most
``max_studies`` are held (the least recently used goes first); expired studies are
swept on every access, their folders deleted. The store is shared by the service's
worker threads, so every change happens under its lock.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Entry:
    id: str
    folder: Path
    study: Any  # vipet.io.study.Study
    display: Any = None  # (grid, ct, pet) on the viewer's display grid, made on first use
    context: Any = None  # StudyContext with attention, made on first report / question
    reports: dict[str, Any] = field(default_factory=dict)  # lang -> (StudyReport, dict)
    maps: dict[tuple[str, int], Any] = field(default_factory=dict)
    """(lang, finding number) -> its attention map on the display grid."""
    used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held while the entry's lazily made parts are built (one build per study)."""


class StudyStore:
    def __init__(
        self, root: Path | None = None, ttl_s: float = 3600.0, max_studies: int = 16
    ) -> None:
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="vipet-serve-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s
        self.max_studies = max_studies
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.Lock()

    def new_folder(self) -> tuple[str, Path]:
        """A fresh id and its (empty) folder, for an upload to unpack into."""
        sid = secrets.token_hex(8)
        folder = self.root / sid
        folder.mkdir()
        return sid, folder

    def add(self, sid: str, folder: Path, study: Any) -> Entry:
        entry = Entry(sid, folder, study)
        with self._lock:
            self._entries[sid] = entry
            self._sweep_locked()
        return entry

    def get(self, sid: str) -> Entry | None:
        with self._lock:
            self._sweep_locked()
            entry = self._entries.get(sid)
            if entry is not None:
                entry.used = time.monotonic()
                self._entries.move_to_end(sid)
            return entry

    def remove(self, sid: str) -> bool:
        with self._lock:
            entry = self._entries.pop(sid, None)
        if entry is not None:
            shutil.rmtree(entry.folder, ignore_errors=True)
        return entry is not None

    def discard_folder(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def close(self) -> None:
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for e in entries:
            shutil.rmtree(e.folder, ignore_errors=True)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def _sweep_locked(self) -> None:
        now = time.monotonic()
        gone = [k for k, e in self._entries.items() if now - e.used > self.ttl_s]
        while len(self._entries) - len(gone) > self.max_studies:
            oldest = next(k for k in self._entries if k not in gone)
            gone.append(oldest)
        for k in gone:
            entry = self._entries.pop(k)
            shutil.rmtree(entry.folder, ignore_errors=True)
