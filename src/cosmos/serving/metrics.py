"""Prometheus metrics of ``cosmos serve``, on the registry KServe's ``/metrics`` already exposes.

Why here and not our own endpoint: KServe's REST server answers ``GET /metrics`` with
``prometheus_client``'s default registry, where its own ``request_predict_seconds`` histogram
(time inside ``Model.predict``) lives. That histogram misses what a client waits for (decoding the
body, encoding the label) and every refused request. These metrics join it on the same registry,
so one scrape has both:

* ``cosmos_serve_requests_total{model,protocol,code}``: every inference request, by HTTP status;
* ``cosmos_serve_request_seconds{model,protocol}``: end-to-end latency histogram (body in to last
  byte out), refused requests included;
* ``cosmos_serve_request_errors_total{model,kind}``: refused or failed requests by kind
  (``too_large``, ``bad_input``, ``bad_gzip``, ``geometry``, ``overloaded``, ``internal``, ...);
* ``cosmos_serve_requests_in_flight{model}`` and ``cosmos_serve_max_concurrent{model}``;
* ``cosmos_serve_model_load_seconds{model}``: the cold start, folds read to predictor built.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

REQUESTS = Counter(
    "cosmos_serve_requests", "Inference requests by protocol and HTTP status", ["model", "protocol", "code"]
)
LATENCY = Histogram(
    "cosmos_serve_request_seconds",
    "End-to-end inference request latency (body read to response sent)",
    ["model", "protocol"],
    buckets=_LATENCY_BUCKETS,
)
ERRORS = Counter("cosmos_serve_request_errors", "Refused or failed inference requests by kind", ["model", "kind"])
IN_FLIGHT = Gauge("cosmos_serve_requests_in_flight", "Inference requests being handled now", ["model"])
MAX_CONCURRENT = Gauge(
    "cosmos_serve_max_concurrent", "Requests handled at once before 503 (--max-concurrent)", ["model"]
)
LOAD_SECONDS = Gauge("cosmos_serve_model_load_seconds", "Seconds from load start to a warm predictor", ["model"])

# An HTTP status -> the error kind when the handler did not name a finer one.
_KIND_BY_STATUS = {
    400: "bad_input",
    403: "forbidden",
    404: "not_found",
    413: "too_large",
    415: "unsupported_media_type",
    422: "malformed",
    501: "not_implemented",
    503: "not_ready",
}


def error_kind(status: int, named: str | None = None) -> str | None:
    """The ``kind`` label of a response with ``status`` (None for a success)."""
    if status < 400:
        return None
    if named:
        return named
    return _KIND_BY_STATUS.get(status, "client_error" if status < 500 else "internal")


def record(model: str, protocol: str, status: int, seconds: float, kind: str | None = None) -> None:
    """Count one finished inference request."""
    REQUESTS.labels(model, protocol, str(status)).inc()
    LATENCY.labels(model, protocol).observe(seconds)
    found = error_kind(status, kind)
    if found is not None:
        ERRORS.labels(model, found).inc()
