"""The management API's OpenAPI 3.1 document against a real `scopegate serve`.

- It is served at <mount>/openapi.json, with paths under the configured mount.
- Every answer of a scripted tour of the API (each operation, its success and its refusals) has
  a documented status, and its body validates against the documented schema (jsonschema).
- Every operation and every documented status is exercised, except those only an outage or
  a flood produces (listed in UNREACHED).
- No management route answers that the document does not describe: every path built from the
  words in the management code is probed on the live server.
"""

from __future__ import annotations

import ast
import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema  # type: ignore[import-untyped]
import pytest

from gateway.web.apidoc import document
from tests.lifecycle.conftest import bearer, make_jwt, serve_config, serving
from tests.lifecycle.openapi_support import DOC, MOUNT, check_answer, inline
from tests.support import ROOT

ADMIN = make_jwt("w1", "admin")
VIEWER = make_jwt("w1", "viewer")
# Statuses only an outage (503) or a flood of failed authentications (429) produces.
UNREACHED = {"429", "503"}
# Self-rotation's 404 needs the caller revoked elsewhere and not yet polled here (a race).
UNREACHED_OPS = {(f"{MOUNT}/tokens/self/rotate", "post", "404")}


class Tour:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base
        self.seen: set[tuple[str, str, str]] = set()

    async def call(
        self,
        method: str,
        path: str,
        status: int,
        *,
        credential: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        error: str | None = None,
    ) -> Any:
        hdrs = {**(bearer(credential) if credential else {}), **(headers or {})}
        async with self.session.request(method, self.base + path, json=body, headers=hdrs) as resp:
            raw = await resp.read()
            ctype = resp.content_type if raw else ""
            assert resp.status == status, (method, path, resp.status, raw[:300])
        template = check_answer(method, path.partition("?")[0], status, ctype, raw)
        self.seen.add((template, method.lower(), str(status)))
        value: Any = json.loads(raw) if raw else None
        if error is not None:
            assert value["error"] == error, value
        return value


