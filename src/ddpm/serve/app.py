"""`ddpm serve`: a small FastAPI app with one page, over a trained run loaded once.

Why FastAPI + uvicorn: a typed, tested HTTP stack (keep-alive, slow clients, HTTP parsing) that is a small install,
with a TestClient that tests the routes in-process. The page is plain HTML and JavaScript served from the package
(no CDN: it works offline).

Every request passes guard.py first (Host and Origin checks, 403; the threat model is written there).
Routes (JSON errors are {"error": "<one line>"}):
    GET  /                          the page
    GET  /api/info                  classes, samplers, limits, defaults, checkpoint
    POST /api/jobs                  a request (request.py: generate, or edit / inpaint an uploaded image), Content-Type
                                    application/json only (else 415)
                                    -> 202 {"id", "position"}; 400 bad input; 429 queue full
    GET  /api/jobs/{id}             state, queue position, step / steps, ETA, error, result links
    GET  /api/jobs/{id}/preview.png the latest x0 prediction
    GET  /api/jobs/{id}/grid.png    the grid; /images/{j}.png image j (?download=1: as an attachment)
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ddpm.api import TrainedModel
from ddpm.common.errors import UserError
from ddpm.diffusion.sampling import SAMPLERS
from ddpm.serve.generate import Generation, generate, prepare_input, total_steps
from ddpm.serve.guard import Access, Guard
from ddpm.serve.jobs import DONE, Job, JobQueue, QueueFull
from ddpm.serve.prompt import resolve_request
from ddpm.serve.request import Limits, parse_request, request_defaults

STATIC = Path(__file__).parent / "static"
DEFAULT_PORT = 7860

Work = Callable[[Job], Any]


def generation_work(run: TrainedModel, checkpoint: str) -> Work:
    """The queue's work function: job.request is (GenerateRequest, Conditioning, EditInput or None)."""

    def work(job: Job) -> Generation:
        request, cond, edit = job.request
        return generate(run, request, cond, checkpoint, report=job.report, edit=edit)

    return work


