"""The bearer front door: one Authorization header, `Bearer`, then whoever claims the credential."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiohttp.hdrs import AUTHORIZATION
from multidict import CIMultiDictProxy

from ..errors import BadRequest, InvalidToken
from .principal import Principal

# An authenticator returns None for a credential of another kind ("not mine"), a Principal for
# a good one of its kind, and raises for a bad one of its kind.
Authenticate = Callable[[str, str | None], Awaitable[Principal | None]]


def credential_of(headers: CIMultiDictProxy[str], max_len: int) -> str:
    values = headers.getall(AUTHORIZATION, ())
    if len(values) > 1:
        # SECURITY: with two headers, `.get()` takes the first and an upstream may take the last.
        raise BadRequest("more than one Authorization header")
    if not values:
        raise InvalidToken("missing bearer credential")
    value = values[0]
    # SECURITY: cap before any hashing or decoding; never echo the value.
    if len(value) > max_len:
        raise InvalidToken("credential too long")
    scheme, _, credential = value.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential or " " in credential or not credential.isascii():
        raise InvalidToken("expected 'Authorization: Bearer <credential>'")
    return credential


async def authenticate(
    credential: str, workspace: str | None, authenticators: Sequence[Authenticate]
) -> Principal:
    for auth in authenticators:
        principal = await auth(credential, workspace)
        if principal is not None:
            return principal
    raise InvalidToken("unrecognised credential")
