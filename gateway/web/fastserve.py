"""A plain request through the fast door: the pipeline, the forward, the response as bytes.

The same stages as the aiohttp door (`_handle` in app.py), in the same order, through the same
`Ledger`; only the HTTP framing is written here. Responses carry what aiohttp would add to them
(Content-Length or chunked framing, a default Content-Type, Date, `Connection: close`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Final

from aiohttp.hdrs import AUTHORIZATION
from multidict import CIMultiDict, CIMultiDictProxy

from ..auth.principal import Principal
from ..pipeline import Decision
from ..proxy.exchange import check_body_size, exchange_plain, exchange_whole, request_head
from ..proxy.formscan import scanner_for
from ..proxy.forward import content_length, exchange_body, pump
from ..proxy.headers import SERVER, PerPrincipal, client_ip, downstream_pairs, identity_headers
from .errors import error_parts
from .ledger import Ledger
from .management import forward_decision

WHOLE_BODY: Final = 64 * 1024  # a body all here and this small goes upstream in one write with its head
# Module-level and Final: compiled, a read of a C static, not a lookup in the time module.
_perf_counter: Final = time.perf_counter
_time: Final = time.time

if TYPE_CHECKING:
    from ..proxy.pool import Connection
    from ..proxy.response import Message
    from ..surface.paths import CleanPath
    from .fastdoor import FastDoor

REASONS: Final = {s.value: s.phrase for s in HTTPStatus}
REASONS_B: Final = {code: phrase.encode() for code, phrase in REASONS.items()}
_STANDARD_REASONS: Final = frozenset(REASONS_B.values())
_SERVER_LINE: Final = f"Server: {SERVER}".encode()
_LAST_CHUNK: Final = b"0\r\n\r\n"
# Control bytes a head may not hold (CR and LF are counted apart): deleted, the length tells.
_CONTROL: Final = bytes([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
PASSED_ON_MEMO: Final = 1_000  # JWTs whose passed-on lines are remembered (cleared when full)
_PASSED_ON: Final[dict[str, bytes]] = {}


@dataclass(slots=True, init=False)
class Plain:
    """A request the fast door serves: HTTP/1.1, an origin-form target, no body or one of
    `length` bytes (its Content-Length). `__init__` written out, as CleanPath's is."""

    method: str
    target: str
    headers: CIMultiDictProxy[str]
    keep_alive: bool
    length: int

    def __init__(
        self, method: str, target: str, headers: CIMultiDictProxy[str], keep_alive: bool, length: int = 0
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.keep_alive = keep_alive
        self.length = length


async def serve_plain(door: FastDoor, req: Plain, vetted: CleanPath | Exception) -> bool:
    """Answer one request; True when the connection must close afterwards."""
    rt = door.rt
    led = Ledger(rt, req.method, req.target, req.headers)
    keep_alive = req.keep_alive
    door.started = 0
    try:
        if isinstance(vetted, Exception):
            raise vetted
        if vetted.segments[: len(rt.mount_segments)] == rt.mount_segments:
            # The one management endpoint the fast door serves (it hands off the others).
            led.fields["route"] = "management"
            d = await forward_decision(rt, req.headers, door.peer, led.fields)
            led.decision, status = "allow", 200
            door.write(_verified(d, req, led.rid, rt.cfg.workspace_header, keep_alive and not rt.draining))
            led.done(status)
            return not keep_alive
        client = client_ip(door.peer, req.headers, rt.cfg.trusted_proxies)
        d = await rt.pipeline.decide(req.method, vetted, req.headers, client)
        led.decided(d)
        status = await _proxy(door, req, d, led, keep_alive)
        led.forwarded(d, status)
    except Exception as exc:
        err, bug = led.refusal(exc)
        if door.started:  # a failure past the status line (pump handles its own): cut
            door.cut()
            status = door.started
        else:
            keep_alive = keep_alive and not bug
            headers, body = error_parts(err, led.rid)
            status = err.status
            ka = keep_alive and not rt.draining
            door.write(_whole(status, CIMultiDict(headers), body, req.method, ka))
    led.done(status)
    return not keep_alive


async def _proxy(door: FastDoor, req: Plain, d: Decision, led: Ledger, keep_alive: bool) -> int:
    rt = door.rt
    principal = d.principal
    headers = rt.headers.upstream_pairs(
        req.headers,
        principal,
        peer=door.peer,
        scheme=door.scheme,
        host=req.headers.get("Host"),
        rid=led.rid,
        keep_authorization=principal.kind == "jwt",
        identity=False,
    )
    # The identity headers as lines rendered and checked once per principal (as forward-auth's
    # answer has them): 6,000 instructions a token request less than formatting them each time.
    ours = _IDENTITY_LINES.get(principal, rt.headers.workspace_header)
    upstream = d.route.upstream
    pool = rt.upstreams.pools[upstream]
    target = pool.target(d.path.raw, d.path.query)
    if req.length:
        limits = rt.cfg.limits
        # SECURITY: a form body naming `_method` is refused before the upstream has all of it.
        scan = scanner_for(req.headers, limits.form_inspect, req.method)
        check_body_size(req.length, limits.max_body)
        framing = f"Content-Length: {req.length}"
        head = request_head(req.method, target, pool.authority, headers, framing, ours)
        started = _perf_counter()
        body = door.body.whole(WHOLE_BODY)
        if body is not None:
            if scan is not None:
                body = scan.feed(body) + scan.end()  # raises before a byte goes upstream
            conn, msg = await exchange_whole(pool, req.method, head, body)
        else:
            conn, msg = await exchange_body(
                pool, req.method, head, door.body.read, False, limits.max_body, scan
            )
            if not conn.reusable and door.body.unread:
                keep_alive = False  # the upstream answered before the client's body was all read
    else:
        head = request_head(req.method, target, pool.authority, headers, None, ours)
        started = _perf_counter()
        conn, msg = await exchange_plain(pool, req.method, head)
    led.timings["upstream_ms"] = (_perf_counter() - started) * 1000
    try:
        return await _respond(door, req, conn, msg, led, keep_alive)
    finally:
        pool.release(conn)


async def _respond(
    door: FastDoor, req: Plain, conn: Connection, msg: Message, led: Ledger, keep_alive: bool
) -> int:
    status = msg.status
    no_body = req.method == "HEAD" or status in (204, 304)
    keep_alive = keep_alive and not door.rt.draining  # no keep-alive while shutting down
    pairs = downstream_pairs(msg.headers)
    if msg.complete and not no_body:
        # The whole answer is here: one write, headers and body.
        body = conn.take_body()
        framing = b"Content-Length: %d" % len(body)
        door.write(upstream_head(msg, pairs, led.rid, framing, bool(body), keep_alive) + body)
        return status
    length = content_length(msg)
    if no_body:
        framing = b""
        if length is not None and status not in (204, 304):  # as aiohttp drops it
            framing = b"Content-Length: %d" % length
        door.write(upstream_head(msg, pairs, led.rid, framing, False, keep_alive))
        return status
    chunked = length is None
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    head = upstream_head(msg, pairs, led.rid, framing, chunked or bool(length), keep_alive)
    door.started = status
    door.write(head)

    async def write(chunk: bytes) -> None:
        if chunked:
            door.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            door.write(chunk)
        await door.drain()

    async def finish() -> None:
        if chunked:
            door.write(_LAST_CHUNK)
        await door.drain()

    await pump(conn, write, finish, door.cut, led.timings)
    return status


def _verified(d: Decision, req: Plain, rid: str, workspace_header: str, keep_alive: bool) -> bytes:
    """Forward-auth's 200 (`forward_answer`'s headers, as `_whole` frames them), from the
    principal's identity lines checked once (`_lines_of`), not a head checked per request."""
    # The request id is ours or a client's that matched _REQUEST_ID_RE: nothing to break a line.
    head = b"HTTP/1.1 200 OK\r\n%bX-Request-Id: %b\r\n" % (
        _IDENTITY_LINES.get(d.principal, workspace_header),
        rid.encode(),
    )
    if d.principal.kind == "jwt":
        head += _passed_on(req.headers.get(AUTHORIZATION, ""))
    head += _SERVER_LINE + (b"\r\nDate: " if req.method == "HEAD" else b"\r\nContent-Length: 0\r\nDate: ")
    head += _http_date().encode()
    return head + (b"\r\n\r\n" if keep_alive else b"\r\nConnection: close\r\n\r\n")


def _passed_on(authorization: str) -> bytes:
    """The lines that pass a JWT on (see forward_answer), its value checked as `_head` checks
    every value. Remembered per value, as the JWT's digest is: a client sends the same one until
    it expires, and the check cost 7,400 instructions a request (bench/instructions.py)."""
    lines = _PASSED_ON.get(authorization)
    if lines is None:
        value = _checked(authorization.encode("utf-8", "ignore"), 0)[:-4]  # raises: not remembered
        lines = b"X-Auth-Authorization: %b\r\nAuthorization: %b\r\n" % (value, value)
        if len(_PASSED_ON) >= PASSED_ON_MEMO:
            _PASSED_ON.clear()
        _PASSED_ON[authorization] = lines
    return lines


def _lines_of(principal: Principal, workspace_header: str) -> bytes:
    """The identity headers' lines, each ended, checked as `_head` checks a head."""
    pairs = identity_headers(principal, workspace_header).items()
    lines = "".join(f"{name}: {value}\r\n" for name, value in pairs).encode("utf-8", "ignore")
    _checked(lines[:-2], len(pairs) - 1)
    return lines


_IDENTITY_LINES: Final = PerPrincipal(_lines_of)  # remembered per principal, as identity_headers are


def _whole(status: int, headers: CIMultiDict[str], body: bytes, method: str, keep_alive: bool) -> bytes:
    """A response of the gateway's own (a refusal, forward-auth's answer) with its body, framed
    as aiohttp frames a `web.Response`."""
    if body or (status != 304 and method != "HEAD"):
        headers["Content-Length"] = str(len(body))
    if method == "HEAD":
        body = b""  # the length of what a GET would carry, and no body
    elif body:
        headers.setdefault("Content-Type", "application/octet-stream")
    return _head(status, headers, keep_alive) + body


_date: Final[list[object]] = [0, ""]


def _http_date() -> str:
    now = int(_time())
    if now != _date[0]:  # formatted once per second
        _date[:] = [now, formatdate(now, usegmt=True)]
    return str(_date[1])


def upstream_head(
    msg: Message, pairs: list[tuple[bytes, bytes]], rid: str, framing: bytes, typed: bool, keep_alive: bool
) -> bytes:
    """The client's response head for an upstream's answer, built from the parsed bytes: the
    upstream's headers (`downstream_pairs`), our request id, a Server, the gateway's own
    `framing`, a default Content-Type when `typed` (a body) and the upstream named none, Date,
    and `Connection: close` when the connection ends. Bytes that are no ASCII go out as aiohttp's
    door sends them (see `_as_text`).

    SECURITY: the upstream's header names and values came through llhttp, which refuses a CR, LF
    or any control byte but HTAB in them (tests/core/test_fastdoor.py checks that it still does,
    byte by byte, through the pool); what is added here is the gateway's own. The reason phrase
    is the one upstream part llhttp lets any byte but CR and LF into: it alone is checked here
    (`_reason`). Checking the whole head cost about 7,000 instructions a request."""
    reason = msg.reason or REASONS_B.get(msg.status, b"")
    if reason not in _STANDARD_REASONS:
        reason = _reason(reason)
    head = _upstream_lines(msg.status, reason, pairs, rid, framing, typed, keep_alive)
    if not head.isascii():  # rare: a name or value that is no ASCII
        texts = [_as_text_pair(name, value) for name, value in pairs]
        head = _upstream_lines(msg.status, reason, texts, rid, framing, typed, keep_alive)
    return head + b"\r\n\r\n"


def _upstream_lines(
    status: int,
    reason: bytes,
    pairs: list[tuple[bytes, bytes]],
    rid: str,
    framing: bytes,
    typed: bool,
    keep_alive: bool,
) -> bytes:
    lines = [b"HTTP/1.1 %d %b" % (status, reason)]
    rid_line = b"X-Request-Id: " + rid.encode()
    server = date = ctype = False
    for name, value in pairs:
        lname = name.lower()
        if lname == b"x-request-id":
            # The id the upstream and the decision log saw, never the upstream's own (in the
            # place of the first, as aiohttp's door sets it).
            if rid_line:
                lines.append(rid_line)
                rid_line = b""
            continue
        if lname == b"server":
            server = True
        elif lname == b"date":
            date = True
        elif lname == b"content-type":
            ctype = True
        lines.append(name + b": " + value)
    if rid_line:
        lines.append(rid_line)
    if not server:
        lines.append(_SERVER_LINE)
    if framing:
        lines.append(framing)
    if typed and not ctype:
        lines.append(b"Content-Type: application/octet-stream")
    if not date:
        lines.append(b"Date: " + _http_date().encode())
    if not keep_alive:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines)


