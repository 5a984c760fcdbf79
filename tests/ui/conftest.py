"""The token page's tests: `scopegate serve` with the page on, a real upstream, a real Chromium."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright._impl._api_structures import SetCookieParam
from playwright.async_api import Browser, async_playwright

from gateway.web.ui import LANGUAGES, STATIC
from tests.conftest import Upstream
from tests.lifecycle.conftest import serve_config, serving
from tests.support import ROOT, Running

COOKIE = "sg_session"
FLUSH = 0.3
UI_EXTRA = f"management: {{mount: /auth, ui: {{cookie: {COOKIE}}}}}\ntokens: {{last_used_flush: {FLUSH}}}\n"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Screenshots of every step, for a person to look at (git-ignored).
ARTIFACTS = ROOT / ".artifacts" / "ui"


def catalogue(lang: str) -> dict[str, str]:
    messages: dict[str, str] = json.loads((STATIC / "i18n" / f"{lang}.json").read_text("utf-8"))
    return messages


CATALOGUES = {lang: catalogue(lang) for lang in LANGUAGES}


@dataclass
class Site:
    gateway: Running
    upstream: Upstream
    folder: Path

    @property
    def url(self) -> str:
        return self.gateway.url


@pytest.fixture
async def site(tmp_path: Path, upstream: Upstream) -> AsyncIterator[Site]:
    config = serve_config(tmp_path, upstream.url, extra=UI_EXTRA)
    async with serving(config) as (gateway,):
        yield Site(gateway, upstream, tmp_path)


@pytest.fixture
async def short_site(tmp_path: Path, upstream: Upstream) -> AsyncIterator[Site]:
    """The same, with tokens.max_ttl of 60 days."""
    extra = UI_EXTRA.replace("tokens: {", "tokens: {max_ttl: 60d, default_ttl: 30d, ")
    config = serve_config(tmp_path, upstream.url, extra=extra)
    async with serving(config) as (gateway,):
        yield Site(gateway, upstream, tmp_path)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)")
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


def shots(name: str) -> Path:
    folder = ARTIFACTS / name
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    return folder


def cookie(value: str, url: str, **extra: Any) -> SetCookieParam:
    made: SetCookieParam = {"name": COOKIE, "value": value, "url": url}
    made.update(extra)  # type: ignore[typeddict-item]
    return made
