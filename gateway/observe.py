"""Metrics (Prometheus) and the per-request decision log: one place that knows their names."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import sys
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any, Final

import orjson
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

ACCESS: Final = logging.getLogger("scopegate.access")
LOG: Final = logging.getLogger("scopegate")
_time: Final = time.time  # compiled, a read of a C static, not a lookup in the time module


REQUEST_LABELS: Final = ["route", "class", "decision", "reason", "status", "worker"]
DURATION_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
UPSTREAM_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _Histogram:
    """One histogram series counted in place: a bucket index found by bisect, two adds."""

    __slots__ = ("buckets", "count", "sum")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * (size + 1)  # the last one is +Inf
        self.count = 0
        self.sum = 0.0


class _HotPath(Collector):
    """The per-request series of one process, kept as plain numbers and turned into metric
    families only at scrape time (one worker: no locks, no multiprocess files)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, ...], int] = {}
        self.duration: dict[str, _Histogram] = {}
        self.upstream: dict[str, _Histogram] = {}

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        requests = CounterMetricFamily(
            "scopegate_requests", "Requests by route and decision", labels=REQUEST_LABELS
        )
        for key, value in list(self.requests.items()):
            requests.add_metric(list(key), value)
        yield requests
        yield _histogram_family(
            "scopegate_request_duration_seconds",
            "Time from request to response start at the gateway",
            "decision",
            DURATION_BUCKETS,
            self.duration,
        )
        yield _histogram_family(
            "scopegate_upstream_duration_seconds",
            "Time until the upstream's response headers",
            "upstream",
            UPSTREAM_BUCKETS,
            self.upstream,
        )


def _histogram_family(
    name: str, doc: str, label: str, bounds: tuple[float, ...], series: dict[str, _Histogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label])
    for value, h in list(series.items()):
        running, points = 0, []
        for bound, n in zip((*bounds, float("inf")), h.buckets, strict=True):
            running += n
            points.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]
        family.add_metric([value], points, h.sum)
    return family


def _observe(series: dict[str, _Histogram], key: str, bounds: tuple[float, ...], seconds: float) -> None:
    h = series.get(key)
    if h is None:
        h = series[key] = _Histogram(len(bounds))
    h.buckets[bisect_left(bounds, seconds)] += 1
    h.count += 1
    h.sum += seconds


class Metrics:
    def __init__(self, worker: str = "0") -> None:
        # `registry` holds the metrics this process counts itself; with several workers they are
        # summed across processes (prometheus multiprocess mode). `sources` holds callback
        # collectors read at scrape time from this process only.
        self.registry = CollectorRegistry(auto_describe=True)
        self.sources = CollectorRegistry(auto_describe=True)
        self.worker = worker
        # One worker: the per-request series are plain numbers (a dict lookup and an add).
        # Several workers: prometheus' multiprocess storage, summed across processes.
        self._hot: _HotPath | None = None
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            self.requests = Counter(
                "scopegate_requests", "Requests by route and decision", REQUEST_LABELS, registry=self.registry
            )
            self.duration = Histogram(
                "scopegate_request_duration_seconds",
                "Time from request to response start at the gateway",
                ["decision"],
                registry=self.registry,
                buckets=DURATION_BUCKETS,
            )
            self.upstream_duration = Histogram(
                "scopegate_upstream_duration_seconds",
                "Time until the upstream's response headers",
                ["upstream"],
                registry=self.registry,
                buckets=UPSTREAM_BUCKETS,
            )
        else:
            self._hot = _HotPath()
            self.registry.register(self._hot)
        self.upstream_errors = Counter(
            "scopegate_upstream_errors", "Upstream failures", ["upstream", "kind"], registry=self.registry
        )
        self.reloads = Counter("scopegate_reloads", "Surface reloads", ["result"], registry=self.registry)
        self.shadow_denied = Counter(
            "scopegate_shadow_denied",
            "Refusals forwarded anyway on shadow routes",
            ["route", "reason"],
            registry=self.registry,
        )
        for result in ("ok", "error"):
            self.reloads.labels(result)
        # Label children by their values: prometheus' labels() locks and validates on each call,
        # which is measurable on the hot path; the label sets are few (bounded by routes).
        self._children: dict[tuple[object, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def request_done(
        self, route: str, cls: str, decision: str, reason: str, status: int, seconds: float
    ) -> None:
        hot = self._hot
        if hot is not None:
            key = (route, cls, decision, reason, str(status), self.worker)
            hot.requests[key] = hot.requests.get(key, 0) + 1
            _observe(hot.duration, decision, DURATION_BUCKETS, seconds)
            return
        self._child(self.requests, route, cls, decision, reason, str(status), self.worker).inc()
        self._child(self.duration, decision).observe(seconds)

    def upstream_answered(self, upstream: str, seconds: float) -> None:
        if self._hot is not None:
            _observe(self._hot.upstream, upstream, UPSTREAM_BUCKETS, seconds)
            return
        self._child(self.upstream_duration, upstream).observe(seconds)

    def add_source(self, collect: Callable[[], Iterator[Any]]) -> None:
        """Register a callback collector (cache counters, feed lag) read at scrape time."""
        self.sources.register(_Source(collect))

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged) + generate_latest(self.sources)
        return generate_latest(self.registry) + generate_latest(self.sources)


class _Source(Collector):
    """A collector whose samples a callback gives at scrape time."""

    def __init__(self, collect: Callable[[], Iterator[Any]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Any]:
        return self._collect()

    def describe(self) -> list[Any]:
        return []


def counter(
    name: str, doc: str, labels: list[str], values: dict[tuple[str, ...], float]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def escape(value: str) -> str:
    """Log-safe text: control characters escaped so a decoded path cannot forge a log line."""
    return value.encode("unicode_escape").decode("ascii") if not value.isprintable() else value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            return json.dumps(fields, separators=(",", ":"), ensure_ascii=True)
        out = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "audit", None)
        if isinstance(extra, dict):
            out.update(extra)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"), ensure_ascii=True)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            f = fields
            return (
                f"{f['ts']} {f['status']} {f['decision']:<5} {f['method']} {f['path']} "
                f"route={f['route']} cred={f['credential']} reason={f['reason']} {f['total_ms']}ms "
                f"rid={f['request_id']}"
            )
        return f"{_iso(record.created)} {record.levelname.lower()} {record.name}: {record.getMessage()}"


_second: Final[list[Any]] = [-1, ""]
_MILLIS: Final = [f".{ms:03d}Z" for ms in range(1000)]  # formatted once, not once per request


def _iso(ts: float) -> str:
    whole = int(ts)
    if whole != _second[0]:  # strftime once per second, not once per request
        _second[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))]
    return str(_second[1]) + _MILLIS[int((ts - whole) * 1000)]


