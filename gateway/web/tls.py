"""TLS on the public listener: `listen.tls` read and checked, the server context built, and the
certificate swapped on SIGHUP without closing the listening socket.

The listener is created once with `ServerTls.context`. That context holds no certificate of its
own: its SNI callback (called for every ClientHello, with or without a server name) hands each
new connection the context most recently loaded from the files. A reload builds a complete new
context first and swaps it in only when every file loaded, so a broken certificate on reload
leaves the old one serving.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ..yamlsrc import LMap, line_of

LOG = logging.getLogger("scopegate")
KEYS = ("cert_file", "key_file", "client_ca_file")


@dataclass(frozen=True)
class TlsFiles:
    """`listen.tls`, its paths resolved against the config file's folder."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None


class TlsError(Exception):
    """A TLS file that cannot serve; `key` names the `listen.tls` key at fault."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"listen.tls.{key}: {message}")
        self.key = key


def read_tls(node: Any, base_dir: str, line: int, error: Callable[[int, str], None]) -> TlsFiles | None:
    """`listen.tls` from config.yaml; every problem goes to `error(line, message)`."""
    if not isinstance(node, LMap):
        error(line, "listen.tls: expected a mapping {cert_file, key_file, client_ca_file?}")
        return None
    ok = True
    for key in node:
        if key not in KEYS:
            error(line_of(node, key, line), f"listen.tls: unknown key {key!r}")
            ok = False
    paths: dict[str, str | None] = {}
    for key in KEYS:
        value = node.get(key)
        if value is None:
            if key != "client_ca_file":
                error(node.line or line, f"listen.tls: missing key {key!r}")
                ok = False
            paths[key] = None
            continue
        if not isinstance(value, str) or not value:
            error(line_of(node, key, line), f"listen.tls.{key}: expected a file path, got {value!r}")
            ok = False
            continue
        path = value if os.path.isabs(value) else os.path.join(base_dir, value)
        if not os.path.isfile(path):
            error(line_of(node, key, line), f"listen.tls.{key}: no such file {path!r}")
            ok = False
        paths[key] = path
    if not ok:
        return None
    cert, key_file = paths["cert_file"], paths["key_file"]
    assert cert is not None and key_file is not None
    files = TlsFiles(cert, key_file, paths["client_ca_file"])
    try:
        build_context(files)
    except TlsError as exc:
        error(line_of(node, exc.key, line), str(exc))
        return None
    return files


def _read(key: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TlsError(key, f"cannot read {path!r}: {exc.strerror or exc}") from None


def _certificates(key: str, path: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(_read(key, path))
    except ValueError:
        raise TlsError(key, f"{path!r} holds no PEM certificate") from None
    return certs


def _check_files(files: TlsFiles) -> None:
    """Precise messages for the usual mistakes, before OpenSSL's terse ones."""
    leaf = _certificates("cert_file", files.cert_file)[0]
    try:
        private = serialization.load_pem_private_key(_read("key_file", files.key_file), password=None)
    except TypeError:
        raise TlsError("key_file", f"{files.key_file!r} is encrypted; give an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise TlsError("key_file", f"{files.key_file!r} holds no PEM private key") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise TlsError("key_file", "does not match the certificate in cert_file")
    if files.client_ca_file is not None:
        _certificates("client_ca_file", files.client_ca_file)


def _base_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # SECURITY: TLS 1.0 and 1.1 are refused whatever the system's OpenSSL defaults say.
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


def build_context(files: TlsFiles) -> ssl.SSLContext:
    """A server context with the certificate, key and (for mutual TLS) client CAs loaded."""
    _check_files(files)
    ctx = _base_context()
    try:
        ctx.load_cert_chain(files.cert_file, files.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise TlsError("cert_file", f"cannot load with key_file: {exc}") from None
    if files.client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=files.client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise TlsError("client_ca_file", f"cannot load: {exc}") from None
        # SECURITY: mutual TLS: a client without a certificate from these CAs never gets a session.
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class ServerTls:
    """The listener's context; `reload()` swaps the certificate for new connections."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._current = build_context(files)
        self.context = _base_context()
        # The verify mode of a connection is fixed when it is accepted, from this context.
        self.context.verify_mode = self._current.verify_mode
        self.context.sni_callback = self._select

    def _select(self, conn: Any, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
        conn.context = self._current

    def reload(self) -> bool:
        """Load the files again; a file that fails keeps the old certificate serving."""
        try:
            fresh = build_context(self.files)
        except TlsError as exc:
            LOG.error("TLS reload refused, the old certificate keeps serving: %s", exc)
            return False
        self._current = fresh
        self.context.verify_mode = fresh.verify_mode
        LOG.info("TLS certificate reloaded from %s", self.files.cert_file)
        return True