async def test_openapi_document_matches_every_real_answer(tmp_path: Path) -> None:
    config = serve_config(tmp_path, "http://127.0.0.1:9")
    async with serving(config) as (served,), aiohttp.ClientSession() as session:
        tour = Tour(session, served.url)
        served_doc = await tour.call("GET", f"{MOUNT}/openapi.json", 200)
        assert served_doc == DOC
        jsonschema.Draft202012Validator.check_schema(
            inline(DOC["components"]["schemas"]["CreatedToken"])
        )  # the schemas themselves are valid JSON Schema 2020-12
        await tour.call("GET", f"{MOUNT}/scopes", 200)

        tokens = f"{MOUNT}/tokens"
        manager = await tour.call(
            "POST", tokens, 201, credential=ADMIN, body={"name": "mgr", "scopes": ["write", "tokens:manage"]}
        )
        child = await tour.call(
            "POST",
            tokens,
            201,
            credential=manager["token"],
            body={"name": "child", "project": "web", "scopes": ["read"], "expires_in": "1d"},
        )
        partner = await tour.call(
            "POST",
            tokens,
            201,
            credential=ADMIN,
            body={"name": "partner", "scopes": ["agency"], "targets": [{"kind": "playlist", "id": "42"}]},
        )
        await tour.call("POST", tokens, 409, credential=ADMIN, body={"name": "mgr"}, error="conflict")
        await tour.call(
            "POST", tokens, 400, credential=ADMIN, body={"scopes": ["read"]}, error="invalid_request"
        )
        await tour.call("POST", tokens, 400, credential=ADMIN, body={"name": "x", "scopes": ["nope"]})
        await tour.call("POST", tokens, 401, body={"name": "anon"}, error="invalid_token")
        await tour.call(
            "POST",
            tokens,
            403,
            credential=VIEWER,
            body={"name": "up", "scopes": ["write"]},
            error="insufficient_scope",
        )
        await tour.call(
            "POST",
            tokens,
            403,
            credential=ADMIN,
            body={"name": "x", "workspace": "w2"},
            error="target_denied",
        )

        listed = await tour.call("GET", tokens, 200, credential=ADMIN)
        assert {t["name"] for t in listed["tokens"]} == {"mgr", "child", "partner"}
        await tour.call("GET", tokens + "?status=all", 200, credential=manager["token"])
        await tour.call("GET", tokens + "?status=bogus", 400, credential=ADMIN, error="invalid_request")
        await tour.call("GET", tokens, 401, credential="st_not-a-token", error="invalid_token")
        await tour.call("GET", tokens, 403, credential=child["token"], error="insufficient_scope")

        await tour.call("DELETE", f"{tokens}/{child['id']}", 204, credential=manager["token"])
        await tour.call(
            "DELETE", f"{tokens}/{child['id']}", 404, credential=manager["token"], error="not_found"
        )
        await tour.call("DELETE", f"{tokens}/{child['id']}%2F..", 400, credential=ADMIN, error="bad_path")
        await tour.call("DELETE", f"{tokens}/x", 401, error="invalid_token")
        await tour.call("DELETE", f"{tokens}/x", 403, credential=partner["token"], error="insufficient_scope")

        # Network binding and not_before: listed; a bound manager is refused from elsewhere.
        later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
        bound = await tour.call(
            "POST",
            tokens,
            201,
            credential=ADMIN,
            body={
                "name": "bound",
                "scopes": ["tokens:manage"],
                "allowed_cidrs": ["10.1.2.3/8", "2001:db8::/32"],
            },
        )
        assert bound["allowed_cidrs"] == ["10.0.0.0/8", "2001:db8::/32"] and bound["status"] == "active"
        await tour.call("GET", tokens, 403, credential=bound["token"], error="target_denied")
        await tour.call(
            "POST",
            tokens,
            400,
            credential=ADMIN,
            body={"name": "x", "allowed_cidrs": ["10.0.0.0/33"]},
            error="invalid_request",
        )
        early = await tour.call(
            "POST",
            tokens,
            201,
            credential=ADMIN,
            body={"name": "early", "not_before": later, "expires_in": "30d"},
        )
        assert early["not_before"] == later and early["status"] == "not yet valid"

        # Rotation by id: 201 with the successor; the old one, rotated, is 409 to rotate again.
        rot = await tour.call(
            "POST", tokens, 201, credential=manager["token"], body={"name": "rot", "project": "web"}
        )
        successor = await tour.call(
            "POST", f"{tokens}/{rot['id']}/rotate", 201, credential=manager["token"], body={"overlap": "1h"}
        )
        assert successor["rotated_from"] == rot["id"] and successor["name"] == "rot"
        assert successor["token"] != rot["token"] and successor["expires_at"] <= rot["expires_at"]
        await tour.call(
            "POST", f"{tokens}/{rot['id']}/rotate", 409, credential=manager["token"], error="conflict"
        )
        await tour.call(
            "POST", f"{tokens}/tok_unknown/rotate", 404, credential=manager["token"], error="not_found"
        )
        await tour.call(
            "POST",
            f"{tokens}/{successor['id']}/rotate",
            400,
            credential=ADMIN,
            body={"overlap": "forever"},
            error="invalid_request",
        )
        await tour.call("POST", f"{tokens}/{successor['id']}/rotate", 401, error="invalid_token")
        await tour.call(
            "POST",
            f"{tokens}/{successor['id']}/rotate",
            403,
            credential=successor["token"],
            error="insufficient_scope",
        )

        # Self-rotation: the token itself, no body needed; a JWT may not.
        selfrot = f"{tokens}/self/rotate"
        second = await tour.call("POST", selfrot, 201, credential=successor["token"], body={"overlap": 60})
        assert second["rotated_from"] == successor["id"]
        # The old secret still works for the overlap, but it was already rotated.
        await tour.call("POST", selfrot, 409, credential=successor["token"], error="conflict")
        third = await tour.call("POST", selfrot, 201, credential=second["token"])
        await tour.call("GET", tokens, 401, credential=second["token"], error="invalid_token")
        await tour.call(
            "POST", selfrot, 400, credential=third["token"], body={"bogus": 1}, error="invalid_request"
        )
        await tour.call("POST", selfrot, 401, error="invalid_token")
        await tour.call("POST", selfrot, 403, credential=ADMIN, error="insufficient_scope")

        # Revoke by value: no credential; the same 200 for a live and an unknown secret.
        leak = await tour.call(
            "POST", tokens, 201, credential=manager["token"], body={"name": "leak", "project": "web"}
        )
        by_value = f"{tokens}/revoke"
        answer = await tour.call("POST", by_value, 200, body={"tokens": [leak["token"], "st_unknown"]})
        assert answer == {"revoked": "ok"}
        await tour.call(
            "POST", tokens, 401, credential=leak["token"], body={"name": "y"}, error="invalid_token"
        )
        await tour.call("POST", by_value, 400, body={"tokens": []}, error="invalid_request")
        for _ in range(10):
            async with session.post(served.url + by_value, json={"tokens": ["st_x"]}) as resp:
                if resp.status == 429:
                    break
                assert resp.status == 200, resp.status
        await tour.call("POST", by_value, 429, body={"tokens": ["st_x"]}, error="rate_limited")

        verify = f"{MOUNT}/verify"
        uri = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/v1/playlists/7"}
        await tour.call("GET", verify, 200, credential=manager["token"], headers=uri)
        await tour.call("GET", verify, 400, credential=ADMIN, error="bad_request")
        await tour.call("GET", verify, 401, headers=uri, error="invalid_token")
        await tour.call(
            "GET",
            verify,
            403,
            credential=manager["token"],
            headers={"X-Forwarded-Method": "POST", "X-Forwarded-Uri": "/v1/devices/7/reboot"},
            error="insufficient_scope",
        )
        await tour.call(
            "GET",
            verify,
            404,
            headers={"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/nowhere"},
            error="no_route",
        )
        await tour.call(
            "GET",
            verify,
            405,
            headers={"X-Forwarded-Method": "DELETE", "X-Forwarded-Uri": "/v1/health"},
            error="method_not_allowed",
        )

    documented = {
        (template, method, status)
        for template, item in DOC["paths"].items()
        for method, operation in item.items()
        if method != "parameters"
        for status in operation["responses"]
    }
    # The token page (<mount>/ui) has its own end-to-end tests in Chromium (tests/ui).
    missed = sorted(
        d
        for d in documented - tour.seen - UNREACHED_OPS
        if d[2] not in UNREACHED and not d[0].startswith(f"{MOUNT}/ui")
    )
    assert missed == [], f"documented but never exercised: {missed}"