def _reason(raw: bytes) -> bytes:
    """An upstream's reason phrase that is not a standard one: refused with a control byte (a
    bug's 500, by `_checked`), sent as aiohttp's door sends it otherwise."""
    _checked(raw, 0)  # one line: no CR, LF or control byte, or a ValueError
    return raw if raw.isascii() else _as_text(raw)


def _as_text_pair(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    if name.isascii() and value.isascii():
        return name, value
    return _as_text(name), value.decode("utf-8", "surrogateescape").encode("utf-8", "ignore")


def _as_text(raw: bytes) -> bytes:
    """Bytes that are no ASCII, as aiohttp's door sends them: read as latin-1, sent as UTF-8."""
    return raw.decode("latin-1").encode("utf-8")


def _head(status: int, headers: CIMultiDict[str], keep_alive: bool) -> bytes:
    if "Date" not in headers:
        headers["Date"] = _http_date()
    if not keep_alive and "Connection" not in headers:
        headers["Connection"] = "close"
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, '')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    # Lone surrogates (a client's bytes that are not UTF-8) are dropped, as aiohttp does.
    return _checked("\r\n".join(lines).encode("utf-8", "ignore"), len(lines) - 1)


def _checked(head: bytes, seps: int) -> bytes:
    """A response head of `seps` + 1 lines, ended; refused if a value broke a line or holds a
    control character (aiohttp refuses to write these too: a bug, never sent)."""
    # A regex search here cost about 8,000 instructions a request more (bench/instructions.py).
    if (
        head.count(b"\n") != seps
        or head.count(b"\r") != seps
        or len(head.translate(None, _CONTROL)) < len(head)
    ):
        raise ValueError("a control character in a response header")
    return head + b"\r\n\r\n"
