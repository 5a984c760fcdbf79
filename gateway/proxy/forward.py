"""Streaming forward to an upstream: one pooled ClientSession per upstream, bodies never held whole."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from ..config import Upstream
from ..errors import BodyTooLarge, GatewayError, UpstreamTimeout, UpstreamUnavailable
from .formscan import FormScan
from .headers import downstream_response

CHUNK = 64 * 1024
SMALL_BODY = 64 * 1024


class Upstreams:
    """The client sessions, created and closed with the app (a cleanup_ctx pairs them)."""

    def __init__(self, upstreams: Mapping[str, Upstream]) -> None:
        self._config = dict(upstreams)
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    async def start(self) -> None:
        for name, up in self._config.items():
            self._sessions[name] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=None, connect=up.connect_timeout, sock_read=up.timeout),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    def session(self, name: str) -> aiohttp.ClientSession:
        return self._sessions[name]

    def url(self, name: str, raw_path: str, query: str) -> URL:
        base = self._config[name].url
        # SECURITY: encoded=True sends the raw path byte for byte; yarl would otherwise resolve
        # dot segments and re-encode, so the upstream could see another path than we matched.
        prefix = base.raw_path.rstrip("/")
        target = f"{prefix}{raw_path}" + (f"?{query}" if query else "")
        return URL(f"{base.scheme}://{base.raw_authority}{target}", encoded=True)


class LimitedBody:
    """The request body as a stream, cut off past max_body whatever the framing.

    The client library wraps errors raised inside a body generator, so a refusal (an overrun, a
    form naming `_method`) is also remembered here and re-raised by the caller.
    """

    def __init__(self, request: web.Request, max_body: int, scan: FormScan | None = None) -> None:
        self._request, self._max, self._scan = request, max_body, scan
        self.refused: GatewayError | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen, scan = 0, self._scan
        try:
            async for chunk in self._request.content.iter_any():
                seen += len(chunk)
                if seen > self._max:
                    raise BodyTooLarge(f"request body over {self._max} bytes")
                # SECURITY: a form scanner holds back what it has not judged; its refusal cuts
                # the upstream request before the upstream has a complete body.
                out = scan.feed(chunk) if scan is not None else chunk
                if out:
                    yield out
            if scan is not None and (out := scan.end()):
                yield out
        except GatewayError as exc:
            self.refused = exc
            raise


@contextlib.asynccontextmanager
async def upstream_errors(name: str) -> AsyncIterator[None]:
    """Map client-side failures to the contract's 502/504, never leaking internals."""
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise UpstreamTimeout(f"upstream {name} did not answer in time") from None
    except (aiohttp.ClientError, asyncio.IncompleteReadError):
        raise UpstreamUnavailable(f"upstream {name} is unavailable") from None


async def forward(
    request: web.Request,
    upstreams: Upstreams,
    name: str,
    url: URL,
    headers: CIMultiDict[str],
    max_body: int,
    timings: dict[str, float],
    scan: FormScan | None = None,
) -> web.StreamResponse:
    declared = request.content_length
    if declared is not None and declared > max_body:
        raise BodyTooLarge(f"request body over {max_body} bytes")
    body = LimitedBody(request, max_body, scan) if request.body_exists else None
    session = upstreams.session(name)
    started = time.perf_counter()
    try:
        async with upstream_errors(name):
            upstream = await session.request(
                request.method,
                url,
                headers=headers,
                data=body.__aiter__() if body else None,
                allow_redirects=False,
                compress=None,
                expect100=False,
            )
    except Exception:
        if body is not None and body.refused is not None:
            raise body.refused from None
        raise
    timings["upstream_ms"] = (time.perf_counter() - started) * 1000
    try:
        headers_out = downstream_response(upstream.headers)
        # The id the upstream and the decision log saw, never the upstream's own.
        headers_out["X-Request-Id"] = headers["X-Request-Id"]
        length = upstream.headers.get("Content-Length")
        if (
            length is not None
            and length.isdigit()
            and int(length) <= SMALL_BODY
            and request.method != "HEAD"
            and "Transfer-Encoding" not in upstream.headers
        ):
            # Small bodies of known length go out in one write with the headers.
            async with upstream_errors(name):
                data = await upstream.content.readexactly(int(length))
            return web.Response(
                status=upstream.status, reason=upstream.reason, body=data, headers=headers_out
            )
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        response.headers.extend(headers_out)
        if length is not None and "Transfer-Encoding" not in upstream.headers and length.isdigit():
            response.content_length = int(length)
        elif request.method != "HEAD" and upstream.status not in (204, 304) and upstream.status >= 200:
            response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            if request.method != "HEAD":
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    await response.write(chunk)
            await response.write_eof()
        except (TimeoutError, aiohttp.ClientError):
            # The status line is gone already: the only honest signal left is a cut connection.
            timings["upstream_error"] = 1
            if request.transport is not None:
                request.transport.close()
        return response
    finally:
        upstream.release()
