"""The API token format: prefix + 32 random base62 characters + 6 base62 characters of CRC32.

The checksum lets the gateway refuse a mistyped or forged-at-random token without touching the
store; it is not a secret and proves nothing about authenticity. Only the SHA-256 of the whole
token is ever stored.
"""

from __future__ import annotations

import hashlib
import secrets
import zlib

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_LEN = 32
CHECKSUM_LEN = 6
ID_PREFIX = "tok_"
ID_RANDOM_LEN = 16
DISPLAY_RANDOM_LEN = 4
_ALPHABET_SET = frozenset(ALPHABET)


def _base62(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        out.append(ALPHABET[digit])
    return "".join(reversed(out))


def _random_base62(length: int) -> str:
    # SECURITY: `secrets` (the OS CSPRNG); 32 base62 characters carry ~190 bits of entropy.
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def checksum(body: str) -> str:
    """Six base62 characters of CRC32 over `body` (prefix + random part), zero-padded."""
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LEN)


def generate(prefix: str) -> str:
    body = prefix + _random_base62(RANDOM_LEN)
    return body + checksum(body)


def well_formed(token: str, prefix: str) -> bool:
    """Exact shape and a matching checksum. Cheap: no store lookup, no hashing of secrets."""
    # SECURITY: reject non-ASCII first so str/bytes length tricks and homoglyphs never reach a lookup.
    if not token.isascii() or len(token) != len(prefix) + RANDOM_LEN + CHECKSUM_LEN:
        return False
    if not token.startswith(prefix):
        return False
    tail = token[len(prefix) :]
    if not _ALPHABET_SET.issuperset(tail):
        return False
    body, check = token[:-CHECKSUM_LEN], token[-CHECKSUM_LEN:]
    return secrets.compare_digest(checksum(body), check)


def hash_token(token: str) -> bytes:
    # SECURITY: the store keeps only this digest; the secret itself is never persisted.
    return hashlib.sha256(token.encode("utf-8")).digest()


def display_prefix(token: str) -> str:
    """The prefix and the first four random characters: enough to recognise, useless to guess.

    The prefix length is implied by the fixed-size tail, so a well-formed token is all it needs.
    """
    prefix_len = len(token) - RANDOM_LEN - CHECKSUM_LEN
    if prefix_len < 0:
        raise ValueError("not a token")
    return token[: prefix_len + DISPLAY_RANDOM_LEN]


def new_id() -> str:
    """A URL-safe token id: `tok_` + 16 base62 characters (~95 bits), unrelated to the secret."""
    return ID_PREFIX + _random_base62(ID_RANDOM_LEN)
