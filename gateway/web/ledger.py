"""One request's bookkeeping, the same behind every door: its id, the decision and reason, the
metrics, and the decision line. The aiohttp door (app.py) and the fast door (fastserve.py) each
run the pipeline and call these steps; neither keeps a copy of them."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Final

from multidict import CIMultiDictProxy

from ..errors import ClientGone, GatewayError, InternalError
from ..observe import escape, log_request
from ..pipeline import Decision, RouteRefused
from ..proxy.headers import request_id

if TYPE_CHECKING:
    from .runtime import Runtime

LOG: Final = logging.getLogger("scopegate")
# Module-level and Final: compiled, a read of a C static, not a lookup in the time module.
_perf_counter: Final = time.perf_counter


def _ms(ms: float) -> float:
    """Milliseconds to the microsecond, as round(ms, 3) gives them for a timing (not negative),
    without the decimal conversion round() makes for a float."""
    return int(ms * 1000 + 0.5) / 1000


class Ledger:
    """Filled as the request goes through the pipeline; `done` counts and logs it once."""

    __slots__ = ("decision", "fields", "reason", "rid", "rt", "started", "timings")

    def __init__(self, rt: Runtime, method: str, raw_path: str, headers: CIMultiDictProxy[str]) -> None:
        self.rt = rt
        self.rid = request_id(headers)
        self.started = _perf_counter()
        self.timings: dict[str, float] = {}
        self.fields: dict[str, Any] = {
            "request_id": self.rid,
            "method": method,
            "path": escape(raw_path.partition("?")[0])[:2048],
            "route": None,
            "class": None,
            "credential": "none",
            "token_id": None,
            "worker": rt.worker,
        }
        self.decision = "deny"
        self.reason = "ok"

    def decided(self, d: Decision) -> None:
        """The pipeline let the request through (or a shadow route forwards a refusal)."""
        d.log_into(self.fields)
        if d.shadow_denied is not None:
            self.decision, self.reason = "shadow", d.shadow_denied.code
            self.rt.metrics.shadow_denied.labels(d.route.id, self.reason).inc()
        else:
            self.decision = "allow"

    def forwarded(self, d: Decision, status: int) -> None:
        if d.principal.token_id and self.decision == "allow" and status < 500:
            self.rt.validator.note_used(d.principal.token_id)

    def refusal(self, exc: Exception) -> tuple[GatewayError, bool]:
        """The error to answer with for an exception out of the pipeline or the forward, and
        whether the connection must close whatever the request asked (a bug of ours)."""
        if isinstance(exc, RouteRefused):
            exc.log_into(self.fields)
            self.reason = exc.code
            return exc, False
        if isinstance(exc, ClientGone):
            self.reason = exc.code  # the decision stands; the client never heard it
            return exc, True
        if isinstance(exc, GatewayError):
            self.reason = exc.code
            if exc.status < 500:
                self.decision = "deny"  # refused while forwarding (a bad handshake or body), not allowed
            if exc.code in ("upstream_unavailable", "upstream_timeout"):
                self.rt.metrics.upstream_errors.labels(self.fields.get("upstream", ""), exc.code).inc()
            return exc, False
        # The last resort: a bug of ours is a JSON 500, logged with its traceback and counted,
        # never a plain-text page.
        LOG.error("unexpected failure handling request %s", self.rid, exc_info=exc)
        self.decision, self.reason = "deny", "internal_error"
        return InternalError("the gateway failed"), True

    def done(self, status: int) -> None:
        """Count the request and write its decision line."""
        rt, fields, timings = self.rt, self.fields, self.timings
        total = _perf_counter() - self.started
        if "upstream_error" in timings:
            rt.metrics.upstream_errors.labels(fields.get("upstream", ""), "reset").inc()
        if "upstream_ms" in timings:
            rt.metrics.upstream_answered(fields.get("upstream", ""), timings["upstream_ms"] / 1000)
        rt.metrics.request_done(
            fields["route"] or "", fields["class"] or "", self.decision, self.reason, status, total
        )
        fields["decision"] = self.decision
        fields["reason"] = self.reason
        fields["status"] = status
        fields["upstream_ms"] = _ms(timings.get("upstream_ms", 0.0))
        fields["total_ms"] = _ms(total * 1000)
        log_request(fields)
