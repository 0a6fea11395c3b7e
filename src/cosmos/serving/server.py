"""``cosmos serve``: KServe's ``ModelServer`` around :class:`CosmosSegmenterModel`.

KServe serves the v1 and v2 REST endpoints, health, metadata and metrics. What we add, and why:

* **Readiness follows the model.** The model loads in a background thread while the server
  already answers; ``/v2/health/ready`` (KServe: always true) answers 503 until the model is
  loaded, so a pod's readiness probe holds traffic back during the registry download, and
  liveness (``/v2/health/live``) stays green.
* **A bind address.** KServe 0.21 binds 0.0.0.0; ``--host`` (127.0.0.1 by default) wins.
* **Bad requests are 4xx with one line.** A size cap (413), a model version this server does not
  serve (404; KServe answers 501 for any versioned URL), malformed v2 bodies (422), the v2 binary
  extension (415; KServe 0.21 would fail with a 500 on binary NIfTI bytes) and our
  :class:`RequestError` all answer ``{"error": "<one line>"}``, never a traceback.
* **A failed load stops the server** with the loader's one-line reason (exit 2), so a wrong
  model URI crash-loops visibly instead of serving nothing forever.
* **Bounded concurrency.** At most ``--max-concurrent`` inference requests are handled at once
  (each on its own warm predictor, :mod:`cosmos.serving.warm`); one more is answered 503 with
  ``Retry-After`` at once, before its body is read, instead of queueing without bound.
* **Bodies are read here, capped.** A body over ``--max-mb`` is 413 whether it declares its length
  or comes chunked (Starlette would turn an error raised while it reads the body into a 400).
* **Metrics** (:mod:`cosmos.serving.metrics`) for every inference request, refused ones included,
  on the registry KServe's ``/metrics`` serves.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import threading
import time
from typing import Sequence

from cosmos.errors import CosmosError
from cosmos.serving import metrics
from cosmos.serving._kserve import kserve, model_server
from cosmos.serving.codec import RequestError
from cosmos.serving.model import CosmosSegmenterModel

log = logging.getLogger(__name__)

_VERSIONED = re.compile(r"^(?P<head>/v2/models/[^/]+)/versions/(?P<version>[^/]+)(?P<tail>/.*)?$")
_INFER = re.compile(r"^/(?:v2/models/[^/]+/infer|v1/models/[^/:]+:predict)$")
_KIND_KEY = "cosmos.error_kind"  # where a handler names the error kind for the metrics (in the ASGI scope)


class _ReadyWhenLoaded(kserve.protocol.dataplane.DataPlane):
    """Server readiness = every registered model loaded (KServe's own answer is always true)."""

    async def ready(self) -> bool:
        models = list(self.model_registry.get_models().values())
        return bool(models) and all([await m.healthy() for m in models])


class _ModelServer(kserve.ModelServer):
    def __init__(self, host: str, **kwargs):
        super().__init__(**kwargs)
        self.host = host
        self.dataplane = _ReadyWhenLoaded(model_registry=self.registered_models)

    def setup_event_loop(self):
        # Called by start() after the REST server is built and before it binds.
        if self._rest_server is not None:
            self._rest_server.config.host = self.host
        super().setup_event_loop()


def _json(status: int, reason: str):
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content={"error": reason})


