"""The token page end to end: Chromium -> `scopegate serve` -> a real upstream.

Each flow signs in with a JWT cookie, creates a read-only token, copies the secret once, uses it
(GET 200, POST 403), sees it listed with its last use, revokes it and sees it refused. A
screenshot of every step lands in .artifacts/ui/<flow>/.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from tests.lifecycle.conftest import bearer, make_jwt
from tests.ui.conftest import CATALOGUES, Site, cookie, shots

pytestmark = pytest.mark.slow

ADMIN = make_jwt("w1", "admin", exp_in=7200)


async def new_page(
    browser: Browser, site: Site, locale: str, width: int = 1100, jwt: str | None = ADMIN
) -> Page:
    context = await browser.new_context(
        locale=locale,
        viewport={"width": width, "height": 1250 if width > 400 else 780},
        permissions=["clipboard-read", "clipboard-write"],
    )
    if jwt is not None:
        await context.add_cookies([cookie(jwt, site.url, sameSite="Lax", httpOnly=True)])
    page = await context.new_page()
    page.set_default_timeout(15000)
    problems: list[str] = []
    # Uncaught errors and console errors: a CSP violation or a broken module shows up here. A
    # refused API call (401, 409) logs "Failed to load resource", which the page handles.
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if msg.type == "error" and "Failed to load resource" not in msg.text
            else None
        ),
    )
    PROBLEMS[id(page)] = problems
    return page


PROBLEMS: dict[int, list[str]] = {}


async def close_clean(page: Page) -> None:
    """Close the page's context; fail on any script error or CSP report it logged."""
    problems = PROBLEMS.pop(id(page), [])
    await page.context.close()
    assert problems == []


async def shot(page: Page, folder: Path, name: str, *, dialog: bool = False) -> None:
    # A modal's backdrop covers the viewport only: shoot what the user sees then.
    await page.screenshot(path=str(folder / f"{name}.png"), full_page=not dialog)


async def status(site: Site, method: str, path: str, secret: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, site.url + path, headers=bearer(secret), json={}) as resp,
    ):
        await resp.read()
        return resp.status


