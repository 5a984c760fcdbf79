"""Everything a running gateway holds, built from one Config and paired with its lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..auth.jwt import authenticator_for
from ..auth.ratelimit import FailedAuthLimiter
from ..config import Config
from ..errors import ConfigError, StartupError, StoreUnavailable
from ..heap import resettle
from ..observe import Metrics, counter, gauge, log_request
from ..pipeline import Pipeline
from ..proxy.forward import Upstreams
from ..proxy.headers import HeaderPolicy, new_request_id
from ..scopes import Catalogue
from ..surface.loader import load_surface
from ..surface.matcher import Matcher
from ..surface.model import Surface
from ..surface.paths import clean
from ..tokens.service import TokenService
from ..tokens.store import RevocationPush
from ..tokens.stores import store_for
from ..tokens.validator import TokenValidator
from ..tokens.webhook import MIN_SECRET_BYTES, SECRET_ENV, ExpiryNotifier
from .tokens_api import ByValueLimiter

LOG = logging.getLogger("scopegate")


class Runtime:
    def __init__(self, cfg: Config, *, clock: Callable[[], float] = time.time, worker: str = "0") -> None:
        self.cfg = cfg
        self.worker = worker
        self.surface: Surface = load_surface(cfg.surface_files, cfg.upstreams.keys(), cfg.management_mount)
        self.matcher = Matcher(self.surface)
        self.catalogue = Catalogue.build(self.surface.scope_names())
        self._surface_stamp = self._stamp()
        self.metrics = Metrics(worker)
        self.headers = HeaderPolicy(cfg.workspace_header, cfg.trusted_proxies)
        self.upstreams = Upstreams(cfg.upstreams)
        self.store = store_for(cfg.store, cfg.base_dir)
        self.validator = TokenValidator(self.store, cfg.tokens, cfg.tokens.prefix, clock)
        self.jwt = authenticator_for(cfg, clock)
        self.service = TokenService(self.store, self.validator, cfg.tokens, lambda: self.catalogue, clock)
        self.mount_segments = tuple(s for s in cfg.management_mount.split("/") if s)
        # Forward-auth's own address, as proxies ask it (vetted once here: see FastDoor._next).
        self.verify_target = "/" + "/".join((*self.mount_segments, "verify"))
        self.verify_path = clean(self.verify_target)
        self.pipeline = Pipeline(
            cfg,
            lambda: self.matcher,
            self._authenticators(),
            FailedAuthLimiter(cfg.limits.failed_auth_per_minute),
        )
        self.by_value_limiter = ByValueLimiter()
        self.notifier: ExpiryNotifier | None = None
        self.store_ok = False
        self.in_flight = 0  # requests being handled, for the drain on SIGTERM
        self.draining = False
        # The public listener's doors (web/fastdoor.py): requests served by the fast door, and
        # connections it handed to aiohttp (a body, an upgrade, the management API ...).
        self.fast_requests = 0
        self.handed_off = 0
        self._reopen: asyncio.Task[None] | None = None
        self.metrics.add_source(self._collect)
        if self.jwt is not None and self.jwt.jwks is not None:
            self.metrics.add_source(self._collect_jwks)

    def _authenticators(self) -> list[Any]:
        # Bound methods of compiled classes: a closure here ran in the interpreter per request.
        out: list[Any] = [self.validator.authenticate]
        if self.jwt is not None:
            out.append(self.jwt.authenticate)
        return out

    def _collect(self) -> Iterator[Any]:
        v = self.validator
        yield counter(
            "scopegate_token_cache",
            "Token cache lookups",
            ["result"],
            {("hit",): v.cache_hits, ("miss",): v.cache_misses},
        )
        yield counter("scopegate_store_writes", "last_used_at batch writes", [], {(): v.store_writes})
        if self.notifier is not None:
            n = self.notifier
            yield counter(
                "scopegate_expiry_webhooks",
                "Expiry warning deliveries",
                ["result"],
                {("sent",): n.sent, ("failed",): n.failed},
            )
        last_poll = v.last_poll
        yield gauge(
            "scopegate_revocation_feed_lag_seconds",
            "Seconds since the revocation feed was last read",
            max(0.0, time.time() - last_poll) if last_poll else 0.0,
        )
        if isinstance(self.store, RevocationPush):
            yield gauge(
                "scopegate_revocation_push_connected",
                "1 while revocations are pushed (PostgreSQL LISTEN), 0 while only polled",
                1.0 if self.store.push_connected else 0.0,
            )

    def _expiry_notifier(self) -> ExpiryNotifier | None:
        hook = self.cfg.tokens.expiry_webhook
        if hook is None:
            return None
        secret = os.environ.get(SECRET_ENV, "").encode()
        if len(secret) < MIN_SECRET_BYTES:
            raise StartupError(
                f"tokens.expiry_webhook: set ${SECRET_ENV} to a secret of at least {MIN_SECRET_BYTES} bytes"
            )
        # Warnings need no second precision: a round every five revocation polls.
        return ExpiryNotifier(self.store, hook, secret, 5 * self.cfg.tokens.revocation_poll)

    def _collect_jwks(self) -> Iterator[Any]:
        assert self.jwt is not None and self.jwt.jwks is not None
        yield gauge(
            "scopegate_jwks_age_seconds",
            "Seconds since the JWKS was last fetched successfully (+Inf before the first fetch)",
            self.jwt.jwks.age(),
        )

    async def start(self) -> None:
        self.notifier = self._expiry_notifier()
        await self.upstreams.start()
        try:
            await self.store.open()
            self.store_ok = True
        except StartupError:  # e.g. a schema newer than this code: not something to wait out
            await self.upstreams.close()
            raise
        except StoreUnavailable as exc:  # the gateway still serves anonymous and JWT routes
            LOG.error("token store unavailable at start: %s", exc.detail)
            # Keep trying: a volume mounted late or a directory created later needs no restart.
            self._reopen = asyncio.create_task(self._open_store_when_reachable())
        await self.validator.start()
        if self.notifier is not None:
            await self.notifier.start()
        if self.jwt is not None:
            await self.jwt.start()

    async def _open_store_when_reachable(self) -> None:
        refused = False
        while True:
            await asyncio.sleep(self.cfg.tokens.revocation_poll)
            try:
                await self.store.open()
            except StoreUnavailable:
                continue
            except StartupError as exc:  # e.g. a newer schema appeared: say so once, keep refusing
                if not refused:
                    LOG.error("token store refused: %s", exc)
                refused = True
                continue
            self.store_ok = True
            LOG.info("token store reachable: %s", self.cfg.store)
            return

    async def close(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reopen
            self._reopen = None
        if self.jwt is not None:
            await self.jwt.close()
        if self.notifier is not None:
            await self.notifier.stop()
        await self.validator.stop()
        await self.store.close()
        await self.upstreams.close()

    def parse_refused(self, code: str, detail: str) -> str:
        """Count and log a request aiohttp's parser refused before it reached the pipeline."""
        rid = new_request_id()
        self.metrics.request_done("", "", "deny", code, 400, 0.0)
        log_request(
            {
                "request_id": rid,
                "method": "",
                "path": "",
                "route": None,
                "class": None,
                "credential": "none",
                "token_id": None,
                "worker": self.worker,
                "decision": "deny",
                "reason": code,
                "status": 400,
                "upstream_ms": 0.0,
                "total_ms": 0.0,
                "detail": detail,
            }
        )
        return rid

    def _stamp(self) -> tuple[tuple[str, float, int], ...]:
        out = []
        for f in self.cfg.surface_files:
            try:
                st = os.stat(f)
                out.append((f, st.st_mtime, st.st_size))
            except OSError:
                out.append((f, 0.0, -1))
        return tuple(out)

    def surface_changed(self) -> bool:
        return self._stamp() != self._surface_stamp

    def reload(self) -> bool:
        """Swap in a freshly loaded surface; an invalid one leaves the old one serving."""
        self._surface_stamp = self._stamp()
        try:
            surface = load_surface(
                self.cfg.surface_files, self.cfg.upstreams.keys(), self.cfg.management_mount
            )
        except ConfigError as exc:
            for problem in exc.problems:
                LOG.error("surface reload refused: %s", problem)
            self.metrics.reloads.labels("error").inc()
            return False
        self.surface, self.matcher = surface, Matcher(surface)
        self.catalogue = Catalogue.build(surface.scope_names())
        resettle()  # the old surface is let go: collect it, freeze the new one
        self.metrics.reloads.labels("ok").inc()
        LOG.info("surface reloaded: %d routes", len(surface.routes))
        return True
