"""`listen.tls` on a real `scopegate serve`: HTTPS to a real upstream, TLS 1.2+ only, mutual TLS,
the certificate swapped on SIGHUP, and `file:line` errors for bad TLS settings.

Every certificate is made by the test (tests/ops/tlskit.py); the gateway binds port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import ssl
import subprocess
import textwrap
import threading
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Upstream
from tests.support import cli_create, gateway_cli, spawn_serve, stop_async

from .port0 import wait_listening
from .test_metrics_logs import http_sync, labels, samples
from .tlskit import Issued, issue, make_ca

ROUTES = """routes:
  - id: health
    match: {path: /v1/health, methods: [GET]}
    class: anonymous
  - id: playlists
    match: {prefix: /v1/playlists}
    class: public
"""
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


@dataclass
class TlsGateway:
    proc: subprocess.Popen[bytes]
    port: int
    admin: int
    folder: Path
    config: Path
    log: Path
    ca: Issued
    server: Issued

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _tls_config(folder: Path, upstream_url: str, tls: str, extra: str = "") -> Path:
    (folder / "routes.yaml").write_text(ROUTES)
    config = folder / "config.yaml"
    config.write_text(
        f"""listen:
  host: 127.0.0.1
  port: 0
{textwrap.indent(tls, "  ")}admin: {{host: 127.0.0.1, port: 0}}
surface: routes.yaml
upstreams:
  default: {{url: "{upstream_url}", connect_timeout: 2, timeout: 5}}
store: sqlite:///tokens.db
log: {{level: info}}
"""
        + extra
    )
    return config


StartTls = Callable[..., Awaitable[TlsGateway]]


@pytest.fixture
async def start_tls(tmp_path: Path, upstream: Upstream) -> AsyncIterator[StartTls]:
    """Start `scopegate serve` with a fresh CA, a server certificate in certs/ and `listen.tls`."""
    procs: list[subprocess.Popen[bytes]] = []

    async def start(*, mutual: bool = False, extra: str = "") -> TlsGateway:
        folder = tmp_path / f"gw{len(procs)}"
        (folder / "certs").mkdir(parents=True)
        ca = make_ca()
        server = issue(ca, "scopegate server", server=True)
        server.write(folder / "certs", "server")
        (folder / "certs" / "clients-ca.crt").write_bytes(ca.cert_pem)
        tls = "tls: {cert_file: certs/server.crt, key_file: certs/server.key"
        tls += ", client_ca_file: certs/clients-ca.crt}\n" if mutual else "}\n"
        config = _tls_config(folder, upstream.url, tls, extra)
        log = folder / "stderr.log"
        proc = spawn_serve(config, log, stdout=False)
        procs.append(proc)
        ports = await asyncio.to_thread(wait_listening, proc, log, 2)
        deadline = time.monotonic() + 20
        while not (found := LISTENING.search(log.read_text(errors="replace"))):
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.05)
        port = int(found.group(1))
        (admin,) = ports - {port}
        return TlsGateway(proc, port, admin, folder, config, log, ca, server)

    yield start
    for proc in procs:
        await stop_async(proc, 12)


def client_context(
    ca: Issued,
    cert: Issued | None = None,
    folder: Path | None = None,
    max_version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca.cert_pem.decode())
    if cert is not None:
        assert folder is not None
        cert_file, key_file = cert.write(folder, "client")
        ctx.load_cert_chain(cert_file, key_file)
    if max_version is not None:
        # Let this client really offer the old versions, so only the server can refuse them.
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = max_version
    return ctx


def https_sync(
    port: int, ctx: ssl.SSLContext, target: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, bytes]:
    """One HTTPS request on a fresh connection: (status, body, the server certificate in DER)."""
    head = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
    ):
        der = s.getpeercert(binary_form=True) or b""
        s.sendall(head.encode() + b"\r\n")
        chunks = []
        while got := s.recv(65536):
            chunks.append(got)
    reply = b"".join(chunks)
    if not reply:
        raise ConnectionError("the server closed the connection without an answer")
    status_line, _, rest = reply.partition(b"\r\n")
    return int(status_line.split(b" ")[1]), rest.partition(b"\r\n\r\n")[2], der


async def https(port: int, ctx: ssl.SSLContext, target: str, **headers: str) -> tuple[int, bytes, bytes]:
    return await asyncio.to_thread(https_sync, port, ctx, target, headers)


def handshake_sync(port: int, ctx: ssl.SSLContext) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
    ):
        return s.getpeercert(binary_form=True) or b""


async def test_https_request_reaches_the_upstream_with_identity_and_proto_https(
    start_tls: StartTls, upstream: Upstream
) -> None:
    gw: TlsGateway = await start_tls()
    token = cli_create(gw.config, "--name", "t", "--workspace", "w", "--scope", "read")
    ctx = client_context(gw.ca)
    status, body, der = await https(gw.port, ctx, "/v1/playlists/7", Authorization=f"Bearer {token['token']}")
    assert status == 200, body
    assert der == gw.server.der
    seen = upstream.last
    assert seen.raw_path == "/v1/playlists/7"
    assert seen.header("X-Forwarded-Proto") == "https"
    assert seen.header("X-Auth-Token-Id") == token["id"]
    assert seen.header("Authorization") is None
    status, body, _ = await https(gw.port, ctx, "/v1/playlists/7")
    assert status == 401 and b'"invalid_token"' in body
    assert len(upstream.seen) == 1


async def test_plain_http_on_the_tls_port_gets_no_answer(start_tls: StartTls, upstream: Upstream) -> None:
    gw: TlsGateway = await start_tls()
    with pytest.raises((ValueError, IndexError, OSError)):
        await asyncio.to_thread(http_sync, "GET", gw.port, "/v1/health")
    assert upstream.seen == []


def silent_client_sync(port: int) -> float:
    """Connect and send nothing: seconds until the gateway hangs up."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        assert s.recv(1) == b""
    return time.monotonic() - started