class _ClientFault(logging.Filter):
    """A request aiohttp's parser refuses (400) is the client's fault: one short warning line,
    not an error with a traceback a hostile client could use to flood the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and (exc.code or 400) < 500:
            first = str(exc.message).strip().splitlines()[0] if exc.message else type(exc).__name__
            record.msg, record.args = "%s: refused by the HTTP parser: %s", (record.getMessage(), first)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ClientFault())
    root = logging.getLogger("scopegate")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # aiohttp's own complaints (requests its parser refuses before we see them, client errors)
    # go out in the same format, one line each, instead of Python's bare multi-line default.
    library = logging.getLogger("aiohttp")
    library.handlers[:] = [handler]
    library.setLevel(max(logging.WARNING, root.level))
    library.propagate = False


# This loop iteration's decisions, written at its end: one write per iteration, and the
# handlers looked up once for all of them rather than once a request.
_batch: Final[list[dict[str, Any]]] = []
_flushing: Final[list[object]] = [None]  # the loop that will flush _batch
_running_loop: Final = asyncio._get_running_loop  # None outside a loop, and raises nothing


def flush_log() -> None:
    """Write out the buffered decision lines (end of a loop iteration, shutdown, exit)."""
    if _batch:
        batch = _batch[:]
        _batch.clear()
        _write(batch)


atexit.register(flush_log)


def _json_line(fields: dict[str, Any]) -> str:
    try:
        return orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE).decode()
    except TypeError:  # text orjson will not encode (a lone surrogate): the general path
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=True) + "\n"


def log_request(fields: dict[str, Any]) -> None:
    """One decision line per request. Buffered until the end of the loop iteration, then
    formatted (orjson) and written: the logging machinery costs more than the line itself."""
    fields["ts"] = _iso(_time())
    loop = _running_loop()
    if _batch:
        if loop is _flushing[0]:  # never None while _batch holds lines
            _batch.append(fields)  # the first request of the iteration asked for the flush
            return
        flush_log()  # left by a loop that stopped before its flush ran: written now, in order
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    if loop is None:
        _write([fields])
        return
    _batch.append(fields)
    _flushing[0] = loop
    loop.call_soon(flush_log)


def _write(batch: list[dict[str, Any]]) -> None:
    lines = ""
    for handler in _access_handlers():
        if isinstance(handler, logging.StreamHandler) and type(handler.formatter) is JsonFormatter:
            lines = lines or "".join([_json_line(fields) for fields in batch])
            try:
                handler.stream.write(lines)
                handler.stream.flush()
            except (OSError, ValueError):  # a closed stream at exit: nothing left to tell
                pass
        else:
            for fields in batch:
                record = ACCESS.makeRecord(
                    ACCESS.name, logging.INFO, "", 0, "request", (), None, extra={"fields": fields}
                )
                handler.handle(record)


def _access_handlers() -> list[logging.Handler]:
    logger: logging.Logger | None = ACCESS
    while logger is not None:
        if logger.handlers:
            return logger.handlers
        logger = logger.parent if logger.propagate else None
    return []