def test_served_paths_follow_the_mount() -> None:
    doc = document("/manage/")
    assert set(doc["paths"]) == {"/manage" + p.removeprefix(MOUNT) for p in DOC["paths"]}


# ---------------------------------------------------------------------------------------------
# No undocumented management route


def _words() -> set[str]:
    """Every string literal in the management code that could be a path segment."""
    words = {"x"}
    for file in [
        *sorted((ROOT / "gateway" / "web").glob("*.py")),
        ROOT / "gateway" / "tokens" / "service.py",
    ]:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                value = node.value.strip("/")
                if value and len(value) <= 40 and all(c.isalnum() or c in "._-" for c in value):
                    words.add(value)
    for template in DOC["paths"]:
        words.update(s for s in template.strip("/").split("/") if not s.startswith("{"))
    return words


async def _probe(
    session: aiohttp.ClientSession, base: str, path: str
) -> tuple[str, frozenset[str] | None] | None:
    """What PATCH (a method no management route takes) says about `path`: None when it is no
    route; else the Allow set of a 405, or None-allow for a route that takes any method."""
    async with session.patch(base + path, headers=bearer(ADMIN)) as resp:
        body = await resp.read()
        if resp.status == 404:
            return None
        if resp.status == 405:
            allow = frozenset(m.strip() for m in resp.headers["Allow"].split(",") if m.strip())
            return path, allow
        assert resp.status < 500, (path, resp.status, body[:200])
        return path, None


@pytest.mark.slow
async def test_every_management_route_is_in_the_document(tmp_path: Path) -> None:
    config = serve_config(tmp_path, "http://127.0.0.1:9")
    words = sorted(_words())
    found: dict[str, frozenset[str] | None] = {}
    async with serving(config) as (served,):
        connector = aiohttp.TCPConnector(limit=8)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def probe_all(paths: list[str]) -> dict[str, frozenset[str] | None]:
                answers = await asyncio.gather(*(_probe(session, served.url, p) for p in paths))
                return {a[0]: a[1] for a in answers if a is not None}

            level = await probe_all([f"{MOUNT}/{w}" for w in words])
            found.update(level)
            # Deeper only below routes that exist; a segment that answers as the `x` sibling does
            # is the same parameter route, so only `x` and distinct literals are walked further.
            for _depth in range(2):
                parents = list(level)
                level = await probe_all([f"{p}/{w}" for p, w in itertools.product(parents, words)])
                found.update(level)
                level = {
                    p: allow
                    for p, allow in level.items()
                    if p.endswith("/x") or level.get(p.rsplit("/", 1)[0] + "/x", "absent") != allow
                }
    assert found, "the probe found no management route at all"
    for path, allow in sorted(found.items()):
        template = _template_for(path)
        assert template is not None, f"{path} answers {allow or 'any method'} but is not in the document"
        documented = {m.upper() for m in DOC["paths"][template] if m != "parameters"}
        if allow is None:
            assert "GET" in documented, (path, documented)
        else:
            # HEAD goes with GET and is not listed separately.
            assert allow - {"HEAD"} == documented, (path, sorted(allow), sorted(documented))


def _template_for(path: str) -> str | None:
    from tests.lifecycle.openapi_support import template_of

    return template_of(path)
