"""nginx alone: what deploy/nginx/forward-auth.conf's refusal location is for.

The proofs both proxies share (allowed, refused, spoofed, the app's own errors) are in
test_forward_auth_fronts.py; nginx is started as tests/ops/fronts.py says.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.conftest import Upstream
from tests.support import WWW_AUTHENTICATE_INVALID_TOKEN

from .conftest import Scopegate
from .fronts import run_nginx


def without_refusal_location(snippet: str) -> str:
    return snippet.replace("error_page 403 500 = @", "# ").replace("error_page 401 = @", "# ")


async def test_without_the_refusal_location_nginx_keeps_401_403_and_turns_the_rest_into_500(
    tmp_path: Path, upstream: Upstream, scopegate: Scopegate
) -> None:
    # What the snippet's error_page works around: auth_request's own handling of refusals.
    app = upstream.server.port or 0
    with run_nginx(
        tmp_path / "nginx", gateway=scopegate.port, app=app, edit=without_refusal_location
    ) as bare:
        async with aiohttp.ClientSession() as http:
            async with http.get(bare.url + "/v1/playlists/1") as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"] == WWW_AUTHENTICATE_INVALID_TOKEN
                assert r.content_type == "text/html"
            auth = {"Authorization": f"Bearer {scopegate.token}"}
            async with http.post(bare.url + "/v1/playlists", headers=auth) as r:
                assert r.status == 403
                assert r.content_type == "text/html"
            async with http.get(bare.url + "/v2/nothing") as r:
                assert r.status == 500
    assert "auth request unexpected status: 404" in (bare.folder / "error.log").read_text()
