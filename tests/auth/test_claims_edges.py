"""JWT claim reading at its edges: segment lengths, the claim length bound, JSON round trips.

Written against the survivors of a mutation run of gateway/auth/claims.py (issue 14). Real signed
JWTs through a started authenticator where the refusal's detail is what a client sees; the pure
readers directly where the boundary is in their input.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.auth.claims import MAX_CLAIM_CHARS, claim_list, claim_str, json_segment
from gateway.errors import InvalidToken

from .conftest import MakeEnv
from .jwtkit import b64url, sign

# --- segment lengths -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "segment"),
    [
        pytest.param(b"{}", "e30", id="3-chars"),
        pytest.param(b"{ }", "eyB9", id="4-chars"),
        pytest.param(b'{"a":1}', "eyJhIjoxfQ", id="10-chars"),
        pytest.param(b'{"a": 1}', "eyJhIjogMX0", id="11-chars"),
        pytest.param(b'{"a": 12}', "eyJhIjogMTJ9", id="12-chars"),
    ],
)
def test_a_segment_of_any_valid_length_decodes(text: bytes, segment: str) -> None:
    assert b64url(text) == segment
    assert json_segment(segment, "payload") == json.loads(text)


@pytest.mark.parametrize("segment", ["e", "eyB9e", "eyJhIjoxfQ=", "eyJhIjoxfR"])
def test_an_impossible_or_non_canonical_segment_is_malformed(segment: str) -> None:
    with pytest.raises(InvalidToken) as info:
        json_segment(segment, "payload")
    assert info.value.detail == "malformed token payload"


async def test_a_four_character_payload_is_read_not_refused_as_malformed(make_env: MakeEnv) -> None:
    # `{ }` is the one JSON object whose segment is exactly 4 characters: it is read, and its
    # missing claims are what the client is told about.
    env = await make_env("secret-hs256")
    token = sign(env.signer.alg, env.signer.key, env.signer.header(), b"{ }")
    assert token.split(".")[1] == "eyB9"
    with pytest.raises(InvalidToken) as info:
        await env.auth.authenticate(token, None)
    assert info.value.detail == "token lacks the 'iss' claim"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(st.text(max_size=10), _JSON, max_size=5), st.sampled_from(["", " ", "\n", "\t "]))
def test_every_json_object_round_trips_through_its_segment(value: dict[str, Any], trailer: str) -> None:
    segment = b64url((json.dumps(value) + trailer).encode())
    assert json_segment(segment, "header") == value


# --- the claim length bound ----------------------------------------------------------------------


def test_a_string_claim_of_exactly_the_bound_is_read() -> None:
    value = "a" * MAX_CLAIM_CHARS
    assert claim_str({"sub": value}, "sub") == value
    with pytest.raises(InvalidToken) as info:
        claim_str({"sub": value + "a"}, "sub")
    assert info.value.detail == "token claim 'sub' must be a non-empty string"


def test_a_list_claim_item_of_exactly_the_bound_is_read() -> None:
    value = ["w" * MAX_CLAIM_CHARS, "ws2"]
    assert claim_list({"workspaces": value}, "workspaces") == value
    with pytest.raises(InvalidToken) as info:
        claim_list({"workspaces": ["w" * (MAX_CLAIM_CHARS + 1)]}, "workspaces")
    assert info.value.detail == "token claim 'workspaces' must be a list of strings"


async def test_a_subject_of_exactly_the_bound_authenticates(make_env: MakeEnv) -> None:
    env = await make_env("secret-hs256")
    subject = "s" * MAX_CLAIM_CHARS
    principal = await env.auth.authenticate(env.signer.token(sub=subject), None)
    assert principal is not None and principal.subject == subject
