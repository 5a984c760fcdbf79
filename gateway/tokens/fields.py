"""Reading the fields of a token request body (and the CLI's), and writing the token object.

Each reader takes the raw JSON value and returns a clean one or raises InvalidRequest naming the
field. Nothing here decides who may do what: that is the service's.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..config import parse_duration
from ..errors import InvalidRequest
from .store import Status, TokenRecord

NAME_RE = re.compile(r"[A-Za-z0-9 _.-]{1,100}")
# Workspace, project and target ids end up in upstream headers: no spaces, no control characters.
ID_RE = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
KIND_RE = re.compile(r"[a-z][a-z0-9_-]{0,39}")
OWNER_RE = re.compile(r"[\x21-\x7e]{1,200}")
MAX_TARGETS = 1000
MAX_CIDRS = 100
STATUSES: tuple[Status, ...] = ("active", "revoked", "all")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def state(record: TokenRecord, now: float, idle_ttl: float | None) -> str:
    """What a listing says about a token: active, revoked, expired, expired (idle), not yet valid."""
    if record.revoked_at is not None:
        return "revoked"
    if record.expires_at <= now:
        return "expired"
    if idle_ttl is not None and now - max(record.last_used_at or 0.0, record.created_at) > idle_ttl:
        return "expired (idle)"
    if record.not_before is not None and now < record.not_before:
        return "not yet valid"
    return "active"


def record_json(
    record: TokenRecord, secret: str | None = None, *, now: float | None = None, idle_ttl: float | None = None
) -> dict[str, Any]:
    """The contract's token object; `token` (the secret) only at creation; `status` when `now` is given."""
    out: dict[str, Any] = {"id": record.id, "name": record.name, "display_prefix": record.display_prefix}
    if secret is not None:
        out["token"] = secret
    out.update(
        scopes=list(record.scopes),
        workspace=record.workspace,
        project=record.project,
        targets=[{"kind": kind, "id": target} for kind, target in record.targets],
        created_at=iso(record.created_at),
        expires_at=iso(record.expires_at),
        last_used_at=iso(record.last_used_at),
        revoked_at=iso(record.revoked_at),
        not_before=iso(record.not_before),
        allowed_cidrs=list(record.allowed_cidrs),
        rotated_from=record.rotated_from,
    )
    if now is not None:
        out["status"] = state(record, now, idle_ttl)
    return out


def name(raw: object) -> str:
    if raw is None:
        raise InvalidRequest("name: required")
    if not isinstance(raw, str) or not NAME_RE.fullmatch(raw):
        raise InvalidRequest("name: 1-100 characters of letters, digits, space, '-', '_' and '.'")
    return raw


def optional_id(field: str, raw: object) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not ID_RE.fullmatch(raw):
        raise InvalidRequest(f"{field}: 1-128 characters of letters, digits, '.', '_', ':', '@' and '-'")
    return raw


def targets(raw: object) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidRequest("targets: must be a list of {kind, id} objects")
    if len(raw) > MAX_TARGETS:
        raise InvalidRequest(f"targets: at most {MAX_TARGETS}")
    out: dict[tuple[str, str], None] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or set(item) != {"kind", "id"}:
            raise InvalidRequest(f"targets[{i}]: must be an object with exactly kind and id")
        kind, target = item["kind"], item["id"]
        if not isinstance(kind, str) or not KIND_RE.fullmatch(kind):
            raise InvalidRequest(f"targets[{i}].kind: lowercase letters, digits, '_' and '-'")
        if isinstance(target, int) and not isinstance(target, bool):
            target = str(target)
        if not isinstance(target, str) or not ID_RE.fullmatch(target):
            raise InvalidRequest(
                f"targets[{i}].id: 1-128 characters of letters, digits, '.', '_', ':', '@', '-'"
            )
        out[(kind, target)] = None
    return tuple(out)


def owner(raw: object) -> str:
    if raw is None:
        return "cli"
    if not isinstance(raw, str) or not OWNER_RE.fullmatch(raw):
        raise InvalidRequest("owner: 1-200 printable ASCII characters without spaces")
    return raw


def status(raw: str) -> Status:
    for known in STATUSES:
        if raw == known:
            return known
    raise InvalidRequest("status: must be one of active, revoked, all")


def duration(field: str, raw: object) -> float:
    """Seconds, or a duration such as `30d`; finite and positive-or-zero, never an exception."""
    try:
        seconds = parse_duration(raw) if isinstance(raw, int | float | str) else None
    except (OverflowError, ValueError):
        # SECURITY: a 400-digit integer overflows float(); it is bad input, not a 500.
        seconds = None
    if seconds is None or not math.isfinite(seconds):
        raise InvalidRequest(f"{field}: must be seconds or a duration such as 30d or 12h")
    if seconds < 0:
        raise InvalidRequest(f"{field}: must not be negative")
    return seconds


def cidrs(raw: object) -> tuple[str, ...]:
    """IPv4 and IPv6 networks, normalised (`10.1.2.3/8` -> `10.0.0.0/8`), de-duplicated."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("allowed_cidrs: must be a non-empty list of CIDRs")
    if len(raw) > MAX_CIDRS:
        raise InvalidRequest(f"allowed_cidrs: at most {MAX_CIDRS}")
    out: dict[str, None] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, str) or len(item) > 64:
            raise InvalidRequest(f"allowed_cidrs[{i}]: must be a CIDR such as 10.0.0.0/8 or 2001:db8::/32")
        try:
            network = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise InvalidRequest(f"allowed_cidrs[{i}]: {item!r} is not a CIDR") from None
        out[str(network)] = None
    return tuple(out)


def networks(cidr_list: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidr_list)


def instant(field: str, raw: object) -> float:
    """An RFC 3339 time with a zone (`2026-01-01T00:00:00Z`) or Unix seconds; whole seconds."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise InvalidRequest(f"{field}: must be an RFC 3339 time such as 2026-01-01T00:00:00Z")
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise InvalidRequest(f"{field}: must be an RFC 3339 time such as 2026-01-01T00:00:00Z") from None
        if parsed.tzinfo is None:
            raise InvalidRequest(f"{field}: the time needs a zone, such as Z")
        try:
            value = parsed.timestamp()
        except (OverflowError, ValueError, OSError):
            raise InvalidRequest(f"{field}: out of range") from None
    else:
        try:
            value = float(raw)
        except OverflowError:
            raise InvalidRequest(f"{field}: out of range") from None
    if not math.isfinite(value) or value < 0:
        raise InvalidRequest(f"{field}: out of range")
    return float(math.floor(value))