async def token_flow(browser: Browser, site: Site, lang: str, locale: str, width: int, name: str) -> None:
    t = CATALOGUES[lang]
    folder = shots(f"{name}")
    page = await new_page(browser, site, locale, width)
    await page.goto(site.url + "/auth/ui/")
    await expect(page.locator("#app")).to_be_visible()
    assert await page.evaluate("document.documentElement.lang") == lang
    await expect(page.locator("h1")).to_have_text(t["page.title"])
    await expect(page.locator("#preset-read")).to_be_checked()  # Read only is the default
    await expect(page.locator("#tokens")).to_contain_text(t["list.empty"])
    await shot(page, folder, "01-signed-in")

    # Create, by keyboard: type the name and press Enter.
    token_name = f"ci reader {lang}"
    await page.locator("#name").focus()
    await page.keyboard.type(token_name)
    await page.keyboard.press("Enter")
    dialog = page.locator("#reveal")
    await expect(dialog).to_be_visible()
    secret = (await page.locator("#secret").text_content() or "").strip()
    assert secret.startswith("st_"), secret
    await expect(page.locator("#reveal-warning")).to_have_text(t["reveal.warning"])
    assert await page.locator("#reveal-live").get_attribute("aria-live") == "assertive"
    await expect(page.locator("#copy")).to_be_focused()
    await shot(page, folder, "02-revealed", dialog=True)

    await page.keyboard.press("Enter")  # the focused Copy button
    await expect(page.locator("#copy-status")).to_have_text(t["reveal.copied"])
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert copied == secret
    await shot(page, folder, "03-copied", dialog=True)

    # The copied secret works against the proxied route, within its read-only scope.
    assert await status(site, "GET", "/v1/playlists", copied) == 200
    assert await status(site, "POST", "/v1/playlists", copied) == 403

    # Leaving the dialog forgets the secret; focus lands on the new token's row.
    await page.locator("#reveal-done").click()
    await expect(dialog).to_be_hidden()
    # The dialog's `close` event, which forgets the secret, is a task queued after close() (HTML
    # spec): wait for it, then no copy of the secret may remain anywhere in the page.
    await expect(page.locator("#secret")).to_have_text("")
    assert secret not in await page.content()
    row = page.locator("#tokens li[data-token-id]", has_text=token_name)
    await expect(row).to_be_focused()
    prefix = (await row.locator(".prefix").text_content() or "").rstrip("…")
    assert len(prefix) > len("st_") and secret.startswith(prefix)
    await expect(row.locator(".badge.scope")).to_have_text(["read"])
    await expect(row.locator(".badge.status-active")).to_have_text(t["status.active"])

    # Its last use shows up (batched writes every FLUSH seconds) after a refresh.
    last_used = row.locator(".last-used time")
    deadline = time.monotonic() + 15
    while not await last_used.count():
        assert time.monotonic() < deadline, "last used never shown"
        await asyncio.sleep(0.3)
        await page.locator("#refresh").click()
    assert await last_used.get_attribute("title"), "no exact time on hover"
    assert await row.locator(".created time").get_attribute("datetime")
    await last_used.hover()
    await shot(page, folder, "04-listed")

    # Revoke: the confirmation names the token; confirmed by keyboard.
    await row.locator("button.revoke").click()
    confirm = page.locator("#confirm")
    await expect(confirm).to_be_visible()
    await expect(page.locator("#confirm-body")).to_contain_text(token_name)
    await expect(page.locator("#confirm-cancel")).to_be_focused()
    await shot(page, folder, "05-confirm", dialog=True)
    await page.keyboard.press("Tab")
    await expect(page.locator("#confirm-ok")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(confirm).to_be_hidden()
    await expect(page.locator("#list-status")).to_have_text(t["revoke.done"].replace("{name}", token_name))
    await expect(page.locator("#list-h")).to_be_focused()  # the list is empty now
    await expect(page.locator("#tokens")).to_contain_text(t["list.empty"])
    await shot(page, folder, "06-revoked")

    assert await status(site, "GET", "/v1/playlists", copied) == 401

    await page.locator("#show-revoked").check()
    await expect(row.locator(".badge.status-revoked")).to_have_text(t["status.revoked"])
    await expect(row.locator("button.revoke")).to_have_count(0)
    await shot(page, folder, "07-revoked-filter")
    if width <= 400:
        # Nothing wider than the phone: no sideways scrolling.
        assert await page.evaluate("document.documentElement.scrollWidth") <= width
    await close_clean(page)


async def test_flow_english(browser: Browser, site: Site) -> None:
    await token_flow(browser, site, "en", "en-US", 1100, "en")


async def test_flow_spanish(browser: Browser, site: Site) -> None:
    await token_flow(browser, site, "es", "es-ES", 1100, "es")


async def test_flow_phone_width(browser: Browser, site: Site) -> None:
    await token_flow(browser, site, "en", "en-GB", 360, "phone-360")


async def test_no_jwt_shows_sign_in(browser: Browser, site: Site) -> None:
    folder = shots("sign-in")
    page = await new_page(browser, site, "fr-FR", jwt=None)
    await page.goto(site.url + "/auth/ui/")
    await expect(page.locator("#signin")).to_be_visible()
    await expect(page.locator("#signin-h")).to_have_text(CATALOGUES["fr"]["signin.title"])
    await expect(page.locator("#app")).to_be_hidden()
    await shot(page, folder, "01-no-cookie")
    # An expired JWT reads the same: a sign-in message, never an error dump.
    await page.context.add_cookies([cookie(make_jwt(exp_in=-3600), site.url)])
    await page.reload()
    await expect(page.locator("#signin")).to_be_visible()
    await shot(page, folder, "02-expired")
    # A JWT bound to no workspace may not manage tokens: the page says so.
    await page.context.add_cookies([cookie(make_jwt(workspace=None), site.url)])
    await page.reload()
    await expect(page.locator("#signin-body")).to_have_text(CATALOGUES["fr"]["signin.forbidden"])
    await shot(page, folder, "03-may-not-manage")
    await close_clean(page)


async def test_language_switch_and_what_a_viewer_may_mint(browser: Browser, site: Site) -> None:
    folder = shots("viewer-de")
    page = await new_page(browser, site, "en-US", jwt=make_jwt("w1", "viewer"))
    await page.goto(site.url + "/auth/ui/")
    await expect(page.locator("#app")).to_be_visible()
    # A viewer may mint read only: no Read & write, no Full access, no agency.
    values = await page.locator("input[name=preset]").evaluate_all("els => els.map(e => e.value)")
    assert values == ["read", "custom"]
    scopes = await page.locator("input[name=scope]").evaluate_all("els => els.map(e => e.value)")
    assert scopes == ["read"]
    await page.locator("#lang").select_option("de")
    await expect(page.locator("h1")).to_have_text(CATALOGUES["de"]["page.title"])
    await expect(page.locator("label[for=preset-read] .choice-label")).to_have_text(
        CATALOGUES["de"]["preset.read"]
    )
    # Validated as the API does, the error next to the field.
    await page.locator("#name").fill("no/slashes")
    await page.locator("#create").click()
    await expect(page.locator("#name-error")).to_have_text(CATALOGUES["de"]["valid.name_chars"])
    await expect(page.locator("#name")).to_be_focused()
    await shot(page, folder, "01-german-viewer")
    # The choice is remembered.
    await page.reload()
    await expect(page.locator("h1")).to_have_text(CATALOGUES["de"]["page.title"])
    await close_clean(page)


async def test_admin_is_offered_agency_and_the_api_error_lands_next_to_the_field(
    browser: Browser, site: Site
) -> None:
    folder = shots("agency")
    page = await new_page(browser, site, "pt-BR")
    t = CATALOGUES["pt"]
    await page.goto(site.url + "/auth/ui/")
    await expect(page.locator("#app")).to_be_visible()
    await page.locator("#preset-agency").check()
    await expect(page.locator("#targets-field")).to_be_visible()
    await page.locator("#name").fill("partner")
    await page.locator("#targets").fill("playlist:42\nplaylist:43")
    await page.locator("#create").click()
    await expect(page.locator("#reveal")).to_be_visible()
    await page.keyboard.press("Escape")  # leaving by Escape forgets it too
    await expect(page.locator("#reveal")).to_be_hidden()
    # `close` (which forgets the secret) is a task queued after the dialog hides: wait for it.
    await expect(page.locator("#secret")).to_be_empty()
    row = page.locator("#tokens li[data-token-id]", has_text="partner")
    await expect(row.locator(".badge.target")).to_have_text(["playlist:42", "playlist:43"])
    # The same name again: the API's 409, shown next to the name field.
    await page.locator("#preset-agency").check()
    await page.locator("#name").fill("partner")
    await page.locator("#targets").fill("playlist:1")
    await page.locator("#create").click()
    await expect(page.locator("#name-error")).to_have_text(t["valid.name_taken"])
    await shot(page, folder, "01-conflict")
    await close_clean(page)


async def test_an_embedding_app_hands_the_jwt_over_in_the_fragment(browser: Browser, site: Site) -> None:
    folder = shots("fragment")
    page = await new_page(browser, site, "en-US", jwt=None)
    await page.goto(site.url + "/auth/ui/#token=" + ADMIN)
    await expect(page.locator("#app")).to_be_visible()
    # Out of the address bar (and so of the history) at once.
    assert page.url == site.url + "/auth/ui/"
    await page.locator("#name").fill("from fragment")
    await page.locator("#preset-write").check()
    await page.locator("#create").click()
    await expect(page.locator("#reveal")).to_be_visible()
    await page.locator("#reveal-done").click()
    row = page.locator("#tokens li[data-token-id]", has_text="from fragment")
    await expect(row.locator(".badge.scope")).to_have_text(["write"])
    await shot(page, folder, "01-created")
    assert "from fragment" in await _names(site)
    await close_clean(page)


async def test_every_control_is_labelled_and_reachable_by_tab(browser: Browser, site: Site) -> None:
    page = await new_page(browser, site, "en-US")
    await page.goto(site.url + "/auth/ui/")
    await expect(page.locator("#app")).to_be_visible()
    await page.locator("#preset-custom").check()
    await page.locator("#expiry").select_option("date")
    unlabelled = await page.evaluate(
        """() => [...document.querySelectorAll("input, select, textarea, button")]
            .filter(el => el.offsetParent !== null || el.closest("dialog"))
            .filter(el => el.tagName === "BUTTON"
                ? !el.textContent.trim() && !el.getAttribute("aria-label")
                : !(el.labels && el.labels.length) && !el.getAttribute("aria-label"))
            .map(el => el.id || el.name)"""
    )
    assert unlabelled == []
    # From the top, the tab order walks the page in reading order, the radio group one stop.
    await page.reload()
    await expect(page.locator("#app")).to_be_visible()
    seen: list[str] = []
    while len(seen) < 11:
        await page.keyboard.press("Tab")
        focused = await page.evaluate("document.activeElement.id")
        # A date input takes one Tab per part (day, month, year): one stop in the page's order.
        if not seen or seen[-1] != focused:
            seen.append(focused)
    assert seen == [
        "skip",
        "lang",
        "name",
        "preset-read",
        "project",
        "expiry",
        "cidrs",
        "notbefore",
        "create",
        "refresh",
        "show-revoked",
    ]
    # Arrow keys move within the presets.
    await page.locator("#preset-read").focus()
    await page.keyboard.press("ArrowDown")
    await expect(page.locator("#preset-write")).to_be_checked()
    await close_clean(page)


async def test_expiry_never_past_max_ttl(browser: Browser, short_site: Site) -> None:
    site = short_site
    folder = shots("expiry")
    page = await new_page(browser, site, "en-US")
    t = CATALOGUES["en"]
    await page.goto(site.url + "/auth/ui/")
    await expect(page.locator("#app")).to_be_visible()
    # 90 and 365 days lie past max_ttl (60 days): not offered.
    options = await page.locator("#expiry option").all_text_contents()
    assert options == [t["expiry.days"].replace("{n}", "30"), t["expiry.date"]]
    await page.locator("#expiry").select_option("date")
    date = page.locator("#expiry-date")
    latest = await date.get_attribute("max")
    assert latest
    await date.fill("2099-01-01")
    await page.locator("#name").fill("dated")
    await page.locator("#create").click()
    await expect(page.locator("#expiry-error")).to_contain_text(t["valid.date_range"].split("{")[0])
    await shot(page, folder, "01-too-late")
    await date.fill(latest)
    await page.locator("#create").click()
    await expect(page.locator("#reveal")).to_be_visible()
    await page.keyboard.press("Escape")
    async with (
        aiohttp.ClientSession() as session,
        session.get(site.url + "/auth/tokens", headers=bearer(ADMIN)) as resp,
    ):
        (token,) = (await resp.json())["tokens"]
    expires = datetime.fromisoformat(token["expires_at"].replace("Z", "+00:00")).timestamp()
    assert time.time() + 59 * 86400 < expires <= time.time() + 60 * 86400
    await close_clean(page)


async def test_focus_moves_to_the_next_token_after_a_revoke(browser: Browser, site: Site) -> None:
    page = await new_page(browser, site, "en-US")
    for name in ("first", "second"):
        async with (
            aiohttp.ClientSession() as session,
            session.post(site.url + "/auth/tokens", headers=bearer(ADMIN), json={"name": name}) as resp,
        ):
            assert resp.status == 201
    await page.goto(site.url + "/auth/ui/")
    rows = page.locator("#tokens li[data-token-id]")
    await expect(rows).to_have_count(2)
    first = rows.filter(has_text="first")
    await first.locator("button.revoke").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#confirm-body")).to_contain_text("first")
    # Escape cancels and gives focus back to the button that asked.
    await page.keyboard.press("Escape")
    await expect(page.locator("#confirm")).to_be_hidden()
    await expect(first.locator("button.revoke")).to_be_focused()
    await page.keyboard.press("Enter")
    await page.locator("#confirm-ok").click()
    await expect(rows).to_have_count(1)
    await expect(rows.filter(has_text="second")).to_be_focused()
    await close_clean(page)


async def test_a_token_manager_must_name_the_project(browser: Browser, site: Site) -> None:
    folder = shots("token-manager")
    t = CATALOGUES["en"]
    body = {"name": "manager", "scopes": ["write", "tokens:manage"], "expires_in": "20d"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(site.url + "/auth/tokens", headers=bearer(ADMIN), json=body) as resp,
    ):
        manager = (await resp.json())["token"]
    page = await new_page(browser, site, "en-US", jwt=None)
    await page.goto(site.url + "/auth/ui/#token=" + manager)
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("#project-label")).to_have_text(t["create.project_required"])
    values = await page.locator("input[name=preset]").evaluate_all("els => els.map(e => e.value)")
    assert values == ["read", "write", "custom"]  # no full, no agency
    options = await page.locator("#expiry option").all_text_contents()
    assert options == [t["expiry.date"]]  # 30 days would outlive the manager's 20
    await page.locator("#name").fill("deploy")
    await page.locator("#expiry-date").fill(await page.locator("#expiry-date").get_attribute("max") or "")
    await page.locator("#create").click()
    await expect(page.locator("#project-error")).to_have_text(t["valid.project_required"])
    await expect(page.locator("#project")).to_be_focused()
    await shot(page, folder, "01-project-required")
    await page.keyboard.type("web")
    await page.locator("#create").click()
    await expect(page.locator("#reveal")).to_be_visible()
    await page.locator("#reveal-done").click()
    row = page.locator("#tokens li[data-token-id]", has_text="deploy")
    await expect(row.locator(".project dd")).to_have_text("web")
    await shot(page, folder, "02-created")
    await close_clean(page)


