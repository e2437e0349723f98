"""``visec serve``: the analysis behind a local web page and a JSON API (FastAPI on uvicorn).

Routes:

``GET /``                 upload page (drag-and-drop or file picker; image or video)
``POST /api/analyze``     the file as the raw request body (``X-Filename`` names it); JSON
                          :class:`~visec.apps.analyze.Analysis`, or with ``?view=html`` the HTML
                          fragment the page shows
``GET /api/health``       liveness, the worker pool's load
``GET /api/models``       the loaded detectors and the notes on runs left out
``GET /docs``, ``/openapi.json``  the OpenAPI description (the interactive page loads its scripts
                          from a CDN, so offline only ``/openapi.json`` is useful)

Models load once, when the app is made. Analyses run in a bounded thread pool (``workers``) with a
bounded waiting line (``queue``): the event loop only streams uploads and answers, so a slow video
never blocks the page or the health check, and requests beyond the line get 503 at once. An
upload streams into a private temporary folder, counted as it arrives: past ``max_bytes`` the
request ends with 413 without reading the rest; the folder is removed when the answer is sent.

Every failure of the input is a JSON ``{"error": ...}`` with a 4xx status (400 empty, 413 too
large, 415 not an image or video by its content, 422 undecodable or a decompression bomb); an image
without a face is a 200 whose verdict says ``no face``. An unexpected error is a 500 with a one-line
message and no traceback; the server goes on serving.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import tempfile
import threading
from contextlib import asynccontextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from visec.apps.analysis_html import page_css, render_fragment
from visec.apps.analyze import Analysis, Analyzer, sniff
from visec.errors import VisecError

log = logging.getLogger("visec.serve")
DEFAULT_MAX_BYTES = 50 * 1024 * 1024

_UPLOAD_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>visec analyze</title>
<style>__CSS__
#drop { border: 2px dashed #888; border-radius: 8px; padding: 2em; text-align: center; color: #555; }
#drop.over { background: #eef5ff; border-color: #1f77b4; } #error { color: #b3261e; font-weight: 600; }
#status { color: #555; }
</style></head><body>
<h1>visec: is this face forged?</h1>
<p class="meta">__MODELS__</p>
<div id="drop">Drop an image or a video here, or
<input type="file" id="file" accept="image/*,video/*"></div>
<p id="status"></p><p id="error" role="alert"></p>
<div id="result"></div>
<script>
const drop = document.getElementById("drop"), input = document.getElementById("file");
const status = document.getElementById("status"), error = document.getElementById("error");
const result = document.getElementById("result");
async function send(file) {
  error.textContent = ""; result.innerHTML = ""; status.textContent = "analysing " + file.name + " ...";
  try {
    const r = await fetch("api/analyze?view=html", {method: "POST", body: file,
      headers: {"X-Filename": encodeURIComponent(file.name), "Content-Type": "application/octet-stream"}});
    status.textContent = "";
    if (r.ok) { result.innerHTML = await r.text(); }
    else { let msg = r.status + " " + r.statusText;
      try { msg = (await r.json()).error; } catch (e) {}
      error.textContent = msg; }
  } catch (e) { status.textContent = ""; error.textContent = "request failed: " + e; }
}
input.addEventListener("change", () => { if (input.files.length) send(input.files[0]); });
drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => { e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) send(e.dataTransfer.files[0]); });
</script>
</body></html>
"""


class _Reject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _safe_name(raw: str | None) -> str:
    from urllib.parse import unquote

    name = Path(unquote(raw or "upload")).name
    return re.sub(r"[^\w.\- ]", "_", name)[:120] or "upload"


