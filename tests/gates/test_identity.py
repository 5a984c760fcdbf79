"""What the upstream is told about the caller (contract section 9), end to end.

Client-sent identity headers, their underscore twins and method overrides never reach the
upstream; the gateway's own values do. An API token's secret never leaves the gateway: not to
the upstream, not into the SQLite files, not into any log line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from gateway.tokens.secret import generate
from tests.conftest import Gateway, MakeGateway, Upstream

from .conftest import PATHS, allowed, bearer, jwt_extra, make_jwt, mint, refused

JWT = jwt_extra(claims={"scopes": "scope"})

SPOOFED = {
    "X-Auth-Type": "admin",
    "X-Auth-Subject": "root",
    "X-Auth-Workspace": "evil-ws",
    "X-Auth-Project": "evil-project",
    "X-Auth-Scopes": "full *",
    "X-Auth-Token-Id": "tok_evil",
    "X-Auth-Role": "superadmin",
}
TWINS = {
    "X_Auth_Type": "admin",
    "X_Auth_Subject": "root",
    "X_Auth_Workspace": "evil-ws",
    "X_Auth_Project": "evil-project",
    "X_Auth_Scopes": "full",
    "X_Auth_Token_Id": "tok_evil",
    "X_Auth_Role": "superadmin",
    "X-Auth_Subject": "root",
    "x_auth_role": "superadmin",
    "X_Workspace_Id": "evil-ws",
}
IDENTITY_NAMES = (*SPOOFED, "X-Workspace-Id")


@dataclass
class Case:
    path: str
    headers: dict[str, str]
    want: dict[str, str | None]  # the identity the upstream must see; None: absent
    authorization: str | None  # the Authorization the upstream must see


Setup = Callable[[Gateway], Awaitable[Case]]


async def anonymous(gw: Gateway) -> Case:
    _, token = await mint(gw, ["full"])
    want: dict[str, str | None] = dict.fromkeys(IDENTITY_NAMES)
    want["X-Auth-Type"] = "anonymous"
    # A credential on an anonymous route is removed, never judged nor forwarded.
    return Case("/v1/health", {**bearer(token), "X-Workspace-Id": "evil-ws"}, want, None)


async def public_token(gw: Gateway) -> Case:
    record, token = await mint(gw, ["write", "read"])
    want: dict[str, str | None] = {
        "X-Auth-Type": "token",
        "X-Auth-Subject": "cli",
        "X-Auth-Workspace": "w1",
        "X-Auth-Project": "p1",
        "X-Auth-Scopes": "read write",
        "X-Auth-Token-Id": record.id,
        "X-Auth-Role": "user",
        "X-Workspace-Id": "w1",
    }
    return Case(PATHS["public"], {**bearer(token), "X-Workspace-Id": "evil-ws"}, want, None)


async def public_jwt(gw: Gateway) -> Case:
    token = make_jwt(scope="read", role="editor", workspace_id="w9")
    want: dict[str, str | None] = {
        "X-Auth-Type": "jwt",
        "X-Auth-Subject": "alice",
        "X-Auth-Workspace": "w9",
        "X-Auth-Project": None,
        "X-Auth-Scopes": "read",
        "X-Auth-Token-Id": None,
        "X-Auth-Role": "editor",
        "X-Workspace-Id": "w9",
    }
    return Case(PATHS["public"], bearer(token), want, f"Bearer {token}")


async def public_jwt_no_workspace(gw: Gateway) -> Case:
    token = make_jwt(scope="read")
    want: dict[str, str | None] = {
        "X-Auth-Type": "jwt",
        "X-Auth-Subject": "alice",
        "X-Auth-Workspace": None,
        "X-Auth-Project": None,
        "X-Auth-Scopes": "read",
        "X-Auth-Token-Id": None,
        "X-Auth-Role": None,
        "X-Workspace-Id": None,
    }
    # SECURITY: a JWT bound to no workspace must not carry the client's workspace upstream.
    return Case(PATHS["public"], {**bearer(token), "X-Workspace-Id": "evil-ws"}, want, f"Bearer {token}")


async def jwt_only(gw: Gateway) -> Case:
    token = make_jwt(scope="write", role="ops", workspaces=["w1", "w2"])
    want: dict[str, str | None] = {
        "X-Auth-Type": "jwt",
        "X-Auth-Subject": "alice",
        "X-Auth-Workspace": "w2",
        "X-Auth-Project": None,
        "X-Auth-Scopes": "write",
        "X-Auth-Token-Id": None,
        "X-Auth-Role": "ops",
        "X-Workspace-Id": "w2",
    }
    return Case(PATHS["jwt_only"], {**bearer(token), "X-Workspace-Id": "w2"}, want, f"Bearer {token}")


async def agency(gw: Gateway) -> Case:
    record, token = await mint(gw, ["agency"], project=None, targets=[{"kind": "playlist", "id": "p1"}])
    want: dict[str, str | None] = {
        "X-Auth-Type": "token",
        "X-Auth-Subject": "cli",
        "X-Auth-Workspace": "w1",
        "X-Auth-Project": None,
        "X-Auth-Scopes": "agency",
        "X-Auth-Token-Id": record.id,
        "X-Auth-Role": "user",
        "X-Workspace-Id": "w1",
    }
    return Case(PATHS["agency"], {**bearer(token), "X-Workspace-Id": "evil-ws"}, want, None)


CASES = [
    pytest.param(anonymous, id="anonymous"),
    pytest.param(public_token, id="public-token"),
    pytest.param(public_jwt, id="public-jwt"),
    pytest.param(public_jwt_no_workspace, id="public-jwt-no-workspace"),
    pytest.param(jwt_only, id="jwt-only"),
    pytest.param(agency, id="agency-token"),
]


def assert_identity(upstream: Upstream, case: Case) -> None:
    seen = upstream.last
    for name, value in case.want.items():
        got = seen.all(name)
        assert got == ([] if value is None else [value]), (name, got)
    assert seen.all("Authorization") == ([] if case.authorization is None else [case.authorization])
    for name in TWINS:
        assert seen.header(name) is None, f"underscore twin {name} reached the upstream"
    # Nothing the client sent survives under any spelling.
    values = " ".join(v for _, v in seen.headers)
    for bad in ("evil-ws", "evil-project", "tok_evil", "superadmin", "root"):
        assert bad not in values, (bad, seen.headers)


@pytest.mark.parametrize("setup", CASES)
async def test_spoofed_identity_headers_are_replaced(
    make_gateway: MakeGateway, upstream: Upstream, setup: Setup
) -> None:
    gw = await make_gateway(extra=JWT)
    case = await setup(gw)
    headers = {**SPOOFED, **TWINS, **case.headers}
    resp = await gw.client.get(case.path, headers=headers)
    assert resp.status == 200, await resp.text()
    assert_identity(upstream, case)


@pytest.mark.parametrize("setup", CASES)
async def test_connection_header_cannot_remove_identity_headers(
    make_gateway: MakeGateway, upstream: Upstream, setup: Setup
) -> None:
    gw = await make_gateway(extra=JWT)
    case = await setup(gw)
    headers = {**case.headers, "Connection": "keep-alive, " + ", ".join(IDENTITY_NAMES)}
    resp = await gw.client.get(case.path, headers=headers)
    assert resp.status == 200, await resp.text()
    for name, value in case.want.items():
        if value is not None:
            assert upstream.last.all(name) == [value], name


OVERRIDES = ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "X_HTTP_Method_Override"]


@pytest.mark.parametrize("kind", ["token", "jwt"])
async def test_method_override_headers_are_removed_on_authenticated_routes(
    make_gateway: MakeGateway, upstream: Upstream, kind: str
) -> None:
    gw = await make_gateway(extra=JWT)
    credential = (await mint(gw, ["read"]))[1] if kind == "token" else make_jwt(scope="read")
    headers = {**bearer(credential), **dict.fromkeys(OVERRIDES, "DELETE")}
    await allowed(gw, upstream, "GET", PATHS["public"], headers)
    for name in OVERRIDES:
        assert upstream.last.header(name) is None, name
    # And a read credential still cannot write by asking for an override on a POST.
    await refused(gw, upstream, "POST", PATHS["public"], headers, 403, "insufficient_scope")
    # Nor does the _method parameter pass.
    await refused(
        gw, upstream, "GET", PATHS["public"] + "?_method=DELETE", bearer(credential), 400, "bad_request"
    )


async def test_jwt_workspaces_membership(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(extra=JWT)
    token = make_jwt(scope="read", workspaces=["a", "b"])
    await allowed(gw, upstream, "GET", PATHS["public"], {**bearer(token), "X-Workspace-Id": "b"})
    assert upstream.last.all("X-Workspace-Id") == ["b"]
    assert upstream.last.all("X-Auth-Workspace") == ["b"]
    await allowed(gw, upstream, "GET", PATHS["public"], {**bearer(token), "x-workspace-id": "a"})
    assert upstream.last.all("X-Workspace-Id") == ["a"]
    await refused(
        gw, upstream, "GET", PATHS["public"], {**bearer(token), "X-Workspace-Id": "c"}, 403, "target_denied"
    )
    # Names compare exactly: no case folding, no substring.
    await refused(
        gw, upstream, "GET", PATHS["public"], {**bearer(token), "X-Workspace-Id": "B"}, 403, "target_denied"
    )
    # Without a choice among several, the upstream is told no workspace at all.
    await allowed(gw, upstream, "GET", PATHS["public"], bearer(token))
    assert upstream.last.all("X-Workspace-Id") == []
    assert upstream.last.all("X-Auth-Workspace") == []


async def test_jwt_single_workspace_refuses_another(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(extra=JWT)
    token = make_jwt(scope="read", workspace_id="w1")
    await refused(
        gw, upstream, "GET", PATHS["public"], {**bearer(token), "X-Workspace-Id": "w2"}, 403, "target_denied"
    )
    await allowed(gw, upstream, "GET", PATHS["public"], {**bearer(token), "X-Workspace-Id": "w1"})
    assert upstream.last.all("X-Workspace-Id") == ["w1"]


async def test_token_workspace_header_is_the_tokens_own(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway()
    _, token = await mint(gw, ["read"], workspace="w7", project=None)
    await allowed(gw, upstream, "GET", PATHS["public"], {**bearer(token), "X-Workspace-Id": "w1"})
    assert upstream.last.all("X-Workspace-Id") == ["w7"]
    assert upstream.last.all("X-Auth-Workspace") == ["w7"]
    assert upstream.last.all("X-Auth-Project") == []


def _db_bytes(gw: Gateway) -> bytes:
    out = b""
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = gw.folder / f"tokens.db{suffix}"
        if path.exists():
            out += path.read_bytes()
    return out


async def test_secret_never_in_the_sqlite_files(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway()
    minted = [await mint(gw, ["read"]) for _ in range(3)]
    agency_record, agency_secret = await mint(gw, ["agency"], targets=[{"kind": "playlist", "id": "p1"}])
    for _, secret in minted:
        await allowed(gw, upstream, "GET", PATHS["public"], bearer(secret))
    await gw.runtime.validator.flush()  # last_used_at written
    await gw.runtime.service.revoke(None, minted[0][0].id)
    data = _db_bytes(gw)
    assert minted[0][0].id.encode() in data, "sanity: the records are in these files"
    for secret in [s for _, s in minted] + [agency_secret]:
        random_part = secret[len("st_") :]
        assert secret.encode() not in data
        assert random_part.encode() not in data
        assert random_part[:-6].encode() not in data
    assert agency_record.id.encode() in data


def _log_text(records: list[logging.LogRecord]) -> str:
    parts = []
    for rec in records:
        parts.append(rec.getMessage())
        for attr in ("fields", "audit"):
            value = getattr(rec, attr, None)
            if value is not None:
                parts.append(json.dumps(value, default=str))
        if rec.exc_text:
            parts.append(rec.exc_text)
    return "\n".join(parts)


async def test_secret_never_in_logs(
    make_gateway: MakeGateway,
    upstream: Upstream,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger("scopegate")
    # Whatever an earlier test set up (setup_logging stops propagation), let caplog see it all.
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "propagate", True)
    caplog.set_level(logging.DEBUG, logger="scopegate")
    gw = await make_gateway(extra=JWT + "limits: {failed_auth_per_minute: 100}\n")
    record, secret = await mint(gw, ["read"])
    manager, manager_secret = await mint(gw, ["tokens:manage", "write"], project=None)
    await allowed(gw, upstream, "GET", PATHS["public"], bearer(secret))
    await refused(gw, upstream, "POST", PATHS["public"], bearer(secret), 403, "insufficient_scope")
    await refused(gw, upstream, "GET", PATHS["jwt_only"], bearer(secret), 401, "jwt_required")
    # A near miss (wrong checksum) is a credential too.
    near = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    await refused(gw, upstream, "GET", PATHS["public"], bearer(near), 401, "invalid_token")
    # Minted over HTTP by a tokens:manage token: the answer carries a secret once, logs never.
    resp = await gw.client.post(
        "/auth/tokens",
        json={"name": "child", "project": "p2", "scopes": ["read"]},
        headers=bearer(manager_secret),
    )
    assert resp.status == 201, await resp.text()
    child_secret = (await resp.json())["token"]
    await allowed(gw, upstream, "GET", PATHS["public"], bearer(child_secret))
    jwt_token = make_jwt(scope="read")
    await allowed(gw, upstream, "GET", PATHS["public"], bearer(jwt_token))
    await gw.runtime.service.revoke(None, record.id)
    await refused(gw, upstream, "GET", PATHS["public"], bearer(secret), 401, "invalid_token")
    # Store trouble logs too: the secret must not ride along.
    await gw.runtime.store.close()
    fresh = generate("st_")
    await refused(gw, upstream, "GET", PATHS["public"], bearer(fresh), 503, "store_unavailable")

    text = _log_text(caplog.records)
    # The logs did capture the traffic: request lines and the audit trail.
    assert record.id in text and manager.id in text
    assert any(isinstance(getattr(r, "fields", None), dict) for r in caplog.records), (
        "no access line captured"
    )
    assert any(r.name == "scopegate.audit" for r in caplog.records), "no audit line captured"
    for credential in (secret, manager_secret, child_secret, near, fresh):
        assert credential not in text
        assert credential[len("st_") : -6] not in text
    # The JWT's signature is a credential as much as a token's secret.
    assert jwt_token.rsplit(".", 1)[1] not in text
