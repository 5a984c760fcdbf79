from __future__ import annotations

import hashlib
import re
import zlib

import pytest

from gateway.tokens import secret
from gateway.tokens.secret import checksum, display_prefix, generate, hash_token, new_id, well_formed

PREFIX = "st_"
TOKEN_RE = re.compile(r"^st_[0-9A-Za-z]{38}$")


def forge(prefix: str, random_part: str) -> str:
    """A token with a *correct* checksum over whatever random part is given."""
    body = prefix + random_part
    return body + checksum(body)


def test_generate_has_the_contract_shape() -> None:
    token = generate(PREFIX)
    assert TOKEN_RE.match(token)
    assert len(token) == len(PREFIX) + 32 + 6
    assert well_formed(token, PREFIX)


def test_generate_is_random() -> None:
    tokens = {generate(PREFIX) for _ in range(2000)}
    assert len(tokens) == 2000
    # every base62 character shows up somewhere in the random parts
    assert set("".join(t[3:35] for t in tokens)) == set(secret.ALPHABET)


def test_checksum_is_zero_padded_base62_crc32() -> None:
    # crc32(b"st_" + b"0" * 32) == 2171801514 == "2Myemg" in base62
    assert checksum("st_" + "0" * 32) == "2Myemg"
    assert forge("st_", "0" * 32) == "st_" + "0" * 32 + "2Myemg"
    # a small CRC still takes six characters
    small = next(f"{i:032d}" for i in range(10**6) if zlib.crc32(f"x{i:032d}".encode()) < 62**5)
    assert len(checksum("x" + small)) == 6
    assert checksum("x" + small).startswith("0")


GOOD = generate(PREFIX)


def _flip(token: str, index: int) -> str:
    c = token[index]
    return token[:index] + ("A" if c != "A" else "B") + token[index + 1 :]


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(_flip(GOOD, 10), id="random-char-changed"),
        pytest.param(_flip(GOOD, len(GOOD) - 1), id="checksum-char-changed"),
        pytest.param(GOOD[:-1], id="one-short"),
        pytest.param(GOOD + "A", id="one-long"),
        pytest.param(forge(PREFIX, "a" * 31), id="short-with-valid-checksum"),
        pytest.param(forge(PREFIX, "a" * 33), id="long-with-valid-checksum"),
        pytest.param("xx_" + GOOD[3:], id="other-prefix"),
        pytest.param(forge("ST_", "a" * 32), id="prefix-case"),
        pytest.param(GOOD[:10] + "\u00e9" + GOOD[11:], id="non-ascii"),
        pytest.param(GOOD[:10] + "\uff11" + GOOD[11:], id="fullwidth-digit"),
        pytest.param(GOOD[:10] + "-" + GOOD[11:], id="not-base62"),
        pytest.param(GOOD[:10] + " " + GOOD[11:], id="space"),
        pytest.param("", id="empty"),
        pytest.param(PREFIX, id="prefix-only"),
    ],
)
def test_well_formed_refuses(token: str) -> None:
    assert not well_formed(token, PREFIX)


def test_well_formed_accepts_other_configured_prefix() -> None:
    token = generate("acme_")
    assert well_formed(token, "acme_")
    assert not well_formed(token, PREFIX)


def test_hash_is_sha256_of_the_whole_token() -> None:
    token = generate(PREFIX)
    assert hash_token(token) == hashlib.sha256(token.encode()).digest()
    assert hash_token(token) != hash_token(_flip(token, 10))


def test_display_prefix_is_prefix_and_four_random_chars() -> None:
    token = generate("acme_")
    assert display_prefix(token) == token[:9]
    assert display_prefix(generate(PREFIX)).startswith(PREFIX)
    assert len(display_prefix(generate(PREFIX))) == 7


def test_new_id_is_url_safe_and_unique() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"tok_[0-9A-Za-z]{16}", i) for i in ids)


def test_display_prefix_of_a_token_without_prefix_and_of_a_short_value() -> None:
    """An empty prefix is still a token (38 characters: four shown); anything shorter is not."""
    bare = generate("")
    assert len(bare) == 38
    assert display_prefix(bare) == bare[:4]
    with pytest.raises(ValueError, match=r"^not a token$"):
        display_prefix(bare[:-1])
