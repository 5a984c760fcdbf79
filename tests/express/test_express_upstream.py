"""Issue 8 item 1 end to end: `scopegate serve` in front of a real Express 4 app.

Each attack is first shown to reach the stronger handler when sent to Express directly (so the
premise holds for the installed Express), then shown refused by the gateway with no Express
handler run. Legitimate requests still reach their handlers.
"""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.express.conftest import Express, Front

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
B = "sgExpressBoundary"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def send(
    base: str, method: str, target: str, headers: dict[str, str] | None = None, data: bytes | None = None
) -> tuple[int, Any]:
    payload = io.BytesIO(data) if data is not None and len(data) > 2**20 else data
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, URL(base + target, encoded=True), headers=headers or {}, data=payload) as r,
    ):
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body


# (method, target, credential scope or None, body, form headers, the handler Express runs, status, code)
ATTACKS = [
    ("POST", "/v1/devices/7/reboot/", None, None, "device-reboot", 404, "no_route", "reboot-trailing-slash"),
    ("POST", "/V1/Devices/7/Reboot", None, None, "device-reboot", 404, "no_route", "reboot-letter-case"),
    ("POST", "/v1/devices/7/REBOOT/", None, None, "device-reboot", 404, "no_route", "reboot-case-and-slash"),
    ("GET", "/REPORTS/secret", None, None, "report", 404, "no_route", "report-case-past-catch-all"),
    ("GET", "/Reports/secret/", None, None, "report", 404, "no_route", "report-case-and-slash"),
    (
        "POST",
        "/v1/items",
        "items:create",
        b"_method=DELETE",
        "items-delete",
        400,
        "bad_request",
        "form-method",
    ),
    (
        "POST",
        "/v1/items",
        "items:create",
        b"\xef\xbb\xbf_method=DELETE",  # body-parser drops a leading UTF-8 BOM
        "items-delete",
        400,
        "bad_request",
        "form-method-after-bom",
    ),
    (
        "POST",
        "/v1/items?_method=DELETE",
        "items:create",
        b"",
        "items-delete",
        400,
        "bad_request",
        "query-method",
    ),
]


@pytest.mark.parametrize(
    ("method", "target", "scope", "body", "handler", "status", "code"),
    [a[:7] for a in ATTACKS],
    ids=[a[7] for a in ATTACKS],
)
async def test_attack_reaches_express_directly_but_not_through_the_gateway(
    express: Express,
    front: Front,
    method: str,
    target: str,
    scope: str | None,
    body: bytes | None,
    handler: str,
    status: int,
    code: str,
) -> None:
    headers = {**FORM} if body is not None else {}
    await express.reset()
    direct, _ = await send(express.url, method, target, headers, body)
    assert direct == 200
    assert [h["handler"] for h in (await express.hits())] == [handler]  # the premise: Express runs it

    await express.reset()
    if scope is not None:
        headers.update(bearer(front.tokens[scope]))
    got, answer = await send(front.url, method, target, headers, body)
    assert (got, answer["error"]) == (status, code), answer
    assert (await express.hits()) == []  # no Express handler ran


async def test_multipart_method_part_never_completes_at_express(express: Express, front: Front) -> None:
    big = f'--{B}\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n\r\n'.encode()
    big += b"z" * (2 * 2**20) + b"\r\n"
    evil = f'--{B}\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--{B}--\r\n'.encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={B}", **bearer(front.tokens["items:create"])}
    await express.reset()
    got, answer = await send(front.url, "POST", "/v1/uploads", headers, big + evil)
    assert (got, answer["error"]) == (400, "bad_request")
    assert (await express.hits()) == []  # the upload handler records only a body that arrived whole

    await express.reset()
    clean = big + f"--{B}--\r\n".encode()
    got, answer = await send(front.url, "POST", "/v1/uploads", headers, clean)
    assert got == 200
    assert (await express.hits()) == [
        {"handler": "upload", "method": "POST", "url": "/v1/uploads", "size": len(clean)}
    ]


def _method_part(delimiter: str, disposition: str = 'form-data; name="_method"') -> str:
    return f"--{delimiter}\r\nContent-Disposition: {disposition}\r\n\r\nDELETE\r\n--{delimiter}--\r\n"


