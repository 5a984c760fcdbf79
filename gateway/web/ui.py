"""The self-service token page at `<mount>/ui/`, and how the management API reads its sign-in.

The page is static (gateway/web/ui_static/, shipped as package data) and talks only to the
management API. It signs in two ways:

- the configured cookie (`management.ui: {cookie: NAME}`) holds the user's JWT; the gateway reads
  it when a management call has no `Authorization` header. Because a browser attaches cookies to
  cross-site requests too, a state-changing call authenticated by the cookie must carry
  `X-Scopegate-CSRF` (a header a cross-site form cannot set, and a cross-site script cannot set
  without a CORS preflight the gateway never grants);
- the embedding app hands a JWT over in the URL fragment (`/auth/ui/#token=...`); the page then
  sends it as `Authorization: Bearer`, which no other site can forge.

`GET <mount>/ui/session` tells the page who is signed in and what it may mint.
"""

from __future__ import annotations

import time
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from .. import scopes as sc
from ..auth.principal import Principal
from ..errors import BadRequest, InvalidToken, MethodNotAllowed, NotFound
from ..surface.model import RouteClass
from ..surface.paths import CleanPath
from ..tokens.service import iso, require_manager
from .peer import client_of

if TYPE_CHECKING:
    from .runtime import Runtime

CSRF_HEADER = "X-Scopegate-CSRF"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
STATIC = Path(__file__).with_name("ui_static")
LANGUAGES = ("en", "es", "fr", "de", "pt")
# Every file the page is made of, by URL name: nothing outside this table is ever read.
FILES: dict[tuple[str, ...], tuple[str, str]] = {
    (): ("index.html", "text/html"),
    **{(name,): (name, "text/javascript") for name in ("app.js", "common.js", "create.js", "list.js")},
    ("app.css",): ("app.css", "text/css"),
    **{("i18n", f"{lang}.json"): (f"i18n/{lang}.json", "application/json") for lang in LANGUAGES},
}
# SECURITY: no inline script or style, nothing from another origin, not framable by other sites.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # The same rule for browsers that predate CSP's frame-ancestors (clickjacking).
    "X-Frame-Options": "SAMEORIGIN",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
    "Cross-Origin-Opener-Policy": "same-origin",
}


async def serve_ui(
    rt: Runtime, request: web.Request, path: CleanPath, rest: tuple[str, ...]
) -> web.StreamResponse:
    """`<mount>/ui/...`: the page's files and its session endpoint."""
    if not rt.cfg.ui.enabled:
        raise NotFound("no such management endpoint")
    sub = rest[1:]
    if sub == ("session",):
        _only(request.method)
        return web.json_response(session_json(rt, await authenticate_manager(rt, request)))
    entry = FILES.get(sub)
    if entry is None:
        raise NotFound("no such file")
    _only(request.method)
    if not sub and not path.trailing_slash:
        # Relative asset URLs need the slash.
        return web.Response(status=308, headers={"Location": rt.cfg.management_mount + "/ui/"})
    name, content_type = entry
    body = (STATIC / name).read_bytes()
    headers = dict(PAGE_HEADERS)
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)


def _only(method: str) -> None:
    if method not in ("GET", "HEAD"):
        raise MethodNotAllowed(f"method {method} is not allowed here", allow=("GET", "HEAD"))


def cookie_credential(rt: Runtime, request: web.Request) -> str | None:
    """The JWT in the configured UI cookie, when the call has no Authorization header."""
    name = rt.cfg.ui.cookie
    if name is None or not rt.cfg.ui.enabled or "Authorization" in request.headers:
        return None
    jar: SimpleCookie = SimpleCookie()
    for raw in request.headers.getall("Cookie", []):
        try:
            jar.load(raw)
        except CookieError:
            continue
    morsel = jar.get(name)
    return morsel.value if morsel is not None and morsel.value else None


async def authenticate_manager(rt: Runtime, request: web.Request) -> Principal:
    """The management caller: its Authorization header, or else the UI cookie's JWT."""
    headers = request.headers
    from_cookie = cookie_credential(rt, request)
    if from_cookie is not None:
        # SECURITY: a browser sends the cookie with cross-site requests too; a state-changing
        # call must prove it came from a page that could set a custom header (same origin).
        if request.method not in SAFE_METHODS and not request.headers.get(CSRF_HEADER):
            raise BadRequest(f"a call signed in by cookie must carry the {CSRF_HEADER} header")
        copy = CIMultiDict(headers)
        copy["Authorization"] = f"Bearer {from_cookie}"
        headers = CIMultiDictProxy(copy)
    principal = await rt.pipeline.authenticate(
        RouteClass.PUBLIC, headers, client_of(request, rt.cfg.trusted_proxies)
    )
    if from_cookie is not None and principal.kind != "jwt":
        # SECURITY: the cookie signs a person in; an API token in it is refused, never used.
        raise InvalidToken("the sign-in cookie must hold a JWT")
    return principal


def session_json(rt: Runtime, principal: Principal) -> dict[str, Any]:
    """Who is signed in and what the page may offer them (never more than the API would accept)."""
    require_manager(principal)
    now = time.time()
    max_ttl = rt.cfg.tokens.max_ttl
    if principal.kind == "token" and principal.expires_at is not None:
        # A token's child never outlives it.
        max_ttl = max(0.0, min(max_ttl, principal.expires_at - now))
    mint = principal.mint_scopes if principal.kind == "jwt" else principal.scopes
    mintable = [
        entry
        for entry in rt.catalogue.as_json()
        if not sc.within([entry["name"]], mint) and (entry["name"] != sc.AGENCY or principal.kind == "jwt")
    ]
    return {
        "kind": principal.kind,
        "subject": principal.subject,
        "workspace": principal.workspace,
        "expires_at": iso(principal.expires_at),
        "project_required": principal.kind == "token",
        "agency": any(e["name"] == sc.AGENCY for e in mintable),
        "scopes": mintable,
        "max_ttl": int(max_ttl),
        "default_ttl": int(min(rt.cfg.tokens.default_ttl, max_ttl)),
        # The page offers no rotation overlap longer than the API accepts.
        "max_rotation_overlap": int(rt.cfg.tokens.max_rotation_overlap),
        "csrf_header": CSRF_HEADER,
    }
