"""The token-lifecycle config keys (issue 12): defaults, values, and errors with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest
from yarl import URL

from gateway.config import ExpiryWebhook, load_config
from tests.core.test_config import HEAD, problems, write


def test_defaults(tmp_path: Path) -> None:
    t = load_config(str(write(tmp_path, HEAD))).tokens
    assert (t.max_rotation_overlap, t.idle_ttl, t.expiry_webhook) == (7 * 86400.0, None, None)


def test_values(tmp_path: Path) -> None:
    text = HEAD + (
        "tokens:\n"
        "  max_rotation_overlap: 1h\n"
        "  idle_ttl: 90d\n"
        "  expiry_webhook: {url: https://hooks.example/t, before: [1d, 7d, 86400]}\n"
    )
    t = load_config(str(write(tmp_path, text))).tokens
    assert (t.max_rotation_overlap, t.idle_ttl) == (3600.0, 90 * 86400.0)
    assert t.expiry_webhook == ExpiryWebhook(URL("https://hooks.example/t"), (7 * 86400, 86400))
    hook = load_config(str(write(tmp_path, HEAD + "tokens: {expiry_webhook: {url: http://127.0.0.1:9/h}}\n")))
    assert hook.tokens.expiry_webhook is not None
    assert hook.tokens.expiry_webhook.before == (7 * 86400, 86400)  # the documented default


ERRORS = [
    (
        "tokens:\n  idle_ttl: 5\n",
        [(3, "tokens.idle_ttl: must exceed 2 x tokens.last_used_flush")],
        "idle-short",
    ),
    (
        "tokens:\n  idle_ttl: 0\n",
        [(3, "tokens.idle_ttl: expected a positive duration such as 60, 30s or 90d, got 0")],
        "idle-zero",
    ),
    (
        "tokens:\n  max_rotation_overlap: -1\n",
        [(3, "tokens.max_rotation_overlap: expected a positive duration such as 60, 30s or 90d, got -1")],
        "overlap-negative",
    ),
    (
        "tokens:\n  expiry_webhook: {before: [1d]}\n",
        [(3, "tokens.expiry_webhook: missing key 'url'")],
        "hook-no-url",
    ),
    (
        "tokens:\n  expiry_webhook: {url: http://hooks.example/t}\n",
        [(3, "tokens.expiry_webhook.url: must be https (plain http only on loopback)")],
        "hook-plain-http",
    ),
    (
        "tokens:\n  expiry_webhook: {url: 'ftp://x/y'}\n",
        [(3, "tokens.expiry_webhook.url: expected an http(s) URL, got 'ftp://x/y'")],
        "hook-ftp",
    ),
    (
        "tokens:\n  expiry_webhook:\n    url: https://h.example/\n    before: [1d, soon]\n",
        [(5, "tokens.expiry_webhook.before[1]: expected a duration of 1s or more")],
        "hook-bad-before",
    ),
    (
        "tokens:\n  expiry_webhook:\n    url: https://h.example/\n    before: []\n",
        [(5, "tokens.expiry_webhook.before: expected a non-empty list of durations")],
        "hook-empty-before",
    ),
    (
        "tokens:\n  expiry_webhook:\n    url: https://h.example/\n    secret: x\n",
        [(5, "tokens.expiry_webhook: unknown key 'secret'")],
        "hook-secret-in-file",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for t, e, _ in ERRORS], ids=[i for _, _, i in ERRORS])
def test_errors_name_file_and_line(tmp_path: Path, text: str, expected: list[tuple[int, str]]) -> None:
    path = write(tmp_path, HEAD + text)
    assert problems(path) == [f"{path}:{line}: {message}" for line, message in expected]
