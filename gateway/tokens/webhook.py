"""Expiry warnings: one signed POST per token and threshold (`tokens.expiry_webhook`).

Every gateway runs a notifier; the store decides who sends what. A round claims the due
(token, threshold) pairs for a lease (exclusive across processes), POSTs each, and records the
outcome: sent (never claimed again) or failed (claimable again after a backoff of 2^attempt
seconds, at most an hour, until the token expires). A process that dies between sending and
recording leaves the claim to lapse, so a receiver may rarely see a warning twice: each carries a
stable `id` (token id and threshold) to deduplicate on.

The body never holds a secret or a hash: ids, names, scopes and times only. It is signed like
Stripe's webhooks: `X-Scopegate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`
with the secret from $SCOPEGATE_WEBHOOK_SECRET.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import time
from collections.abc import Callable

import aiohttp

from ..config import ExpiryWebhook
from ..errors import StoreUnavailable
from .fields import iso
from .store import ExpiryNotice, TokenStore

log = logging.getLogger("scopegate.webhook")

SECRET_ENV = "SCOPEGATE_WEBHOOK_SECRET"  # noqa: S105 (the variable's name, not a secret)
MIN_SECRET_BYTES = 16
LEASE = 60.0  # seconds a claim is held: longer than a delivery can take
TIMEOUT = 10.0
MAX_BACKOFF = 3600.0
SIGNATURE_HEADER = "X-Scopegate-Signature"


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def backoff(attempt: int) -> float:
    return float(min(2.0 ** min(attempt, 20), MAX_BACKOFF))


def payload(notice: ExpiryNotice, now: float) -> bytes:
    r = notice.record
    # SECURITY: ids, names and times only; never the secret or its hash.
    body = {
        "event": "token.expiring",
        "id": f"{r.id}:{notice.threshold}",
        "threshold_seconds": notice.threshold,
        "expires_in_seconds": max(0, math.floor(r.expires_at - now)),
        "sent_at": iso(now),
        "attempt": notice.attempt,
        "token": {
            "id": r.id,
            "name": r.name,
            "workspace": r.workspace,
            "project": r.project,
            "owner": r.owner,
            "scopes": list(r.scopes),
            "expires_at": iso(r.expires_at),
        },
    }
    return json.dumps(body, sort_keys=True).encode()


class ExpiryNotifier:
    def __init__(
        self,
        store: TokenStore,
        cfg: ExpiryWebhook,
        secret: bytes,
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.secret = secret
        self.interval = interval
        self.clock = clock
        self.sent = 0
        self.failed = 0
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT))
        if self._task is None:
            self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def run_once(self) -> int:
        """One round: claim, deliver, record. The number of warnings delivered."""
        notices = await self.store.claim_expiry_notices(self.clock(), self.cfg.before, LEASE)
        delivered = 0
        for notice in notices:
            ok = await self._deliver(notice)
            now = self.clock()
            retry_at = now if ok else now + backoff(notice.attempt)
            await self.store.finish_expiry_notice(
                notice.record.id, notice.threshold, sent=ok, retry_at=retry_at
            )
            delivered += ok
        return delivered

    async def _deliver(self, notice: ExpiryNotice) -> bool:
        assert self._session is not None
        now = self.clock()
        body = payload(notice, now)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, math.floor(now), body),
            "User-Agent": "scopegate",
        }
        try:
            async with self._session.post(
                str(self.cfg.url), data=body, headers=headers, allow_redirects=False
            ) as resp:
                await resp.read()
                ok = 200 <= resp.status < 300
                why = f"HTTP {resp.status}"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            ok, why = False, type(exc).__name__
        if ok:
            self.sent += 1
        else:
            self.failed += 1
            log.warning(
                "expiry webhook for %s (%ds) failed (%s), attempt %d; retrying in %ds",
                notice.record.id,
                notice.threshold,
                why,
                notice.attempt,
                backoff(notice.attempt),
            )
        return ok

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.run_once()
            except StoreUnavailable as exc:
                log.warning("expiry webhook round skipped: %s", exc.detail)
            except Exception:
                log.exception("expiry webhook round failed")