MULTIPART_PLAIN = "multipart/form-data; boundary=sgx"
# (Content-Type, body): each a multipart form whose `_method` part busboy (multer) reads, and
# which PHP's and Rack's readings, as the scan first made them, did not see.
MULTIPART_METHOD = [
    pytest.param(MULTIPART_PLAIN, _method_part("sgx"), id="plain"),
    # busboy unescapes a quoted boundary's quoted-pairs: `a"b`, where PHP and Rack read `a\`
    pytest.param('multipart/form-data; boundary="sg\\"x"', _method_part('sg"x'), id="escaped-quote"),
    pytest.param('multipart/form-data; boundary="sg\\\\x"', _method_part("sg\\x"), id="escaped-backslash"),
    # a `boundary=` inside quoted parameters: A to a substring search, PHP and Rack; B to busboy
    pytest.param(
        'multipart/form-data; x=";boundary=A;"; boundary=B; y="boundary=A"',
        _method_part("B"),
        id="quoted-boundary",
    ),
    # a `;name=` inside an earlier quoted parameter hides the real one from a regex
    pytest.param(
        MULTIPART_PLAIN, _method_part("sgx", 'form-data; x=";name="; name="_method"'), id="quoted-name"
    ),
    # busboy drops a delimiter met inside a part's headers and joins the two sides
    pytest.param(
        MULTIPART_PLAIN,
        '--sgx\r\nContent-Disposition: form-data; name="\r\n--sgx_method"\r\n\r\nDELETE\r\n--sgx--\r\n',
        id="delimiter-in-headers",
    ),
    # ... and reads what follows `--boundary` on its line as the previous part's folded header
    pytest.param(
        MULTIPART_PLAIN,
        "--sgx\r\nContent-Disposition: form-data\r\n\r\n--sgx ;name=_method\r\n\r\nDELETE\r\n--sgx--\r\n",
        id="folded-after-boundary",
    ),
]


@pytest.mark.parametrize(("content_type", "body"), MULTIPART_METHOD)
async def test_a_multipart_method_field_reaches_express_directly_but_not_through_the_gateway(
    express: Express, front: Front, content_type: str, body: str
) -> None:
    headers = {"Content-Type": content_type}
    await express.reset()
    direct, _ = await send(express.url, "POST", "/v1/items", headers, body.encode())
    assert direct == 200
    assert [h["handler"] for h in (await express.hits())] == ["items-delete"]  # the premise

    await express.reset()
    headers.update(bearer(front.tokens["items:create"]))
    got, answer = await send(front.url, "POST", "/v1/items", headers, body.encode())
    assert (got, answer["error"]) == (400, "bad_request"), answer
    assert (await express.hits()) == []


async def test_double_encoded_dot_segments_are_bad_path(express: Express, front: Front) -> None:
    await express.reset()
    got, answer = await send(front.url, "GET", "/v1/devices/%252e%252e/%252E%252e/reports/secret")
    assert (got, answer["error"]) == (400, "bad_path")
    assert (await express.hits()) == []


# (method, target, credential scope or None, body, handler, status)
LEGITIMATE = [
    ("POST", "/v1/devices/7/reboot", "full", None, "device-reboot", "reboot-with-full"),
    ("GET", "/v1/devices/7", None, None, "device-get", "anonymous-device"),
    ("GET", "/v1/devices/", None, None, "device-list", "anonymous-prefix-with-slash"),
    ("GET", "/reports/secret", "read", None, "report", "report-with-read"),
    ("GET", "/", None, None, "home", "catch-all-home"),
    ("POST", "/v1/items", "items:create", b"name=widget&note=_method", "items-create", "create-with-form"),
    ("DELETE", "/v1/items", "items:delete", None, "items-delete", "delete-with-delete-scope"),
]


@pytest.mark.parametrize(
    ("method", "target", "scope", "body", "handler"),
    [x[:5] for x in LEGITIMATE],
    ids=[x[5] for x in LEGITIMATE],
)
async def test_legitimate_requests_still_reach_their_handler(
    express: Express,
    front: Front,
    method: str,
    target: str,
    scope: str | None,
    body: bytes | None,
    handler: str,
) -> None:
    headers = {**FORM} if body is not None else {}
    if scope is not None:
        headers.update(bearer(front.tokens[scope]))
    await express.reset()
    got, answer = await send(front.url, method, target, headers, body)
    assert got == 200, answer
    assert answer["handler"] == handler
    assert [h["handler"] for h in (await express.hits())] == [handler]


async def test_weaker_credentials_are_still_refused_on_the_canonical_path(
    express: Express, front: Front
) -> None:
    await express.reset()
    got, answer = await send(front.url, "POST", "/v1/devices/7/reboot")
    assert (got, answer["error"]) == (401, "invalid_token")
    got, answer = await send(front.url, "POST", "/v1/devices/7/reboot", bearer(front.tokens["read"]))
    assert (got, answer["error"]) == (403, "insufficient_scope")
    got, answer = await send(front.url, "GET", "/reports/secret")
    assert (got, answer["error"]) == (401, "invalid_token")
    got, answer = await send(front.url, "DELETE", "/v1/items", bearer(front.tokens["items:create"]))
    assert (got, answer["error"]) == (403, "insufficient_scope")
    assert (await express.hits()) == []