def create_app(analyzer: Analyzer, *, max_bytes: int = DEFAULT_MAX_BYTES, workers: int = 2,
               queue: int = 64):
    """The FastAPI app around one loaded :class:`Analyzer`."""
    if max_bytes < 1 or workers < 1 or queue < 0:
        raise VisecError(f"serve: max_bytes and workers must be >= 1 and queue >= 0 "
                         f"(got {max_bytes}, {workers}, {queue})")
    import visec

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="visec-analyze")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="visec", version=visec.__version__, lifespan=lifespan,
                  description="Face-forgery analysis with every trained detector of a runs folder.")
    state = {"in_flight": 0, "served": 0, "rejected": 0}
    lock = threading.Lock()
    models = ", ".join(f"{d.info.name} (threshold {d.info.threshold:.3f})" for d in analyzer.detectors)
    upload_page = (_UPLOAD_PAGE.replace("__CSS__", page_css())
                   .replace("__MODELS__", f"{len(analyzer.detectors)} detector(s): "
                            + models.replace("&", "&amp;").replace("<", "&lt;")))

    @app.exception_handler(_Reject)
    async def _rejected(request: Request, exc: _Reject):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"invalid request: {where}: {first.get('msg', 'invalid')}"},
                            status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.error("analysis failed: %s: %s", type(exc).__name__, exc)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"},
                            status_code=500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return upload_page

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        """Liveness and load: analyses running or waiting, the bound, and how many were served."""
        return {"status": "ok", "detectors": len(analyzer.detectors), "in_flight": state["in_flight"],
                "capacity": workers + queue, "workers": workers, "served": state["served"],
                "rejected": state["rejected"], "max_bytes": max_bytes}

    @app.get("/api/models")
    async def model_list() -> dict[str, Any]:
        """The detectors every analysis runs (with their thresholds) and the runs left out."""
        return {"detectors": [d.info.model_dump(mode="json") for d in analyzer.detectors],
                "notes": analyzer.notes, "faces": analyzer.faces_mode}

    async def _receive(request: Request, folder: Path) -> tuple[Path, str]:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise _Reject(400, f"invalid Content-Length: {declared[:40]!r}")
            if int(declared) > max_bytes:
                raise _Reject(413, f"upload of {int(declared):,} bytes is over the limit of {max_bytes:,} bytes")
        name = _safe_name(request.headers.get("x-filename"))
        path = folder / "upload"
        received = 0
        with open(path, "wb") as fh:
            async for chunk in request.stream():
                received += len(chunk)
                if received > max_bytes:
                    raise _Reject(413, f"upload is over the limit of {max_bytes:,} bytes")
                fh.write(chunk)
        if received == 0:
            raise _Reject(400, "empty upload: send the file as the request body")
        with open(path, "rb") as fh:
            if sniff(fh.read(32)) is None:
                raise _Reject(415, f"{name}: not an image or video (PNG, JPEG, GIF, BMP, TIFF, WebP; "
                                   f"MP4/MOV, AVI, MKV/WebM), judged by its content")
        return path, name

    @app.post("/api/analyze", response_model=Analysis, response_model_by_alias=True,
              responses={400: {"description": "empty upload"}, 413: {"description": "over the size limit"},
                         415: {"description": "not an image or video"},
                         422: {"description": "undecodable, no decodable frame, or a decompression bomb"},
                         503: {"description": "the worker pool's line is full"}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def analyze(request: Request, view: str = "json"):
        """Analyse one image or video sent as the raw request body (name it in ``X-Filename``)."""
        if view not in ("json", "html"):
            raise _Reject(422, f"view must be 'json' or 'html', not {view[:20]!r}")
        with lock:
            if state["in_flight"] >= workers + queue:
                state["rejected"] += 1
                raise _Reject(503, f"busy: {state['in_flight']} analyses running or waiting; retry shortly")
            state["in_flight"] += 1
        folder = Path(tempfile.mkdtemp(prefix="visec-upload-"))
        try:
            path, name = await _receive(request, folder)
            loop = asyncio.get_running_loop()
            try:
                result = await loop.run_in_executor(pool, lambda: analyzer.analyze(path, name=name))
            except VisecError as exc:  # DataError and the rest of visec's one-line errors
                raise _Reject(422, str(exc).replace(str(path), name)) from None
            except Exception as exc:  # a bug, not the input's fault: logged here, one line to the client
                log.exception("analysis of %s failed", name)
                first = str(exc).splitlines()[0][:200] if str(exc) else ""
                raise _Reject(500, f"internal error while analysing {name}: {type(exc).__name__}: {first}") from None
            result.input.path = name  # the temporary path means nothing to the client
            state["served"] += 1
            if view == "html":
                return HTMLResponse(render_fragment(result))
            return JSONResponse(result.model_dump(mode="json", by_alias=True))
        finally:
            with lock:
                state["in_flight"] -= 1
            shutil.rmtree(folder, ignore_errors=True)

    app.state.pool = pool
    return app


def serve(analyzer: Analyzer, *, host: str = "127.0.0.1", port: int = 8000, max_bytes: int = DEFAULT_MAX_BYTES,
          workers: int = 2, queue: int = 64, log_level: str = "warning") -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(analyzer, max_bytes=max_bytes, workers=workers, queue=queue), host=host, port=port,
                log_level=log_level)