def create_app(run: TrainedModel, checkpoint: str = "", max_waiting: int = 8, limits: Limits | None = None,
               work: Work | None = None, access: Access | None = None) -> FastAPI:
    """The FastAPI app over `run`; `work` replaces the generation (tests). app.state.queue is its JobQueue. `access`:
    who may use it (default: this machine's loopback names on DEFAULT_PORT)."""
    limits = limits or Limits(max_steps=run.schedule.num_steps, cond=run.conditioning)
    queue = JobQueue(work or generation_work(run, checkpoint), max_waiting=max_waiting)
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        queue.close()

    app = FastAPI(title="ddpm", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.queue = queue
    app.add_middleware(Guard, access=access or Access.for_server("127.0.0.1", DEFAULT_PORT))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"bad request: {where}: {first.get('msg', 'invalid')}"}, status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server is still running"},
                            status_code=500)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return {"classes": run.class_names, "aliases": run.config.data.aliases, "samplers": list(SAMPLERS),
                "defaults": request_defaults(limits),
                "limits": asdict(limits), "checkpoint": checkpoint, "step": run.step,
                "image_size": run.config.model.image_size, "waiting": queue.waiting()}

    @app.post("/api/jobs", status_code=202)
    async def submit(request: Request) -> dict[str, Any]:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":  # a page on another site cannot send this without a CORS preflight
            raise HTTPException(415, f"send the request as Content-Type application/json (got {media_type[:60] or 'none'!r})")
        try:
            payload = await request.json()
        except ValueError:
            raise HTTPException(400, "the request body is not JSON; send an object such as {\"prompt\": \"cat\"}")
        try:
            req = parse_request(payload, limits)
            cond = resolve_request(run, req.prompt, req.negative)
            edit = prepare_input(run, req)
        except UserError as e:
            raise HTTPException(400, str(e))
        try:
            job = queue.submit((req, cond, edit), total_steps=max(1, total_steps(run, req)))
        except QueueFull as e:
            raise HTTPException(429, str(e))
        return {"id": job.id, "position": queue.position(job), "status": f"/api/jobs/{job.id}"}

    def find(job_id: str) -> Job:
        job = queue.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}: it never existed or has been forgotten (old results are "
                                     "dropped); generate again")
        return job

    @app.get("/api/jobs/{job_id}")
    def status(job_id: str) -> dict[str, Any]:
        job = find(job_id)
        out: dict[str, Any] = {"id": job.id, "state": job.state, "position": queue.position(job), "step": job.step,
                               "steps": job.total_steps, "eta_s": job.eta_s(), "error": job.error,
                               "preview_version": job.preview_version}
        if job.state == DONE:
            gen: Generation = job.result
            base = f"/api/jobs/{job.id}"
            out.update(settings=gen.settings, grid=f"{base}/grid.png",
                       images=[f"{base}/images/{j}.png" for j in range(len(gen.images))],
                       seconds=round((job.finished_at or 0) - (job.started_at or 0), 3))
        return out

    @app.get("/api/jobs/{job_id}/preview.png")
    def preview(job_id: str) -> Response:
        job = find(job_id)
        if job.preview is None:
            raise HTTPException(404, "no preview yet: the job has not taken its first step")
        return Response(job.preview, media_type="image/png", headers={"Cache-Control": "no-store"})

    def finished(job_id: str) -> Generation:
        job = find(job_id)
        if job.state != DONE:
            raise HTTPException(409, f"job {job_id} is {job.state}" + (f": {job.error}" if job.error else ""))
        return job.result

    def png(data: bytes, name: str, download: bool) -> Response:
        headers = {"Content-Disposition": f'attachment; filename="{name}"'} if download else {}
        return Response(data, media_type="image/png", headers=headers)

    @app.get("/api/jobs/{job_id}/grid.png")
    def grid(job_id: str, download: bool = False) -> Response:
        gen = finished(job_id)
        return png(gen.grid, f"{_stem(gen.settings)}-grid.png", download)

    @app.get("/api/jobs/{job_id}/images/{index}.png")
    def image(job_id: str, index: int, download: bool = False) -> Response:
        gen = finished(job_id)
        if not 0 <= index < len(gen.images):
            raise HTTPException(404, f"image {index} does not exist; this job made images 0..{len(gen.images) - 1}")
        return png(gen.images[index], f"{_stem(gen.settings)}-{index}.png", download)

    return app


def _stem(settings: dict[str, Any]) -> str:
    """A file name for a download: what was drawn (class or prompt), seed, sampler and steps."""
    name = "".join(ch if ch.isalnum() else "-" for ch in str(settings.get("drawn", "image"))[:40])
    return f"{name}-seed{settings['seed']}-{settings['sampler']}{settings['steps']}"


def check_port(host: str, port: int) -> None:
    """UserError in one line when host:port cannot be bound (in use, or not an address of this machine)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --port or --host") from None


def serve(run: TrainedModel, checkpoint: str, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          max_waiting: int = 8, access: Access | None = None) -> None:
    """Run the web UI until Ctrl-C. Binds 127.0.0.1 (this machine only) unless told otherwise; `access` defaults to
    Access.for_server(host, port) (no other origins)."""
    import uvicorn

    check_port(host, port)
    app = create_app(run, checkpoint, max_waiting=max_waiting, access=access or Access.for_server(host, port))
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    shown = f"[{host}]" if ":" in host else host

    def announce() -> None:  # once the socket listens, so the printed URL works when it appears
        while not server.started:
            time.sleep(0.05)
        print(f"ddpm web UI: http://{shown}:{port}/  (model {checkpoint}, step {run.step}; Ctrl-C to stop)", flush=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            sys.stderr.write(f"ddpm serve: warning: listening on {host}: anyone who can reach this machine can use it\n")

    threading.Thread(target=announce, daemon=True).start()
    server.run()