async def test_a_client_that_never_completes_the_handshake_is_cut_off(
    start_tls: StartTls, upstream: Upstream
) -> None:
    gw: TlsGateway = await start_tls(extra="limits: {header_timeout: 1}\n")
    assert await asyncio.to_thread(silent_client_sync, gw.port) < 10
    assert upstream.seen == []


@contextlib.contextmanager
def permissive_tls_server(server: Issued, folder: Path) -> Iterator[int]:
    """A control server that accepts TLS 1.0 and 1.1, to prove the client can really speak them."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.load_cert_chain(*server.write(folder, "control"))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept_one() -> None:
        conn, _ = listener.accept()
        with conn, contextlib.suppress(OSError), ctx.wrap_socket(conn, server_side=True) as s:
            s.recv(1)

    thread = threading.Thread(target=accept_one, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        thread.join(timeout=10)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1], ids=["tls1.1", "tls1.0"])
async def test_tls_below_1_2_is_refused(
    start_tls: StartTls, upstream: Upstream, tmp_path: Path, version: ssl.TLSVersion
) -> None:
    gw: TlsGateway = await start_tls()
    old = client_context(gw.ca, max_version=version)
    with permissive_tls_server(gw.server, tmp_path) as control:
        try:
            await asyncio.to_thread(handshake_sync, control, old)
        except ssl.SSLError as exc:
            pytest.skip(f"this OpenSSL cannot speak {version.name} at all: {exc}")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.to_thread(handshake_sync, gw.port, old)
    assert await asyncio.to_thread(
        handshake_sync, gw.port, client_context(gw.ca, max_version=ssl.TLSVersion.TLSv1_2)
    )
    assert upstream.seen == []


async def test_mutual_tls_admits_a_client_certificate_from_the_ca(
    start_tls: StartTls, upstream: Upstream, tmp_path: Path
) -> None:
    gw: TlsGateway = await start_tls(mutual=True)
    client = issue(gw.ca, "edge proxy", server=False)
    status, _, _ = await https(gw.port, client_context(gw.ca, client, tmp_path), "/v1/health")
    assert status == 200
    assert [s.raw_path for s in upstream.seen] == ["/v1/health"]


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
async def test_mutual_tls_refuses_a_client_without_a_certificate(
    start_tls: StartTls, upstream: Upstream, version: ssl.TLSVersion
) -> None:
    gw: TlsGateway = await start_tls(mutual=True)
    ctx = client_context(gw.ca)
    ctx.maximum_version = version
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await https(gw.port, ctx, "/v1/health")
    assert upstream.seen == []


async def test_mutual_tls_refuses_a_client_certificate_from_another_ca(
    start_tls: StartTls, upstream: Upstream, tmp_path: Path
) -> None:
    gw: TlsGateway = await start_tls(mutual=True)
    stranger = issue(make_ca("another CA"), "edge proxy", server=False)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await https(gw.port, client_context(gw.ca, stranger, tmp_path), "/v1/health")
    assert upstream.seen == []


def replace_files(pairs: dict[Path, bytes]) -> None:
    for path, data in pairs.items():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)


async def reload_counts(gw: TlsGateway) -> dict[str, float]:
    _, body = await asyncio.to_thread(http_sync, "GET", gw.admin, "/metrics")
    found = samples(body, "scopegate_reloads_total")
    return {result: found.get(labels(result=result), 0.0) for result in ("ok", "error")}


async def served_certificate(gw: TlsGateway) -> bytes:
    return await asyncio.to_thread(handshake_sync, gw.port, client_context(gw.ca))


async def poll(check: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_sighup_swaps_the_certificate_and_a_broken_one_keeps_the_old(
    start_tls: StartTls, upstream: Upstream
) -> None:
    gw: TlsGateway = await start_tls()
    assert await served_certificate(gw) == gw.server.der
    second = issue(gw.ca, "scopegate server, renewed", server=True)
    cert, key = gw.folder / "certs" / "server.crt", gw.folder / "certs" / "server.key"
    replace_files({cert: second.cert_pem, key: second.key_pem})
    gw.proc.send_signal(signal.SIGHUP)

    async def renewed() -> bool:
        return await served_certificate(gw) == second.der

    await poll(renewed)
    status, _, _ = await https(gw.port, client_context(gw.ca), "/v1/health")
    assert status == 200
    assert (await reload_counts(gw))["error"] == 0

    # A renewal gone wrong: a certificate that does not match the key, then one that is no PEM.
    third = issue(gw.ca, "scopegate server, mismatched", server=True)
    broken_files = ((third.cert_pem, "does not match"), (b"not a certificate\n", "no PEM certificate"))
    for broken, message in broken_files:
        before = (await reload_counts(gw))["error"]
        replace_files({cert: broken})
        gw.proc.send_signal(signal.SIGHUP)

        async def counted(before: float = before) -> bool:
            return (await reload_counts(gw))["error"] == before + 1

        await poll(counted)
        assert message in gw.log_text()
        assert "TLS reload refused, the old certificate keeps serving" in gw.log_text()
        assert await served_certificate(gw) == second.der
        status, _, _ = await https(gw.port, client_context(gw.ca), "/v1/health")
        assert status == 200
    assert gw.proc.poll() is None


# ---------------------------------------------------------------------------------------------
# configuration errors: `scopegate check` names file:line


def _check_case(tmp_path: Path, tls: str, files: dict[str, bytes]) -> tuple[int, str]:
    (tmp_path / "certs").mkdir(exist_ok=True)
    for name, data in files.items():
        (tmp_path / "certs" / name).write_bytes(data)
    config = _tls_config(tmp_path, "http://127.0.0.1:9", tls)
    done = gateway_cli(config, "check")
    return done.returncode, done.stdout + done.stderr


def _files() -> dict[str, bytes]:
    ca = make_ca()
    server = issue(ca, "s", server=True)
    other = issue(ca, "o", server=True)
    from cryptography.hazmat.primitives import serialization

    encrypted = server.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret-passphrase"),
    )
    return {
        "server.crt": server.cert_pem,
        "server.key": server.key_pem,
        "other.key": other.key_pem,
        "encrypted.key": encrypted,
        "ca.crt": ca.cert_pem,
        "junk.pem": b"-----BEGIN NOTHING-----\nzzz\n-----END NOTHING-----\n",
    }


PAIR = "tls:\n  cert_file: certs/server.crt\n  key_file: certs/server.key\n"
# The `tls:` line is line 4 of the config; its keys follow on 5, 6, 7 when written as a block.
CHECK_CASES = {
    "missing-cert-file": (
        "tls:\n  cert_file: certs/absent.crt\n  key_file: certs/server.key\n",
        r":5: listen\.tls\.cert_file: no such file '.*/certs/absent\.crt'",
    ),
    "missing-client-ca-file": (
        PAIR + "  client_ca_file: certs/none.crt\n",
        r":7: listen\.tls\.client_ca_file: no such file",
    ),
    "no-key-file-key": ("tls:\n  cert_file: certs/server.crt\n", r":5: listen\.tls: missing key 'key_file'"),
    "unknown-key": (
        "tls:\n  cert_file: certs/server.crt\n  key_file: certs/server.key\n  ciphers: ALL\n",
        r":7: listen\.tls: unknown key 'ciphers'",
    ),
    "not-a-mapping": ("tls: certs/server.crt\n", r":4: listen\.tls: expected a mapping"),
    "key-of-another-certificate": (
        "tls:\n  cert_file: certs/server.crt\n  key_file: certs/other.key\n",
        r":6: listen\.tls\.key_file: does not match the certificate in cert_file",
    ),
    "encrypted-key": (
        "tls:\n  cert_file: certs/server.crt\n  key_file: certs/encrypted.key\n",
        r":6: listen\.tls\.key_file: .* is encrypted",
    ),
    "cert-not-pem": (
        "tls:\n  cert_file: certs/junk.pem\n  key_file: certs/server.key\n",
        r":5: listen\.tls\.cert_file: .* holds no PEM certificate",
    ),
    "key-not-pem": (
        "tls:\n  cert_file: certs/server.crt\n  key_file: certs/junk.pem\n",
        r":6: listen\.tls\.key_file: .* holds no PEM private key",
    ),
    "client-ca-not-pem": (
        PAIR + "  client_ca_file: certs/junk.pem\n",
        r":7: listen\.tls\.client_ca_file: .* holds no PEM certificate",
    ),
    "path-not-a-string": (
        "tls:\n  cert_file: [a]\n  key_file: certs/server.key\n",
        r":5: listen\.tls\.cert_file: expected a file path",
    ),
}


@pytest.fixture(scope="module")
def tls_files() -> dict[str, bytes]:
    return _files()


@pytest.mark.parametrize("case", list(CHECK_CASES))
def test_check_names_file_and_line_of_a_bad_tls_setting(
    tmp_path: Path, tls_files: dict[str, bytes], case: str
) -> None:
    tls, expected = CHECK_CASES[case]
    code, out = _check_case(tmp_path, tls, tls_files)
    assert code == 1, out
    assert re.search(r"config\.yaml" + expected, out), out
    assert "Traceback" not in out


def test_check_accepts_valid_tls_with_paths_relative_to_the_config(
    tmp_path: Path, tls_files: dict[str, bytes]
) -> None:
    tls = PAIR + "  client_ca_file: certs/ca.crt\n"
    code, out = _check_case(tmp_path, tls, tls_files)
    assert code == 0, out


def test_tls_on_the_admin_listener_is_an_unknown_key(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(ROUTES)
    config = tmp_path / "config.yaml"
    config.write_text(
        "listen: {host: 127.0.0.1, port: 0}\n"
        "admin: {host: 127.0.0.1, port: 0, tls: {cert_file: a, key_file: b}}\n"
        "surface: routes.yaml\nupstreams: {default: 'http://127.0.0.1:9'}\n"
    )
    done = gateway_cli(config, "check")
    assert done.returncode == 1
    assert re.search(r"config\.yaml:2: admin: unknown key 'tls'", done.stdout + done.stderr)