async def _send_json(send, status: int, reason: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    import json

    body = json.dumps({"error": reason}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _RequestGuard:
    """ASGI middleware: admission (503 + ``Retry-After`` above ``max_concurrent``), the body size cap
    (413, chunked bodies included), ``/v2/models/NAME/versions/V/...`` mapped to the unversioned
    route when V is the served version (404 with the served version otherwise), and the metrics."""

    def __init__(self, app, model: CosmosSegmenterModel, max_bytes: int, max_concurrent: int = 2):
        self.app, self.model, self.max_bytes = app, model, max_bytes
        self.max_concurrent = max(1, int(max_concurrent))
        self.in_flight = 0  # the event loop is one thread: a plain counter is enough
        self.typical_s = 1.0  # recent request time, for Retry-After

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        m = _VERSIONED.match(scope["path"])
        if m:
            wanted, served = m.group("version"), self.model.version
            if self.model.ready and wanted != served:
                have = f"version {served}" if served else "a local model folder (no registry version)"
                return await _send_json(
                    send, 404, f"model {self.model.name} has no version {wanted} here; this server serves {have}"
                )
            path = m.group("head") + (m.group("tail") or "")
            scope = dict(scope, path=path, raw_path=path.encode())
        if scope.get("method") != "POST" or not _INFER.match(scope["path"]):
            return await self._guarded(scope, receive, send)
        protocol = "v2" if scope["path"].startswith("/v2/") else "v1"
        t0 = time.perf_counter()
        status = {"code": 500}
        scope = dict(scope)
        scope[_KIND_KEY] = None

        async def watched(message):
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        if self.in_flight >= self.max_concurrent:
            await self._drain(receive, self.max_bytes)
            retry = max(1, math.ceil(self.typical_s))
            await _send_json(
                watched,
                503,
                f"busy: {self.in_flight} request(s) in progress, the server's limit "
                f"(cosmos serve --max-concurrent {self.max_concurrent}); retry in {retry} s",
                [(b"retry-after", str(retry).encode())],
            )
            metrics.record(self.model.name, protocol, 503, time.perf_counter() - t0, "overloaded")
            return
        self.in_flight += 1
        metrics.IN_FLIGHT.labels(self.model.name).inc()
        try:
            await self._guarded(scope, receive, watched)
        finally:
            self.in_flight -= 1
            metrics.IN_FLIGHT.labels(self.model.name).dec()
            seconds = time.perf_counter() - t0
            if status["code"] == 200:
                self.typical_s = 0.7 * self.typical_s + 0.3 * seconds
            metrics.record(self.model.name, protocol, status["code"], seconds, scope.get(_KIND_KEY))

    async def _guarded(self, scope, receive, send):
        """The body read here, up to the cap, then handed on as one message."""
        headers = dict(scope.get("headers") or [])
        if b"inference-header-content-length" in headers:
            # KServe 0.21 turns binary BYTES elements into text and fails with a 500 on a NIfTI
            await self._drain(receive, self.max_bytes)
            return await _send_json(
                send,
                415,
                "the v2 binary tensor extension is not supported here: send the "
                "scan as base64 in JSON (datatype BYTES)",
            )
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            if int(length) <= 16 * self.max_bytes:
                await self._drain(receive, int(length))
            return await _send_json(send, 413, self._too_large(int(length)))
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []
        seen = 0
        while True:  # also bounds chunked bodies, which carry no content-length
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await self._drain(receive, 16 * self.max_bytes - seen, more=message.get("more_body", False))
                return await _send_json(send, 413, self._too_large(seen, at_least=True))
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        del chunks
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        return await self.app(scope, replay, send)

    async def _drain(self, receive, budget: int, more: bool = True) -> None:
        """Read and drop a refused body (not kept in memory), so that an ordinary client, still
        sending, reads the answer instead of a connection reset; past ``budget`` bytes we stop."""
        while more and budget > 0:
            message = await receive()
            if message["type"] != "http.request":
                return
            budget -= len(message.get("body", b""))
            more = message.get("more_body", False)

    def _too_large(self, size: int, at_least: bool = False) -> str:
        return (
            f"request body {'over ' if at_least else ''}{size / 1e6:.1f} MB exceeds the server's cap of "
            f"{self.max_bytes / 1e6:.1f} MB (cosmos serve --max-mb)"
        )


async def _request_error(request, exc: RequestError):
    log.warning("refused a request (%d): %s", exc.status, exc.reason)
    if _KIND_KEY in request.scope:
        request.scope[_KIND_KEY] = getattr(exc, "kind", None)
    return _json(exc.status, exc.reason)


async def _validation_error(_request, exc):
    errors = exc.errors() if hasattr(exc, "errors") else []
    parts = [
        f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg', '')}" for e in errors[:3]
    ]
    reason = "malformed request: " + ("; ".join(parts) or str(exc))
    log.warning("refused a request (422): %s", reason)
    return _json(422, " ".join(reason.split()))


class _OneLineClientErrors(logging.Filter):
    """KServe logs every refused request (even a readiness probe while loading) with a full
    traceback; for these expected answers one line is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        from kserve import errors

        exc = record.exc_info[1] if record.exc_info else None
        quiet = (errors.ServerNotReady, errors.ModelNotReady)
        if isinstance(exc, quiet + (errors.ModelNotFound, errors.InvalidInput)):
            record.msg, record.args, record.exc_info, record.exc_text = f"{type(exc).__name__}: {exc}", (), None, None
            record.levelno, record.levelname = (
                (logging.INFO, "INFO") if isinstance(exc, quiet) else (logging.WARNING, "WARNING")
            )
        return True


def _install(app, model: CosmosSegmenterModel, max_bytes: int, max_concurrent: int = 2) -> None:
    """Our middleware and handlers go onto KServe's app before it adds its own routes."""
    import warnings

    from fastapi.exceptions import RequestValidationError

    app.add_middleware(_RequestGuard, model=model, max_bytes=max_bytes, max_concurrent=max_concurrent)
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    logging.getLogger("kserve").addFilter(_OneLineClientErrors())
    # KServe 0.21 still answers with FastAPI's ORJSONResponse; the deprecation is KServe's to fix.
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")


def _load_or_stop(model: CosmosSegmenterModel) -> None:
    t0 = time.perf_counter()
    try:
        model.load()
        seconds = time.perf_counter() - t0
        metrics.LOAD_SECONDS.labels(model.name).set(seconds)
        log.info("model %s ready after %.1f s", model.name, seconds)
        return
    except CosmosError as exc:
        model.load_error = str(exc)
    except Exception as exc:  # still one line; the traceback goes to the debug log
        log.debug("model load failed", exc_info=True)
        model.load_error = f"{type(exc).__name__}: {exc}"
    log.error("cannot load %s: %s", model.reference, model.load_error)
    # Stop the server the way a pod is stopped; wait until start() has installed its handlers.
    deadline = time.monotonic() + 60
    while signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)


def check_limits(port: int, max_mb: float, max_concurrent: int) -> None:
    """Refuse impossible limits at start, one line naming the flag (``--max-mb nan`` would make
    every comparison false: no cap at all)."""
    if not 0 < port < 65536:
        raise CosmosError(f"--port {port}: expected 1-65535")
    if not math.isfinite(max_mb) or max_mb <= 0:
        raise CosmosError(f"--max-mb {max_mb:g}: must be a positive, finite number of megabytes")
    if int(max_mb * 1e6) < 1:
        raise CosmosError(f"--max-mb {max_mb:g}: below one byte")
    if max_concurrent < 1:
        raise CosmosError(f"--max-concurrent {max_concurrent}: must be at least 1")


def serve(
    reference: str,
    *,
    name: str = "cosmos-segmenter",
    tracking_uri: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    max_mb: float = 256.0,
    max_concurrent: int = 2,
    mirroring: bool | None = None,
    fallback_cfg=None,
    overrides: Sequence[str] = (),
) -> None:
    """Serve ``reference`` (``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or a folder) until
    SIGTERM/SIGINT; raises :class:`CosmosError` when the model cannot be loaded.

    ``max_mb``: the cap on a request body and on each scan once decompressed; ``max_concurrent``:
    requests segmented at once (each holds a warm predictor), 503 with ``Retry-After`` above it."""
    check_limits(port, max_mb, max_concurrent)
    max_bytes = int(max_mb * 1e6)
    model = CosmosSegmenterModel(
        name,
        reference,
        tracking_uri=tracking_uri,
        fallback_cfg=fallback_cfg,
        overrides=overrides,
        mirroring=mirroring,
        max_bytes=max_bytes,
        max_concurrent=max_concurrent,
    )
    server = _ModelServer(host, http_port=port, enable_grpc=False, workers=1, enable_docs_url=False)
    server.register_model(model)  # registered before it is ready: readiness answers "not yet"
    model.enable_latency_logging = True
    metrics.MAX_CONCURRENT.labels(model.name).set(max_concurrent)
    _install(model_server.app, model, max_bytes, max_concurrent)
    threading.Thread(target=_load_or_stop, args=(model,), name="cosmos-model-load", daemon=True).start()
    log.info(
        "cosmos serve: http://%s:%d/v2/models/%s/infer (v1: /v1/models/%s:predict); loading %s",
        host,
        port,
        name,
        name,
        reference,
    )
    try:
        server.start([])
    finally:
        model.stop()  # idempotent: also when the load failed and nothing was unloaded
    if model.load_error:
        raise CosmosError(model.load_error)
