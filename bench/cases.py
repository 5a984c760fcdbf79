"""What the harness starts: configs for scopegate and nginx, credentials, a large token store."""

from __future__ import annotations

import http.client
import json
import os
import random
import sqlite3
import subprocess
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.tokens.secret import (
    ALPHABET,
    ID_PREFIX,
    ID_RANDOM_LEN,
    RANDOM_LEN,
    checksum,
    display_prefix,
    hash_token,
)

HERE = os.path.dirname(os.path.abspath(__file__))
FORWARD_AUTH = os.path.join(HERE, os.pardir, "deploy", "nginx", "forward-auth.conf")

ROUTES = """routes:
  - id: health
    match: {path: /v1/health, methods: [GET]}
    class: anonymous
  - id: playlists
    match: {prefix: /v1/playlists}
    class: public
  - id: blob
    match: {prefix: /v1/blob}
    class: anonymous
  - id: agency-playlist
    match: {path: "/v1/workspaces/{workspace_id}/playlists/{playlist_id}", methods: [GET, PUT]}
    class: agency
    target: {param: playlist_id, kind: playlist}
    workspace_param: workspace_id
"""


def many_routes(n: int) -> str:
    """A surface of n rules; the benchmark asks for the one in the middle."""
    lines = ["routes:"]
    for i in range(n):
        lines += [
            f"  - id: r{i}",
            f'    match: {{path: "/v1/r{i}/items/{{id}}", methods: [GET]}}',
            "    class: public",
        ]
    return "\n".join(lines) + "\n"


def gateway(
    folder: str, port: int, upstream: str, routes: str, jwt_block: str, extra: str = "", store: str = ""
) -> str:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "routes.yaml"), "w") as fh:
        fh.write(routes)
    config = os.path.join(folder, "config.yaml")
    with open(config, "w") as fh:
        fh.write(f"""listen: {{host: 127.0.0.1, port: {port}}}
admin: false
surface: routes.yaml
upstreams: {{default: "{upstream}"}}
store: sqlite:///{store or "tokens.db"}
jwt: {jwt_block}
{extra}""")
    return config


def hs256(secret: str) -> str:
    return "{algorithms: [HS256], secret: " + json.dumps(secret) + "}"


def rs256(folder: str) -> tuple[str, str]:
    """A jwt block verifying RS256 with a fresh key, and a JWT signed with it."""
    os.makedirs(folder, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = os.path.join(folder, "rs256.pem")
    with open(pub, "wb") as fh:
        fh.write(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return "{algorithms: [RS256], public_key_file: " + json.dumps(pub) + "}", sign(key, "RS256")


def sign(key: object, alg: str) -> str:
    now = int(time.time())
    claims = {"sub": "bench", "workspace_id": "bench", "iat": now, "exp": now + 7200}
    return jwt.encode(claims, key, algorithm=alg)  # type: ignore[arg-type]


def mint(config: str, *args: str) -> str:
    """A token minted through the CLI (which also creates the store)."""
    cli = [sys.executable, "-m", "gateway", "token", "create", "-c", config]
    done = subprocess.run(
        [*cli, "--workspace", "bench", "--json", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return str(json.loads(done.stdout)["token"])


def seed_store(config: str, count: int, tokens_file: str) -> None:
    """`count` more active read tokens written straight into the store; their secrets to a file."""
    db = os.path.join(os.path.dirname(config), "tokens.db")
    now = time.time()
    conn = sqlite3.connect(db)
    with open(tokens_file, "w") as out:
        batch = []
        for i in range(count):
            # Well-formed tokens, made fast (not secrets: a benchmark's own throwaway store).
            body = "st_" + "".join(random.choices(ALPHABET, k=RANDOM_LEN))
            token = body + checksum(body)
            out.write(token + "\n")
            tid = ID_PREFIX + "".join(random.choices(ALPHABET, k=ID_RANDOM_LEN))
            row = (tid, f"seed{i}", display_prefix(token), "bench", "bench", None, "read")
            batch.append((*row, now, now + 86400, None, None, "bench", hash_token(token)))
            if len(batch) == 50_000:
                _insert(conn, batch)
                batch = []
        _insert(conn, batch)
    conn.close()


def _insert(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    conn.executemany(
        "INSERT INTO tokens (id, name, display_prefix, owner, workspace, project, scopes, created_at, "
        "expires_at, revoked_at, last_used_at, created_by, token_hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    conn.commit()


def _nginx_main(folder: str, body: str) -> str:
    os.makedirs(folder, exist_ok=True)
    temp = "\n".join(
        f"    {kind}_temp_path {os.path.join(folder, kind)};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    path = os.path.join(folder, "nginx.conf")
    with open(path, "w") as fh:
        fh.write(f"""daemon off;
master_process off;
worker_processes 1;
pid {os.path.join(folder, "nginx.pid")};
error_log {os.path.join(folder, "error.log")} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_max_body_size 64m;
{temp}
{body}
}}
""")
    return path


def nginx_proxy(folder: str, listen: int, app: int) -> str:
    """nginx as a plain reverse proxy, keep-alive to the upstream."""
    return _nginx_main(
        folder,
        f"""    upstream app {{ server 127.0.0.1:{app}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{listen} backlog=1024;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}""",
    )


def nginx_forward_auth(folder: str, listen: int, auth: int, app: int) -> str:
    """deploy/nginx/forward-auth.conf as shipped, only its three addresses rewritten."""
    with open(FORWARD_AUTH) as fh:
        snippet = fh.read()
    for old, new in (
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{auth};"),
        ("server 127.0.0.1:8081;", f"server 127.0.0.1:{app};"),
        ("listen 80;", f"listen 127.0.0.1:{listen} backlog=1024;"),
    ):
        snippet = snippet.replace(old, new)
    return _nginx_main(folder, snippet)


# What nginx's auth_request subrequest carries besides the client's own headers
# (deploy/nginx/forward-auth.conf).
SUBREQUEST_HEADERS = {
    "X-Original-URI": "/v1/playlists/1",
    "X-Original-Method": "GET",
    "X-Forwarded-For": "127.0.0.1",
}
# Headers aiohttp writes on every answer of its own: the stub's, not copied.
_OWN = {"date", "server", "content-length", "content-type"}


def verify_answers(port: int, credentials: list[str], path: str) -> str:
    """Ask scopegate's /auth/verify (on `port`) once per bearer credential, as nginx asks it, and
    write the headers of each answer to `path` (JSON, keyed by the Authorization header), for
    bench/stub_auth.py to answer the same. Returns `path`."""
    answers = {}
    for credential in credentials:
        auth = f"Bearer {credential}"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/auth/verify", headers={**SUBREQUEST_HEADERS, "Authorization": auth})
            resp = conn.getresponse()
            resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            sys.exit(f"bench: /auth/verify answered {resp.status} at set-up")
        answers[auth] = [(k, v) for k, v in resp.getheaders() if k.lower() not in _OWN]
    with open(path, "w") as fh:
        json.dump(answers, fh)
    return path
