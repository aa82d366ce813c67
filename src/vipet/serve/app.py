"""`vipet serve`: ViPET over HTTP (FastAPI), and the browser viewer it serves.

    POST   /api/studies                      upload (a zip of DICOM, or two NIfTI files) -> id
    GET    /api/studies/{id}                 display grid, slice counts, windows, SUV range
    GET    /api/studies/{id}/slice/{axis}/{index}.png?window=lung|level,width&pet=0.6&suv_max=10[&finding=N]
    GET    /api/studies/{id}/mip.png
    POST   /api/studies/{id}/report?lang=vi  report.json of `vipet report` (+ display voxels)
    POST   /api/studies/{id}/ask             {"question", "lang", "region", "history"} -> answer
    DELETE /api/studies/{id}
    GET    /                                 the viewer (static files, nothing from a CDN)
    GET    /docs                             OpenAPI documentation

Hygiene: uploads are capped in size and file count, only DICOM-in-zip and NIfTI are
accepted, zip members that are absolute, climb out (``..``) or are links are refused
(`vipet.serve.uploads`); studies live in a temporary store and expire
(`vipet.serve.store`); logs name studies by their random id only; every model call runs
under one lock (one model, loaded once, shared by all requests — on a CPU, running two
generations at once would only split the same cores) and within a per-request timeout
(HTTP 504; the call itself finishes in the background and its result is kept).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from vipet import __version__
from vipet.errors import ViPetError
from vipet.inference.bundle import nearest_voxel, report_dict, report_from_context
from vipet.io.volume import Units, Volume
from vipet.preprocess.resample import resample_to_grid
from vipet.serve.slices import AXES, WINDOWS, Display, render_mip, render_slice
from vipet.serve.store import Entry, StudyStore
from vipet.serve.uploads import Upload, UploadError, UploadLimits, unpack

log = logging.getLogger("vipet.serve")
STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True)
class ServeSettings:
    max_upload_bytes: int = 512 * 1024**2
    max_files: int = 5000
    ttl_s: float = 3600.0
    max_studies: int = 16
    request_timeout_s: float = 120.0
    report_tokens: int = 400


class Question(BaseModel):
    question: str = Field(min_length=1, max_length=500)
    lang: str = "vi"
    region: str | None = None
    history: list[tuple[str, str]] = Field(default_factory=list, max_length=20)


def _parse_window(text: str) -> tuple[float, float]:
    if text in WINDOWS:
        return WINDOWS[text]
    try:
        level, width = (float(v) for v in text.split(","))
    except ValueError:
        raise HTTPException(
            400, f"window must be one of {sorted(WINDOWS)} or 'level,width', got {text!r}"
        ) from None
    if width <= 0:
        raise HTTPException(400, "window width must be positive")
    return level, width


def create_app(
    checkpoint: str | Path | None = None,
    settings: ServeSettings | None = None,
    predictor: Any = None,
    store: StudyStore | None = None,
) -> FastAPI:
    """The service around one model (``predictor``, or loaded from ``checkpoint``)."""
    cfg = settings or ServeSettings()
    if predictor is None:
        from vipet.inference.predictor import Predictor

        if checkpoint is None:
            raise ValueError("give a checkpoint or a predictor")
        predictor = Predictor.from_checkpoint(checkpoint)
    model_name = Path(checkpoint).name if checkpoint is not None else "model"
    studies = (
        store if store is not None else StudyStore(ttl_s=cfg.ttl_s, max_studies=cfg.max_studies)
    )
    model_lock = threading.Lock()
    limits = UploadLimits(cfg.max_upload_bytes, cfg.max_files)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        studies.close()  # uploaded studies never outlive the service

    app = FastAPI(
        lifespan=lifespan,
        title="ViPET",
        version=__version__,
        description="PET/CT reports and questions from ViPET-VLM, with the evidence behind them.",
    )
    app.state.store = studies
    app.state.predictor = predictor

    async def timed(fn, *args):
        try:
            return await asyncio.wait_for(run_in_threadpool(fn, *args), cfg.request_timeout_s)
        except TimeoutError:
            raise HTTPException(
                504, f"the model took longer than {cfg.request_timeout_s:g} s"
            ) from None

    def entry_of(sid: str) -> Entry:
        entry = studies.get(sid)
        if entry is None:
            raise HTTPException(404, f"no study {sid!r} (unknown or expired)")
        return entry

    def display_of(entry: Entry) -> Display:
        with entry.lock:
            if entry.display is None:
                entry.display = Display.of(entry.study)
            return entry.display

    def context_of(entry: Entry) -> Any:
        with entry.lock:
            if entry.context is None:
                with model_lock:
                    entry.context = predictor.encode(entry.study, with_attention=True)
            return entry.context

    @app.exception_handler(UploadError)
    async def _upload_error(_: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.post("/api/studies", summary="Upload a study: one zip of DICOM files, or two NIfTI files")
    async def upload(
        request: Request, files: Annotated[list[UploadFile], File()]
    ) -> dict[str, Any]:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cfg.max_upload_bytes + 65536:
            raise UploadError(f"upload exceeds the {cfg.max_upload_bytes}-byte cap", 413)
        parts, total = [], 0
        for f in files:
            data = await f.read(cfg.max_upload_bytes + 1 - total)
            total += len(data)
            if total > cfg.max_upload_bytes:
                raise UploadError(f"upload exceeds the {cfg.max_upload_bytes}-byte cap", 413)
            parts.append(Upload(Path(f.filename or "upload").name, data))
        sid, folder = studies.new_folder()
        try:
            study = await run_in_threadpool(_load_upload, parts, folder, limits)
        except BaseException:
            studies.discard_folder(folder)
            raise
        studies.add(sid, folder, study)
        log.info("study %s uploaded: %s, CT %s", sid, study.layout, study.ct.grid.shape)
        return {"id": sid, "layout": study.layout}

    @app.get("/api/studies/{sid}", summary="What the viewer needs to draw a study")
    async def info(sid: str) -> dict[str, Any]:
        entry = entry_of(sid)
        d = await run_in_threadpool(display_of, entry)
        return {
            "id": sid,
            "shape": dict(zip(AXES, d.grid.shape, strict=True)),
            "spacing_mm": list(d.grid.spacing),
            "pet_units": d.pet_units,
            "suv_max": round(d.default_suv_max, 2),
            "windows": {k: list(v) for k, v in WINDOWS.items()},
        }

    @app.get("/api/studies/{sid}/slice/{axis}/{index}.png", response_class=Response)
    async def slice_png(
        sid: str,
        axis: str,
        index: int,
        window: str = "soft_tissue",
        pet: float = Query(0.6, ge=0.0, le=1.0),
        suv_max: float | None = Query(None, gt=0.0),
        finding: int | None = None,
    ) -> Response:
        if axis not in AXES:
            raise HTTPException(400, f"axis must be one of {list(AXES)}")
        entry = entry_of(sid)
        lw = _parse_window(window)
        d = await run_in_threadpool(display_of, entry)
        attention = None
        if finding is not None:
            attention = _finding_map(entry, d, finding)
        try:
            png = await run_in_threadpool(render_slice, d, axis, index, lw, pet, suv_max, attention)
        except IndexError as exc:
            raise HTTPException(400, str(exc)) from None
        return Response(png, media_type="image/png")

    @app.get("/api/studies/{sid}/mip.png", response_class=Response)
    async def mip_png(sid: str, suv_max: float | None = Query(None, gt=0.0)) -> Response:
        d = await run_in_threadpool(display_of, entry_of(sid))
        return Response(await run_in_threadpool(render_mip, d, suv_max), media_type="image/png")

    @app.post("/api/studies/{sid}/report", summary="The report, its findings and the guard's marks")
    async def report(sid: str, lang: str = Query("vi", pattern="^(vi|en)$")) -> dict[str, Any]:
        entry = entry_of(sid)

        def make() -> dict[str, Any]:
            if lang in entry.reports:
                return entry.reports[lang][1]
            ctx = context_of(entry)
            with model_lock:
                rep = report_from_context(predictor, ctx, lang, cfg.report_tokens)
            data = report_dict(rep, entry.study, model_name, predictor.model)
            data["study_id"] = sid  # the store's id: the viewer never sees patient ids
            grid = display_of(entry).grid
            for f in data["findings"]:
                peak = f["attention"]["peak"]
                if peak is not None:
                    f["display_voxel"] = nearest_voxel(grid, peak["world_mm"])
            entry.reports[lang] = (rep, data)
            return data

        return await timed(make)

    @app.post("/api/studies/{sid}/ask", summary="Answer a question about the study")
    async def ask(sid: str, q: Question) -> dict[str, Any]:
        if q.lang not in ("vi", "en"):
            raise HTTPException(400, "lang must be vi or en")
        entry = entry_of(sid)

        def answer() -> str:
            ctx = context_of(entry)
            if q.region is not None and q.region not in ctx.regions:
                raise HTTPException(400, f"region must be one of {ctx.regions}")
            with model_lock:
                return predictor.ask(ctx, q.question, q.lang, region=q.region, history=q.history)

        return {"answer": await timed(answer)}

    @app.delete("/api/studies/{sid}")
    async def delete(sid: str) -> dict[str, bool]:
        if not studies.remove(sid):
            raise HTTPException(404, f"no study {sid!r}")
        return {"deleted": True}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _load_upload(parts: list[Upload], folder: Path, limits: UploadLimits) -> Any:
    from vipet.io import load_study

    paths = unpack(parts, folder, limits)
    try:
        return load_study(paths if len(paths) > 1 else paths[0])
    except ViPetError as exc:
        raise UploadError(f"cannot read the study: {exc}") from None


def _finding_map(entry: Entry, d: Display, finding: int) -> np.ndarray:
    """Finding ``finding``'s attention map on the display grid (from any report made)."""
    for lang, (rep, _) in entry.reports.items():
        if (lang, finding) not in entry.maps:
            samples = {s.region: s for s in rep.context.samples}
            for n, reg, s, _ in rep.numbered():
                if n == finding and s.attention_map is not None:
                    grid = samples[reg.region].grid
                    vol = Volume.on_grid(s.attention_map, grid, "OT", Units.NORMALISED)
                    entry.maps[(lang, n)] = resample_to_grid(vol, d.grid, order=1, fill=0.0).array
        if (lang, finding) in entry.maps:
            return entry.maps[(lang, finding)]
    raise HTTPException(
        404, f"no finding {finding} in this study's reports (ask for a report first)"
    )
