"""schemathesis fuzzes the management API from its own OpenAPI document, against `scopegate serve`.

Valid and invalid requests (positive and negative generation) for every operation, each sent
with one of several callers (an admin JWT, a viewer JWT, a token manager, a project token, a
garbage credential, none). For every answer: no 5xx; every 4xx a JSON refusal with a code the
document lists; the status, media type and body as documented. At the end, the store holds
exactly the tokens whose creation was answered 201: no refused request ever created one.

Bounded for CI: a fixed number of examples per operation, derandomised, no example database.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from tests.lifecycle.conftest import make_jwt, serve_config
from tests.lifecycle.openapi_support import ERROR_CODES, MOUNT
from tests.support import spawn_serve, stop, wait_announced_sync

# Examples per operation; minting, where a refusal must leave nothing behind, gets the most.
EXAMPLES = {"POST": 400}
# Revoke by value answers 429 after 10 calls a minute: a few dozen examples say all there is.
PATH_EXAMPLES = {f"{MOUNT}/tokens/revoke": 40}
DEFAULT_EXAMPLES = 100


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("fuzz")
    config = serve_config(folder, "http://127.0.0.1:9")
    log = folder / "serve.log"
    proc = spawn_serve(config, log, "--port", "0")
    try:
        port, _ = wait_announced_sync(proc, log)
        yield f"http://127.0.0.1:{port}", folder / "tokens.db"
    finally:
        stop(proc)
        assert proc.returncode == 0, log.read_text()


def _stored_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        ids = {row[0] for row in conn.execute("SELECT id FROM tokens")}
    conn.close()
    return ids


def _create(base: str, credential: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = requests.post(
        base + f"{MOUNT}/tokens", json=body, headers={"Authorization": f"Bearer {credential}"}, timeout=10
    )
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


@pytest.mark.slow
def test_fuzz_the_management_api_from_its_document(served: tuple[str, Path]) -> None:
    base, db = served
    admin = make_jwt("w1", "admin")
    manager = _create(base, admin, {"name": "fuzz-manager", "scopes": ["write", "tokens:manage"]})
    project = _create(base, manager["token"], {"name": "fuzz-project", "project": "p", "scopes": ["read"]})
    callers = [
        f"Bearer {admin}",
        f"Bearer {make_jwt('w1', 'viewer')}",
        f"Bearer {manager['token']}",
        f"Bearer {project['token']}",
        "Bearer st_garbage",
        None,
    ]
    created = {manager["id"], project["id"]}
    before = _stored_ids(db)
    assert before == created

    # The served document, with the scope lists narrowed to this gateway's catalogue, so valid
    # requests name real scopes and reach the minting rules (random strings are all refused).
    doc = requests.get(base + f"{MOUNT}/openapi.json", timeout=10).json()
    catalogue = [s["name"] for s in requests.get(base + f"{MOUNT}/scopes", timeout=10).json()["scopes"]]
    # Likewise the other fields narrowed to a few values, valid and not, so that valid requests
    # often get as far as the minting bounds (scope, expiry, workspace) instead of a 400.
    fields = doc["components"]["schemas"]["CreateToken"]["properties"]
    fields["scopes"]["items"] = {"enum": catalogue}
    fields["scopes"]["maxItems"] = 3
    fields["workspace"] = {"enum": ["w1", "w2"]}
    fields["project"] = {"enum": ["p", "q"]}
    fields["expires_in"] = {"enum": [60, "1h", "30d", "400d", 0, -5]}
    fields["targets"] = {"type": "array", "maxItems": 1, "items": {"enum": [{"kind": "playlist", "id": "1"}]}}
    fields["allowed_cidrs"] = {"enum": [["127.0.0.0/8"], ["10.0.0.0/8", "::1/128"], [], ["300.0.0.0/8"]]}
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    fields["not_before"] = {"enum": [soon, "2020-01-01T00:00:00Z", "2999-01-01T00:00:00Z", 0, "noon"]}
    # Rotation by id of a real token (then revoked or rotated: 404, 409) as well as unknown ones.
    doc["paths"][f"{MOUNT}/tokens/{{id}}/rotate"]["parameters"][0]["schema"] = {
        "enum": [project["id"], "tok_unknown"]
    }
    rotate = doc["components"]["schemas"]["Rotate"]["properties"]
    rotate["overlap"] = {"enum": [0, 60, "1h", "8d", -1, "soon"]}
    schema = schemathesis.openapi.from_dict(doc)
    # Rotations last: a token that rotates itself stops being a caller for what follows.
    results = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    assert len(results) == len(list(schema.get_all_operations())), "the document does not load"
    operations = sorted(results, key=lambda op: op.path.endswith("/rotate"))
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        f"POST {MOUNT}/tokens",
        f"GET {MOUNT}/tokens",
        f"DELETE {MOUNT}/tokens/{{id}}",
        f"POST {MOUNT}/tokens/{{id}}/rotate",
        f"POST {MOUNT}/tokens/self/rotate",
        f"POST {MOUNT}/tokens/revoke",
    }
    answered: dict[int, int] = {}
    session = requests.Session()

    for op in operations:
        cases = st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))

        @settings(
            max_examples=PATH_EXAMPLES.get(op.path, EXAMPLES.get(op.method.upper(), DEFAULT_EXAMPLES)),
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
        )
        @given(case=cases, caller=st.sampled_from(callers))
        def fuzz(case: schemathesis.Case[Any], caller: str | None) -> None:
            headers = {"Authorization": caller} if caller else {}
            response = case.call(base_url=base, session=session, headers=headers, timeout=10)
            status = response.status_code
            answered[status] = answered.get(status, 0) + 1
            assert status < 500, (case.method, case.formatted_path, status, response.text[:300])
            if 400 <= status < 500:
                # SECURITY: every refusal is the contract's JSON with a known code.
                assert response.headers.get("content-type", [""])[0].startswith("application/json")
                body = json.loads(response.content)
                assert set(body) == {"error", "detail", "request_id"}, body
                assert body["error"] in ERROR_CODES, body
            if case.method == "POST" and status == 201:
                created.add(response.json()["id"])
            case.validate_response(
                response,
                checks=[
                    not_a_server_error,
                    status_code_conformance,
                    content_type_conformance,
                    response_schema_conformance,
                ],
            )

        fuzz()

    # SECURITY: the store holds the tokens answered 201 and no other: a refused request never
    # left a token behind.
    assert _stored_ids(db) == created
    assert sum(answered.values()) >= len(operations) * DEFAULT_EXAMPLES // 2, answered
    assert any(400 <= s < 500 for s in answered), answered
