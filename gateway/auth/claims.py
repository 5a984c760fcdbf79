"""JWT claims: strict JSON segments, typed claim readers, the workspace a JWT is vouched for in."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidToken, TargetDenied

MAX_CLAIM_CHARS = 1024
# RFC 6749 scope-token: printable ASCII except space, `"` and `\`.
_SCOPE_RE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,200}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def workspace_of(single: str | None, members: list[str] | None, requested: str | None) -> str | None:
    if requested is not None:
        if members is not None:
            if requested not in members:
                raise TargetDenied("workspace not among the token's workspaces")
            return requested
        if single is not None:
            if requested != single:
                raise TargetDenied("workspace differs from the token's workspace")
            return requested
        # SECURITY: a token bound to no workspace is not vouched for in the one the client names.
        return None
    if single is not None:
        return single
    if members is not None and len(members) == 1:
        return members[0]
    return None


def json_segment(segment: str, name: str) -> dict[str, Any]:
    """Strict base64url, strict UTF-8, JSON without duplicate keys or non-finite numbers."""
    try:
        if len(segment) % 4 == 1:
            raise ValueError("bad base64url length")
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
            raise ValueError("non-canonical base64url")
        # SECURITY: duplicate keys are refused: parsers disagree on which one wins.
        value = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except (ValueError, RecursionError, binascii.Error):
        raise InvalidToken(f"malformed token {name}") from None
    if not isinstance(value, dict):
        raise InvalidToken(f"malformed token {name}")
    return value


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise ValueError("duplicate key")
        out[name] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("non-finite number")
    return value


def numeric_date(payload: Mapping[str, Any], claim: str) -> float:
    value = payload[claim]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"token {claim!r} must be a number")
    try:
        return float(value)
    except OverflowError:
        raise InvalidToken(f"token {claim!r} is out of range") from None


def claim_str(payload: Mapping[str, Any], claim: str) -> str | None:
    if claim not in payload or payload[claim] is None:
        return None
    value = payload[claim]
    # SECURITY: claims become identity headers: no control characters, bounded length.
    if not isinstance(value, str) or not value or len(value) > MAX_CLAIM_CHARS or _CONTROL_RE.search(value):
        raise InvalidToken(f"token claim {claim!r} must be a non-empty string")
    return value


def claim_list(payload: Mapping[str, Any], claim: str) -> list[str] | None:
    if claim not in payload or payload[claim] is None:
        return None
    value = payload[claim]
    if not isinstance(value, list) or not all(
        isinstance(v, str) and v and len(v) <= MAX_CLAIM_CHARS and not _CONTROL_RE.search(v) for v in value
    ):
        raise InvalidToken(f"token claim {claim!r} must be a list of strings")
    return value


def scope_claim(payload: Mapping[str, Any], claim: str) -> frozenset[str] | None:
    """The scopes the claim grants; None when the JWT does not carry the claim (or it is null)."""
    value = payload.get(claim)
    if value is None:
        return None
    if isinstance(value, str):
        items = value.split(" ")
        items = [s for s in items if s]
    elif isinstance(value, list) and all(isinstance(s, str) for s in value):
        items = value
    else:
        raise InvalidToken(f"token claim {claim!r} must be a space-separated string or a list")
    if not all(_SCOPE_RE.fullmatch(s) for s in items):
        raise InvalidToken(f"token claim {claim!r} holds a malformed scope")
    return frozenset(items)
