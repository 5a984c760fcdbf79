"""The bearer front door, unit by unit: what it accepts, what it refuses, and with which detail.

The end-to-end refusals (tests/gates/test_refusals.py) check codes; these pin every branch of
credential_of and authenticate (written to kill the survivors of tools/mutation.py).
"""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.auth.bearer import authenticate, credential_of
from gateway.auth.principal import Principal
from gateway.errors import BadRequest, InvalidToken

MAX = 32


def headers(*values: str) -> CIMultiDictProxy[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for v in values:
        out.add("Authorization", v)
    return CIMultiDictProxy(out)


@pytest.mark.parametrize(
    ("value", "credential"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER abc", "abc"),
        ("  Bearer abc  ", "abc"),
        ("Bearer    abc", "abc"),
        ("Bearer " + "x" * (MAX - 7), "x" * (MAX - 7)),  # exactly max_len bytes in all
    ],
    ids=["plain", "lower-scheme", "upper-scheme", "outer-space", "inner-space", "at-the-cap"],
)
def test_accepted(value: str, credential: str) -> None:
    assert credential_of(headers(value), MAX) == credential


@pytest.mark.parametrize(
    ("values", "error", "detail"),
    [
        ((), InvalidToken, "missing bearer credential"),
        (("Bearer a", "Bearer a"), BadRequest, "more than one Authorization header"),
        (("Bearer a", "Bearer b"), BadRequest, "more than one Authorization header"),
        (("Bearer " + "x" * (MAX - 6),), InvalidToken, "credential too long"),
        (("Basic abc",), InvalidToken, "expected 'Authorization: Bearer <credential>'"),
        (("Bearer",), InvalidToken, "expected 'Authorization: Bearer <credential>'"),
        (("Bearer ",), InvalidToken, "expected 'Authorization: Bearer <credential>'"),
        (("Bearer a b",), InvalidToken, "expected 'Authorization: Bearer <credential>'"),
        (("Bearer caf\u00e9",), InvalidToken, "expected 'Authorization: Bearer <credential>'"),
        (("Bearerabc",), InvalidToken, "expected 'Authorization: Bearer <credential>'"),
        (("Token abc",), InvalidToken, "expected 'Authorization: Bearer <credential>'"),
    ],
    ids=[
        "missing",
        "two-same",
        "two-different",
        "over-the-cap",
        "other-scheme",
        "scheme-only",
        "empty-credential",
        "space-inside",
        "non-ascii",
        "no-separator",
        "token-scheme",
    ],
)
def test_refused(values: tuple[str, ...], error: type[Exception], detail: str) -> None:
    with pytest.raises(error) as info:
        credential_of(headers(*values), MAX)
    # Exactly this class and detail: a 400 must not become a 401, and the detail is the contract's.
    assert type(info.value) is error
    assert str(info.value) == detail


def test_an_overlong_value_is_refused_before_it_is_read() -> None:
    """Over the cap even when the rest would be garbage: the cap comes first."""
    with pytest.raises(InvalidToken, match="too long"):
        credential_of(headers("Basic " + "\u00e9" * MAX), MAX)


PRINCIPAL = Principal(kind="token", subject="svc", scopes=frozenset({"read"}))


async def test_authenticate_asks_in_order_until_one_claims_it() -> None:
    asked: list[tuple[str, str, str | None]] = []

    def named(name: str, answer: Principal | None):  # type: ignore[no-untyped-def]
        async def auth(credential: str, workspace: str | None) -> Principal | None:
            asked.append((name, credential, workspace))
            return answer

        return auth

    got = await authenticate("cred", "w1", [named("a", None), named("b", PRINCIPAL), named("c", None)])
    assert got is PRINCIPAL
    assert asked == [("a", "cred", "w1"), ("b", "cred", "w1")]


async def test_a_credential_nobody_claims_is_invalid() -> None:
    async def nobody(credential: str, workspace: str | None) -> Principal | None:
        return None

    with pytest.raises(InvalidToken) as info:
        await authenticate("cred", None, [nobody, nobody])
    assert str(info.value) == "unrecognised credential"
    with pytest.raises(InvalidToken):
        await authenticate("cred", None, [])