async def test_forged_cross_site_post_is_refused(browser: Browser, site: Site) -> None:
    """A page on another site makes the browser POST with the user's cookie and no custom header."""
    folder = shots("forged")
    # `localhost` and `127.0.0.1` are different sites. The cookie has no SameSite attribute (an
    # app that forgets it): Chromium then still sends it on a cross-site top-level POST made
    # within two minutes of the cookie being set ("Lax+POST"), which is the forgery tried here.
    gateway = f"http://localhost:{site.gateway.port}"
    attacker = site.upstream.url.replace("localhost", "127.0.0.1")
    assert attacker.startswith("http://127.0.0.1:")
    context = await browser.new_context()
    await context.add_cookies([cookie(ADMIN, gateway)])
    page = await context.new_page()
    form = (
        f'<form method="POST" action="{gateway}/auth/tokens" enctype="text/plain">'
        '<input name=\'{"name":"forged","scopes":["full"],"x":"\' value=\'"}\'></form>'
    )
    await page.route(attacker + "/evil", lambda route: route.fulfill(body=form, content_type="text/html"))
    await page.goto(attacker + "/evil")
    async with page.expect_navigation():
        await page.evaluate("document.forms[0].submit()")
    body = await page.locator("body").text_content() or ""
    await shot(page, folder, "01-forged-form")
    # Refused for the missing header (the cookie did arrive: without it this would be a 401).
    assert '"bad_request"' in body and "X-Scopegate-CSRF" in body, body

    # A script on that site cannot add the header without a preflight, which is never granted.
    await page.goto(attacker + "/evil")
    outcome = await page.evaluate(
        """async (url) => {
            try {
                await fetch(url, {method: "POST", credentials: "include", mode: "cors",
                    headers: {"X-Scopegate-CSRF": "1", "Content-Type": "application/json"},
                    body: JSON.stringify({name: "forged2", scopes: ["full"]})});
                return "sent";
            } catch (e) { return "blocked"; }
        }""",
        gateway + "/auth/tokens",
    )
    assert outcome == "blocked"
    await context.close()

    listed = await _names(site)
    assert "forged" not in listed and "forged2" not in listed


async def _names(site: Site) -> list[Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(site.url + "/auth/tokens?status=all", headers=bearer(ADMIN)) as resp,
    ):
        assert resp.status == 200
        return [t["name"] for t in (await resp.json())["tokens"]]
