"""The token page and the token lifecycle: networks, not-before, rotation, idle expiry.

Chromium -> `scopegate serve` -> a real upstream, as in test_browser.py. Screenshots land in
.artifacts/ui/<flow>/.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from tests.conftest import Upstream
from tests.lifecycle.conftest import serve_config, serving
from tests.ui.conftest import CATALOGUES, UI_EXTRA, Site, shots
from tests.ui.test_browser import close_clean, new_page, shot, status

pytestmark = pytest.mark.slow

EN = CATALOGUES["en"]


@pytest.fixture
async def idle_site(tmp_path: Path, upstream: Upstream) -> AsyncIterator[Site]:
    """Tokens idle for 2 s expire; a rotation may overlap at most 2 hours."""
    extra = UI_EXTRA.replace("tokens: {", "tokens: {idle_ttl: 2s, max_rotation_overlap: 2h, ")
    config = serve_config(tmp_path, upstream.url, extra=extra)
    async with serving(config) as (gateway,):
        yield Site(gateway, upstream, tmp_path)


async def open_page(browser: Browser, site: Site, width: int = 1100) -> Page:
    page = await new_page(browser, site, "en-US", width)
    await page.goto(site.url + "/auth/ui/")
    await expect(page.locator("#app")).to_be_visible()
    return page


async def create(page: Page, name: str, *, cidrs: str = "", not_before: str = "") -> str:
    """Fill the form, create, read the secret once and close the dialog; the secret."""
    await page.locator("#name").fill(name)
    await page.locator("#cidrs").fill(cidrs)
    await page.locator("#notbefore").fill(not_before)
    await page.locator("#create").click()
    await expect(page.locator("#reveal")).to_be_visible()
    secret = (await page.locator("#secret").text_content() or "").strip()
    assert secret.startswith("st_"), secret
    await page.locator("#reveal-done").click()
    await expect(page.locator("#reveal")).to_be_hidden()
    await expect(page.locator("#secret")).to_be_empty()  # the dialog's close event forgets it
    assert secret not in await page.content()
    return secret


async def test_networks_and_not_before_are_set_and_listed(browser: Browser, site: Site) -> None:
    folder = shots("lifecycle-networks")
    page = await open_page(browser, site)

    # Covers 127.0.0.1, where the test client calls from: the secret works.
    here = await create(page, "from here", cidrs="127.0.0.0/8, 2001:db8::/32")
    mine = page.locator("#tokens li[data-token-id]", has_text="from here")
    await expect(mine.locator(".networks dt")).to_have_text(EN["list.networks"])
    await expect(mine.locator(".networks code.cidr")).to_have_text(["127.0.0.0/8", "2001:db8::/32"])
    assert await status(site, "GET", "/v1/playlists", here) == 200

    # Another network (host bits normalised by the API): listed, and the secret is refused there.
    elsewhere = await create(page, "from elsewhere", cidrs="203.0.113.7/24")
    theirs = page.locator("#tokens li[data-token-id]", has_text="from elsewhere")
    await expect(theirs.locator(".networks code.cidr")).to_have_text(["203.0.113.0/24"])
    assert await status(site, "GET", "/v1/playlists", elsewhere) == 403

    # Not before tomorrow: listed with its start, as not yet valid; the secret is refused today.
    tomorrow = (date.today() + timedelta(days=1)).isoformat()
    later = await create(page, "from tomorrow", not_before=tomorrow)
    pending = page.locator("#tokens li[data-token-id]", has_text="from tomorrow")
    await expect(pending.locator(".badge.status-not_yet_valid")).to_have_text(EN["status.not_yet_valid"])
    await expect(pending.locator(".not-before dt")).to_have_text(EN["list.not_before"])
    assert await pending.locator(".not-before time").get_attribute("datetime")
    await expect(pending.locator(".networks")).to_have_count(0)
    assert await status(site, "GET", "/v1/playlists", later) == 401
    await shot(page, folder, "01-listed")

    # A bad network: the API's refusal lands next to the field, naming the entry, in the page's words.
    await page.locator("#name").fill("bad network")
    await page.locator("#cidrs").fill("10.0.0.0/8 10.0.0.300/8")
    await page.locator("#notbefore").fill("")
    await page.locator("#create").click()
    error = page.locator("#cidrs-error")
    await expect(error).to_have_text(EN["valid.cidr_bad"].replace("{cidr}", "10.0.0.300/8"))
    await expect(page.locator("#cidrs")).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#cidrs")).to_be_focused()
    await expect(page.locator("#reveal")).to_be_hidden()
    await expect(page.locator("#tokens li[data-token-id]", has_text="bad network")).to_have_count(0)
    await shot(page, folder, "02-bad-network")
    # Typing clears it.
    await page.locator("#cidrs").fill("10.0.0.0/8")
    await expect(error).to_be_hidden()
    await close_clean(page)


async def test_networks_fit_a_phone(browser: Browser, site: Site) -> None:
    folder = shots("lifecycle-phone")
    page = await open_page(browser, site, width=360)
    await create(page, "phone", cidrs="2001:db8:1234:5678::/64 198.51.100.0/24 127.0.0.1/32")
    mine = page.locator("#tokens li[data-token-id]", has_text="phone")
    await expect(mine.locator(".networks code.cidr")).to_have_count(3)
    await mine.locator("button.rotate").click()
    await expect(page.locator("#rotate")).to_be_visible()
    await shot(page, folder, "02-rotate-dialog", dialog=True)
    await page.keyboard.press("Escape")
    await expect(page.locator("#rotate")).to_be_hidden()
    await expect(mine.locator("button.rotate")).to_be_focused()
    await shot(page, folder, "01-listed")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 360
    await close_clean(page)


async def test_rotate_with_an_overlap_reveals_the_successor_once(browser: Browser, site: Site) -> None:
    folder = shots("lifecycle-rotate")
    page = await open_page(browser, site)
    old = await create(page, "deploy key", cidrs="127.0.0.1/32")
    rows = page.locator("#tokens li[data-token-id]", has_text="deploy key")
    await expect(rows).to_have_count(1)
    old_id = await rows.get_attribute("data-token-id")

    # The confirmation names the token; overlaps up to the server's 7-day default.
    await rows.locator("button.rotate").click()
    dialog = page.locator("#rotate")
    await expect(dialog).to_be_visible()
    await expect(page.locator("#rotate-body")).to_contain_text("deploy key")
    await expect(page.locator("#rotate-cancel")).to_be_focused()
    options = page.locator("#overlap option")
    await expect(options).to_have_text([EN["rotate.none"], EN["rotate.hour"], EN["rotate.day"]])
    await page.locator("#overlap").select_option("86400")
    await shot(page, folder, "01-confirm", dialog=True)
    await page.locator("#rotate-ok").click()
    await expect(dialog).to_be_hidden()

    # The successor's secret, once, as at creation.
    reveal = page.locator("#reveal")
    await expect(reveal).to_be_visible()
    await expect(page.locator("#copy")).to_be_focused()
    await expect(page.locator("#reveal-name")).to_contain_text("deploy key")
    new = (await page.locator("#secret").text_content() or "").strip()
    assert new.startswith("st_") and new != old
    await shot(page, folder, "02-revealed", dialog=True)
    await page.locator("#reveal-done").click()
    await expect(reveal).to_be_hidden()
    await expect(page.locator("#secret")).to_be_empty()
    assert new not in await page.content()
    await expect(page.locator("#list-status")).to_have_text(
        EN["rotate.done_overlap"].replace("{name}", "deploy key")
    )

    # Both listed: the old one marked rotated (no second rotation offered), ending within a day.
    await expect(rows).to_have_count(2)
    old_row = page.locator(f'#tokens li[data-token-id="{old_id}"]')
    successor = page.locator("#tokens li[data-token-id]:not([data-rotated])", has_text="deploy key")
    await expect(old_row.locator(".badge.status-rotated")).to_have_text(EN["list.rotated"])
    await expect(old_row.locator("button.rotate")).to_have_count(0)
    await expect(old_row.locator("button.revoke")).to_have_count(1)
    ends = await old_row.locator(".expires time").get_attribute("datetime")
    assert ends is not None
    await expect(successor).to_be_focused()
    await expect(successor.locator(".badge.status-active")).to_have_count(1)
    await expect(successor.locator(".networks code.cidr")).to_have_text(["127.0.0.1/32"])
    await shot(page, folder, "03-listed")
    # During the overlap both secrets work.
    assert await status(site, "GET", "/v1/playlists", old) == 200
    assert await status(site, "GET", "/v1/playlists", new) == 200

    # Rotating the successor with no overlap ends its secret at once.
    await successor.locator("button.rotate").click()
    await expect(page.locator("#overlap")).to_have_value("0")
    await page.locator("#rotate-ok").click()
    await expect(reveal).to_be_visible()
    newest = (await page.locator("#secret").text_content() or "").strip()
    await page.keyboard.press("Escape")  # however the dialog closes, the secret leaves the page
    await expect(reveal).to_be_hidden()
    await expect(page.locator("#secret")).to_be_empty()
    assert newest not in await page.content()
    await expect(page.locator("#list-status")).to_have_text(EN["rotate.done"].replace("{name}", "deploy key"))
    assert await status(site, "GET", "/v1/playlists", new) == 401
    assert await status(site, "GET", "/v1/playlists", newest) == 200
    await expect(rows).to_have_count(2)  # the first (still overlapping) and the newest
    await shot(page, folder, "04-rotated-again")
    await close_clean(page)


async def test_rotate_offers_no_overlap_past_the_server_limit_and_shows_idle_expiry(
    browser: Browser, idle_site: Site
) -> None:
    folder = shots("lifecycle-idle")
    page = await open_page(browser, idle_site)
    await create(page, "sleepy")
    mine = page.locator("#tokens li[data-token-id]", has_text="sleepy")
    await mine.locator("button.rotate").click()
    # max_rotation_overlap is 2h: a day is not offered.
    await expect(page.locator("#overlap option")).to_have_text([EN["rotate.none"], EN["rotate.hour"]])
    await page.locator("#rotate-cancel").click()
    await expect(page.locator("#rotate")).to_be_hidden()
    await expect(mine.locator("button.rotate")).to_be_focused()

    # Unused past idle_ttl: the API's own status, as its own label; no rotation offered.
    badge = mine.locator(".badge.status-expired_idle")
    deadline = time.monotonic() + 20
    while not await badge.count():
        assert time.monotonic() < deadline, "idle expiry never shown"
        await asyncio.sleep(0.5)
        await page.locator("#refresh").click()
    await expect(badge).to_have_text(EN["status.expired_idle"])
    await expect(mine.locator("button.rotate")).to_have_count(0)
    await shot(page, folder, "01-idle")
    await close_clean(page)
