"""Section 11 `mode: shadow`, and `scopegate check --openapi` (sections 2 and 4) as a subprocess."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MakeGateway, Upstream
from tests.ops.test_metrics_logs import http_raw, labels, samples
from tests.support import captured_access_log, gateway_cli

SHADOW_ROUTES = """routes:
  - id: health
    match: {path: /v1/health, methods: [GET]}
    class: anonymous
  - id: beta
    match: {prefix: /v1/beta}
    class: public
    mode: shadow
  - id: playlists
    match: {prefix: /v1/playlists}
    class: public
"""


@pytest.fixture
def access_log() -> Iterator[list[dict[str, object]]]:
    """The decision records the gateway logs, parsed from the JSON formatter's output."""
    with captured_access_log(json.loads) as records:
        yield records


async def raw_post(port: int, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
    import asyncio

    from tests.ops.test_metrics_logs import http_sync

    return await asyncio.to_thread(http_sync, "POST", port, target, {**headers, "Content-Length": "0"})


@pytest.mark.parametrize(
    ("method", "credential", "reason", "auth_type"),
    [
        pytest.param("GET", None, "invalid_token", "anonymous", id="no-credential"),
        pytest.param("GET", "Bearer not-a-token", "invalid_token", "anonymous", id="garbage-credential"),
        pytest.param("POST", "read-token", "insufficient_scope", "token", id="read-token-writes"),
    ],
)
async def test_shadow_route_forwards_refusal_and_counts_it(
    make_gateway: MakeGateway,
    upstream: Upstream,
    access_log: list[dict[str, object]],
    method: str,
    credential: str | None,
    reason: str,
    auth_type: str,
) -> None:
    gw = await make_gateway(routes=SHADOW_ROUTES)
    headers = {"X-Request-Id": "shadow-1"}
    token_id = None
    if credential == "read-token":
        record, secret = await gw.runtime.service.create(
            None, {"name": "r", "workspace": "w", "scopes": ["read"]}
        )
        headers["Authorization"] = f"Bearer {secret}"
        token_id = record.id
    elif credential is not None:
        headers["Authorization"] = credential
    if method == "GET":
        status, body = await http_raw(gw.client.port, "/v1/beta/items", headers)
    else:
        status, body = await raw_post(gw.client.port, "/v1/beta/items", headers)
    # The client gets the upstream's answer, not the refusal.
    assert status == 200, body
    assert json.loads(body)["path"] == "/v1/beta/items"
    assert len(upstream.seen) == 1
    seen = upstream.last
    assert seen.method == method
    assert seen.header("X-Auth-Type") == auth_type
    assert seen.header("Authorization") is None  # never a token secret or garbage
    if auth_type == "token":
        assert seen.header("X-Auth-Token-Id") == token_id
        assert seen.header("X-Auth-Scopes") == "read"
    else:
        assert seen.header("X-Auth-Subject") is None and seen.header("X-Auth-Scopes") is None

    text = gw.runtime.metrics.exposition()
    assert samples(text, "scopegate_shadow_denied_total") == {labels(route="beta", reason=reason): 1.0}
    assert samples(text, "scopegate_requests_total") == {
        labels(route="beta", class_="public", decision="shadow", reason=reason, status="200", worker="0"): 1.0
    }
    records = [r for r in access_log if r.get("request_id") == "shadow-1"]
    assert len(records) == 1
    assert records[0]["decision"] == "shadow" and records[0]["reason"] == reason
    assert records[0]["status"] == 200 and records[0]["route"] == "beta"


async def test_shadow_route_allowed_request_is_not_counted(
    make_gateway: MakeGateway, upstream: Upstream, access_log: list[dict[str, object]]
) -> None:
    gw = await make_gateway(routes=SHADOW_ROUTES)
    _, secret = await gw.runtime.service.create(None, {"name": "r", "workspace": "w", "scopes": ["read"]})
    status, _ = await http_raw(
        gw.client.port, "/v1/beta/items", {"Authorization": f"Bearer {secret}", "X-Request-Id": "shadow-ok"}
    )
    assert status == 200
    assert upstream.last.header("X-Auth-Type") == "token"
    text = gw.runtime.metrics.exposition()
    assert samples(text, "scopegate_shadow_denied_total") == {}
    assert [r["decision"] for r in access_log if r.get("request_id") == "shadow-ok"] == ["allow"]


@pytest.mark.parametrize(
    ("target", "status", "code"),
    [
        pytest.param("/v1/playlists", 401, "invalid_token", id="enforced-public"),
        pytest.param("/v1/betamax", 404, "no_route", id="prefix-is-whole-segments"),
    ],
)
async def test_non_shadow_route_still_refuses(
    make_gateway: MakeGateway, upstream: Upstream, target: str, status: int, code: str
) -> None:
    gw = await make_gateway(routes=SHADOW_ROUTES)
    got, body = await http_raw(gw.client.port, target)
    assert got == status
    assert json.loads(body)["error"] == code
    assert upstream.seen == []
    text = gw.runtime.metrics.exposition()
    assert samples(text, "scopegate_shadow_denied_total") == {}
    [key] = samples(text, "scopegate_requests_total")
    assert dict(key)["decision"] == "deny" and dict(key)["reason"] == code


# ---------------------------------------------------------------------------------------------
# scopegate check --openapi


CHECK_ROUTES = """routes:
  - id: health
    match: {path: /v1/health, methods: [GET]}
    class: anonymous
  - id: playlists
    match: {prefix: /v1/playlists}
    class: public
  - id: reboot
    match: {path: "/v1/devices/{device_id}/reboot", methods: [POST]}
    class: public
    scope: full
"""
ORPHAN = """  - id: orphan
    match: {path: /v1/orphan, methods: [POST]}
    class: public
"""
ORPHAN_LINE = CHECK_ROUTES.count("\n") + 1

SPEC = """openapi: 3.0.3
info: {title: demo, version: "1"}
paths:
  /v1/health:
    get:
      responses: {"200": {description: ok}}
  /v1/playlists/{playlist_id}:
    parameters:
      - {name: playlist_id, in: path, required: true, schema: {type: string}}
    get:
      responses: {"200": {description: ok}}
    put:
      responses: {"200": {description: ok}}
  /v1/devices/{id}/reboot:
    post:
      responses: {"204": {description: rebooted}}
"""
UNCOVERED = """  /x:
    summary: not behind the gateway
    get:
      responses: {"200": {description: ok}}
"""
UNCOVERED_LINE = SPEC.count("\n") + 3


def check_folder(folder: Path, routes: str, spec: str) -> Path:
    (folder / "routes.yaml").write_text(textwrap.dedent(routes))
    (folder / "spec.yaml").write_text(spec)
    config = folder / "config.yaml"
    config.write_text(
        'listen: {host: 127.0.0.1, port: 8080}\nsurface: routes.yaml\nupstreams: {default: "http://127.0.0.1:9"}\n'
    )
    return config


def run_check(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return gateway_cli(folder / "config.yaml", "check", "--openapi", "spec.yaml", *args)


def test_check_openapi_reports_both_directions(tmp_path: Path) -> None:
    check_folder(tmp_path, CHECK_ROUTES + ORPHAN, SPEC + UNCOVERED)
    done = run_check(tmp_path)
    assert done.returncode == 1, done
    assert done.stderr.splitlines() == [
        f"spec.yaml:{UNCOVERED_LINE}: operation GET /x is not covered by any route",
        f"{tmp_path / 'routes.yaml'}:{ORPHAN_LINE}: route orphan matches no operation of spec.yaml",
    ]
    assert "Traceback" not in done.stderr


def test_check_openapi_mutual_cover_exits_zero(tmp_path: Path) -> None:
    check_folder(tmp_path, CHECK_ROUTES, SPEC)
    done = run_check(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith("ok: ")


@pytest.mark.parametrize(
    ("routes", "spec", "ok", "problems"),
    [
        pytest.param(CHECK_ROUTES, SPEC, True, [], id="covered"),
        pytest.param(
            CHECK_ROUTES + ORPHAN,
            SPEC + UNCOVERED,
            False,
            [
                ("spec.yaml", UNCOVERED_LINE, "operation GET /x is not covered by any route"),
                ("routes.yaml", ORPHAN_LINE, "route orphan matches no operation of spec.yaml"),
            ],
            id="both-directions",
        ),
        pytest.param(
            CHECK_ROUTES,
            "openapi: 3.0.3\ninfo: {title: t, version: '1'}\n",
            False,
            [("spec.yaml", 1, "no operations found under 'paths'")],
            id="no-paths",
        ),
    ],
)
def test_check_openapi_json_shape(
    tmp_path: Path, routes: str, spec: str, ok: bool, problems: list[tuple[str, int, str]]
) -> None:
    check_folder(tmp_path, routes, spec)
    done = run_check(tmp_path, "--format", "json")
    assert done.returncode == (0 if ok else 1), done
    out = json.loads(done.stdout)
    assert set(out) == {"ok", "routes", "problems", "warnings"}
    assert out["ok"] is ok
    assert out["routes"] == routes.count("- id:")
    assert all(set(p) == {"file", "line", "message"} for p in out["problems"])
    got = [(Path(p["file"]).name, p["line"], p["message"]) for p in out["problems"]]
    assert got == problems


def test_check_openapi_trailing_slash_operation_is_not_covered(tmp_path: Path) -> None:
    spec = SPEC + '  /v1/health/:\n    get:\n      responses: {"200": {description: ok}}\n'
    check_folder(tmp_path, CHECK_ROUTES, spec)
    done = run_check(tmp_path)
    assert done.returncode == 1
    assert f"spec.yaml:{SPEC.count(chr(10)) + 2}: operation GET /v1/health/ is not covered by any route" in (
        done.stderr.splitlines()
    )


def test_check_openapi_path_route_not_covered_by_trailing_slash_twin(tmp_path: Path) -> None:
    spec = SPEC.replace("  /v1/health:\n", "  /v1/health/:\n")
    check_folder(tmp_path, CHECK_ROUTES, spec)
    done = run_check(tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "spec.yaml:5: operation GET /v1/health/ is not covered by any route",
        f"{tmp_path / 'routes.yaml'}:2: route health matches no operation of spec.yaml",
    ]
