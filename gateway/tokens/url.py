"""Checking and splitting `store:` URLs, without importing a database driver."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

PG_SCHEMES = ("postgresql://", "postgres://")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# libpq parameters asyncpg understands, plus our own `notify`. Anything else asyncpg would send to
# the server as a setting, so it is refused here with the line it stands on.
PG_PARAMS = frozenset(
    {"sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "target_session_attrs", "notify"}
)
PASSWORD_ENV = "SCOPEGATE_STORE_PASSWORD"  # noqa: S105 - the name of the variable


def check_store_url(url: str) -> str | None:
    """None when `url` names a store, else what is wrong with it (one line, no secret in it)."""
    if url.startswith("sqlite:///"):
        return None if len(url) > len("sqlite:///") else f"expected sqlite:///path.db, got {url!r}"
    if not url.startswith(PG_SCHEMES):
        return f"expected sqlite:///path.db or postgresql://user@host:port/db, got {url!r}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        return f"bad PostgreSQL URL: {e}"
    if parts.password is not None:
        # SECURITY: a config file is not a secret store; the password comes from the environment.
        return f"keep the password out of the URL: set ${PASSWORD_ENV} (or PGPASSWORD, ~/.pgpass)"
    if not parts.hostname:
        return "a PostgreSQL URL needs a host: postgresql://user@host:port/db"
    if port == 0:
        return "bad PostgreSQL URL: port 0"
    if not parts.path.strip("/"):
        return "a PostgreSQL URL needs a database name: postgresql://user@host:port/db"
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in PG_PARAMS:
            return f"unknown PostgreSQL URL parameter {key!r} (known: {', '.join(sorted(PG_PARAMS))})"
        if key == "sslmode" and value not in SSLMODES:
            return f"sslmode must be one of {', '.join(SSLMODES)}, got {value!r}"
        if key == "notify" and value not in ("on", "off"):
            return f"notify must be on or off, got {value!r}"
    return None


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
CHECKED_SSLMODES = ("verify-ca", "verify-full")


def weak_tls(url: str) -> str | None:
    """Why a PostgreSQL URL's link could be read or faked on the way, or None (loopback, a Unix
    socket, or a certificate checked). libpq's and asyncpg's default `prefer` falls back to plain
    text and never checks the server's certificate."""
    if not url.startswith(PG_SCHEMES):
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host in LOOPBACK_HOSTS or host.startswith("/"):
        return None
    mode = dict(parse_qsl(parts.query)).get("sslmode")
    if mode in CHECKED_SSLMODES:
        return None
    said = f"sslmode={mode}" if mode else "no sslmode (asyncpg's default, prefer)"
    return (
        f"store: {said} on {host}: the link may fall back to plain text and the server's certificate "
        "is not checked; use sslmode=verify-full (and sslrootcert=...)"
    )


def split_pg_url(url: str) -> tuple[str, bool]:
    """The DSN for asyncpg, and whether to LISTEN (our own `notify` parameter removed)."""
    parts = urlsplit(url)
    notify = True
    kept = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "notify":
            notify = value != "off"
        else:
            kept.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), notify


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
