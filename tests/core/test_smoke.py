from __future__ import annotations

from tests.conftest import MakeGateway, Upstream


async def test_anonymous_route_reaches_upstream_without_authorization(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway()
    resp = await gw.client.get("/v1/health?x=1", headers={"Authorization": "Bearer nope"})
    assert resp.status == 200
    assert upstream.last.raw_path == "/v1/health?x=1"
    assert upstream.last.header("Authorization") is None
    assert upstream.last.header("X-Auth-Type") == "anonymous"
