"""A disk cache of preprocessed region samples, one shard per study.

A shard's name is a hash of the study's input files (path, size, modification time), the
study id, the preprocessing config and the pipeline version: change any of them and the
study is processed again; change none and it is skipped. Shards are written atomically
(temporary file in the same folder, then rename), so an interrupted build leaves either
a whole shard or none. `build_cache` runs studies in parallel worker processes with a
progress bar and records failures in the manifest instead of stopping the whole build.
"""

from __future__ import annotations

import hashlib
import io
import json
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vipet.config import config_hash, to_dict
from vipet.errors import InputError, ViPetError
from vipet.io.atomic import atomic_write_bytes
from vipet.io.layouts import LAYOUTS, StudyRef
from vipet.io.study import LoadOptions
from vipet.io.volume import Grid
from vipet.preprocess.pipeline import (
    PIPELINE_VERSION,
    PreprocessConfig,
    RegionSample,
    preprocess_study,
)

MANIFEST = "manifest.json"


def input_fingerprint(ref: StudyRef) -> str:
    """Hash of the files behind one study: relative path, size and mtime of each."""
    h = hashlib.sha256()
    h.update(f"{ref.layout}\0{ref.study_id}\0".encode())
    for path in _study_files(ref):
        st = path.stat()
        h.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def _study_files(ref: StudyRef) -> list[Path]:
    layout = LAYOUTS.get(ref.layout)
    if layout is not None and layout.study_files is not None:
        return sorted(layout.study_files(ref.path, ref.study_id))
    paths = list(ref.path) if isinstance(ref.path, tuple) else [ref.path]
    files: list[Path] = []
    for p in paths:
        files.extend(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p])
    return files


def shard_key(ref: StudyRef, config: PreprocessConfig) -> str:
    blob = f"{input_fingerprint(ref)}\0{config_hash(config)}\0{PIPELINE_VERSION}"
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def save_shard(path: Path, samples: list[RegionSample]) -> None:
    """All region samples of one study in one .npz, written atomically."""
    arrays: dict[str, np.ndarray] = {}
    meta: list[dict[str, Any]] = []
    for s in samples:
        arrays[f"{s.region}/ct"] = s.ct.astype(np.float16)
        arrays[f"{s.region}/pet"] = s.pet.astype(np.float16)
        arrays[f"{s.region}/roi"] = np.packbits(s.roi.astype(bool))
        if s.lesion is not None:
            arrays[f"{s.region}/lesion"] = s.lesion.astype(np.int16)
        meta.append(
            {
                "study_id": s.study_id,
                "region": s.region,
                "pet_max": s.pet_max,
                "meta": s.meta,
                "grid": {
                    "shape": list(s.grid.shape),
                    "spacing": list(s.grid.spacing),
                    "origin": list(s.grid.origin),
                    "direction": s.grid.direction.tolist(),
                },
            }
        )
    arrays["meta.json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_shard(path: Path) -> list[RegionSample]:
    """The region samples stored by `save_shard` (CT/PET back in float32)."""
    try:
        with np.load(path) as z:
            meta = json.loads(z["meta.json"].tobytes().decode())
            out = []
            for m in meta:
                r = m["region"]
                g = Grid(
                    tuple(m["grid"]["shape"]),
                    m["grid"]["spacing"],
                    m["grid"]["origin"],
                    np.asarray(m["grid"]["direction"]),
                )
                n = int(np.prod(g.shape))
                roi = np.unpackbits(z[f"{r}/roi"])[:n].reshape(g.shape).astype(bool)
                lesion = z[f"{r}/lesion"] if f"{r}/lesion" in z.files else None
                out.append(
                    RegionSample(
                        m["study_id"],
                        r,
                        z[f"{r}/ct"].astype(np.float32),
                        z[f"{r}/pet"].astype(np.float32),
                        roi,
                        g,
                        lesion,
                        m["pet_max"],
                        m["meta"],
                    )
                )
            return out
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"not a readable ViPET cache shard ({exc})", path) from exc


@dataclass
class CacheReport:
    built: int = 0
    reused: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)


def _work(ref: StudyRef, config: PreprocessConfig, options: LoadOptions, shard: Path) -> list[str]:
    samples = preprocess_study(ref.load(options), config)
    save_shard(shard, samples)
    return [s.region for s in samples]


def build_cache(
    refs: list[StudyRef],
    out: Path,
    config: PreprocessConfig,
    workers: int = 1,
    options: LoadOptions | None = None,
    progress: bool = True,
) -> CacheReport:
    """Preprocess every study into ``out/shards``; reuse shards whose key matches."""
    options = options or LoadOptions()
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    report = CacheReport()
    todo: list[tuple[StudyRef, str]] = []
    for ref in refs:
        key = shard_key(ref, config)
        if (shard_dir / f"{key}.npz").is_file():
            report.reused += 1
            report.entries.append({"study": ref.name, "key": key, "shard": f"shards/{key}.npz"})
        else:
            todo.append((ref, key))
    bar = tqdm(total=len(todo), desc="preprocess", unit="study", disable=not progress)
    run = _run_pool if workers > 1 and len(todo) > 1 else _run_inline
    for ref, key, result in run(todo, config, options, shard_dir, workers):
        if isinstance(result, BaseException):
            msg = (
                str(result)
                if isinstance(result, ViPetError)
                else f"{type(result).__name__}: {result}"
            )
            report.failed.append({"study": ref.name, "error": msg})
            bar.write(f"failed {ref.name}: {msg}")
        else:
            report.built += 1
            report.entries.append(
                {"study": ref.name, "key": key, "shard": f"shards/{key}.npz", "regions": result}
            )
        bar.update(1)
    bar.close()
    manifest = {
        "pipeline_version": PIPELINE_VERSION,
        "config": to_dict(config),
        "studies": sorted(report.entries, key=lambda e: e["study"]),
        "failed": report.failed,
    }
    atomic_write_bytes(out / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False).encode())
    return report


def _run_inline(todo, config, options, shard_dir, workers):
    for ref, key in todo:
        try:
            yield ref, key, _work(ref, config, options, shard_dir / f"{key}.npz")
        except Exception as exc:
            yield ref, key, exc


def _run_pool(todo, config, options, shard_dir, workers):
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {
            pool.submit(_work, ref, config, options, shard_dir / f"{key}.npz"): (ref, key)
            for ref, key in todo
        }
        for fut in as_completed(futures):
            ref, key = futures[fut]
            exc = fut.exception()
            yield ref, key, exc if exc is not None else fut.result()


def ensure_cache(
    data: str | Path,
    out: str | Path,
    grid: tuple[int, int, int],
    workers: int = 1,
    progress: bool = True,
) -> CacheReport | None:
    """The cache of the dataset at ``data`` on the model grid ``grid`` in ``out``: built
    with the default preprocessing when ``out`` has no manifest yet (the report is
    returned), reused as it is otherwise (None). A cache made for another grid is refused,
    since its samples would not fit the model."""
    out = Path(out)
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            cached = json.loads(manifest.read_text(encoding="utf-8")).get("config", {})
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"unreadable cache manifest ({exc})", manifest) from exc
        have = cached.get("grid") if isinstance(cached, dict) else None
        if have is not None and tuple(have) != tuple(grid):
            raise InputError(
                f"the cache holds samples on grid {tuple(have)} but the model needs "
                f"{tuple(grid)}; give another cache folder",
                out,
            )
        return None
    from vipet.io import find_studies

    config = PreprocessConfig(grid=tuple(int(g) for g in grid))
    return build_cache(find_studies(data), out, config, workers=workers, progress=progress)
