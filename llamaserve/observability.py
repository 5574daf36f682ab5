"""Metrics (Prometheus text format, via prometheus_client) and one access-log line per request."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_logger = logging.getLogger("llamaserve.access")

ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/health",
          "/metrics"}
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)


def route_label(path: str) -> str:
    """The route a path belongs to; anything unknown is 'other' (bounded label values)."""
    path = path.rstrip("/") or "/"
    if path.startswith("/v1/models/"):
        return "/v1/models/{model}"
    return path if path in ROUTES else "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("llamaserve_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=r)
        self.latency = Histogram("llamaserve_request_duration_seconds",
                                 "Request latency, streams until their last byte", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("llamaserve_time_to_first_token_seconds",
                              "Time from request to first generated token", ["model"],
                              buckets=TTFT_BUCKETS, registry=r)
        self.prompt_tokens = Counter("llamaserve_prompt_tokens", "Prompt tokens evaluated",
                                     ["model"], registry=r)
        self.generated_tokens = Counter("llamaserve_generated_tokens", "Tokens generated",
                                        ["model"], registry=r)
        self.drafted_tokens = Counter("llamaserve_speculative_drafted_tokens",
                                      "Draft tokens proposed by speculative decoding", ["model"],
                                      registry=r)
        self.accepted_tokens = Counter("llamaserve_speculative_accepted_tokens",
                                       "Draft tokens the model agreed with (emitted)",
                                       ["model"], registry=r)
        self._speculated: dict[str, tuple[int, int]] = {}  # counts already added, per model
        self.in_flight = Gauge("llamaserve_requests_in_flight",
                               "Requests holding or waiting for a model", ["model"], registry=r)
        self.queue_depth = Gauge("llamaserve_queue_depth",
                                 "Requests waiting for a busy model", registry=r)
        self.loaded = Gauge("llamaserve_model_loaded", "1 when the model is resident", ["model"],
                            registry=r)
        self.memory = Gauge("llamaserve_model_memory_bytes",
                            "Weights plus context state of a resident model", ["model"],
                            registry=r)

    def render(self, models: list[Any]) -> bytes:
        """The exposition text, with the model gauges read from the manager's models now."""
        waiting = 0
        for model in models:
            name = model.spec.id
            self.in_flight.labels(name).set(model.in_flight)
            if model.engine is not None:  # requests queued for a free sequence, not running
                waiting += model.engine.sequences()["waiting"]
            self.loaded.labels(name).set(1 if model.loaded else 0)
            self.memory.labels(name).set(model.engine.memory_bytes if model.engine else 0)
            speculation = getattr(model.engine, "speculation", None)  # fakes in tests lack it
            if speculation is not None:
                self._add_speculation(name, speculation.counts())
        self.queue_depth.set(waiting)
        return generate_latest(self.registry)


    def _add_speculation(self, name: str, counts: tuple[int, int]) -> None:
        """The engine counts since its load; the counters get what is new (a reloaded engine
        counts from zero again)."""
        seen = self._speculated.get(name, (0, 0))
        if counts[0] < seen[0] or counts[1] < seen[1]:
            seen = (0, 0)
        self.drafted_tokens.labels(name).inc(counts[0] - seen[0])
        self.accepted_tokens.labels(name).inc(counts[1] - seen[1])
        self._speculated[name] = counts


class AccessLogMiddleware:
    """Counts and times every request, and logs one line for it: route, model, status,
    tokens, duration. Handlers add the model and token counts to `scope["state"]`."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            elapsed = time.perf_counter() - started
            if scope.get("state", {}).get("client_gone"):
                status = 499  # nginx's "client closed request": no answer was sent
            route = route_label(scope["path"])
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(elapsed)
            usage = scope.get("state", {}).get("usage", {})
            fields = {"method": scope["method"], "path": scope["path"], "status": status,
                      "duration_ms": round(elapsed * 1000, 1), **usage}
            access_logger.info(
                "%s %s %s %s", scope["method"], scope["path"], status,
                " ".join(f"{k}={v}" for k, v in fields.items()
                         if k not in ("method", "path", "status")),
                extra={"access": fields},
            )


class JSONFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (--log-format json)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "access", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(verbose: bool, log_format: str) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Libraries' request-by-request lines (the Hub client's GETs) only with --verbose.
    for chatty in ("httpx", "httpcore", "huggingface_hub", "urllib3", "filelock"):
        logging.getLogger(chatty).setLevel(logging.DEBUG if verbose else logging.WARNING)
