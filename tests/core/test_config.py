"""load_config on real files: the example loads, every problem names `file:line: message`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from yarl import URL

from gateway.config import (
    Config,
    Limits,
    Listen,
    TokensConfig,
    Upstream,
    load_config,
    parse_duration,
    parse_size,
)
from gateway.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SECRET = "s" * 32


@pytest.fixture(autouse=True)
def _no_env_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCOPEGATE_JWT_SECRET", raising=False)


def write(folder: Path, text: str, name: str = "config.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    return [str(p) for p in info.value.problems]


# Every case's config starts with this line; the case's text starts on line 2.
HEAD = "surface: routes.yaml\n"


def test_example_config_loads(tmp_path: Path) -> None:
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    cfg = load_config(str(tmp_path / "config.yaml"))
    assert cfg.listen == Listen("0.0.0.0", 8080)
    assert cfg.admin == Listen("127.0.0.1", 9090)
    assert cfg.methods == frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})
    assert cfg.surface_files == (str(tmp_path / "policies" / "example.yaml"),)
    assert dict(cfg.upstreams) == {"default": Upstream("default", URL("http://127.0.0.1:8081"), 5.0, 30.0)}
    assert cfg.sqlite_path() == str(tmp_path / "scopegate.db")
    assert cfg.trusted_proxies == ()
    assert cfg.limits == Limits(max_body=10 * 2**20, max_credential=4096, header_timeout=10.0)
    assert cfg.limits.form_inspect == 64 * 1024
    assert cfg.tokens == TokensConfig("st_", 60.0, 90 * 86400.0, 365 * 86400.0, 1.0, 5.0)
    assert cfg.jwt is None
    assert cfg.workspace_header == "X-Workspace-Id"
    assert cfg.management_mount == "/auth"


def test_repository_config_loads_in_place() -> None:
    cfg = load_config(str(REPO / "config.yaml"))
    assert cfg.surface_files == (str(REPO / "policies" / "example.yaml"),)
    assert os.path.isfile(cfg.surface_files[0])


def test_minimal_config_takes_documented_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD)
    assert load_config(str(path)) == Config(path=str(path), surface_files=(str(tmp_path / "routes.yaml"),))


ERRORS = [
    ("colour: blue\n", [(2, "config: unknown key 'colour'")], "unknown-top-level-key"),
    ("limits:\n  max_bdy: 10\n", [(3, "limits: unknown key 'max_bdy'")], "unknown-limits-key"),
    ("tokens: {prefix: st_, ttl: 5}\n", [(2, "tokens: unknown key 'ttl'")], "unknown-tokens-key"),
    (
        "listen: {host: 0.0.0.0, port: 80, tsl: true}\n",
        [(2, "listen: unknown key 'tsl'")],
        "unknown-listen-key",
    ),
    (
        "listen: {host: 0.0.0.0, port: 80, tls: true}\n",
        [(2, "listen.tls: expected a mapping {cert_file, key_file, client_ca_file?}")],
        "listen-tls-not-a-mapping",
    ),
    ("log: {level: info, colour: true}\n", [(2, "log: unknown key 'colour'")], "unknown-log-key"),
    (
        "headers: {workspace: X-W, tenant: X-T}\n",
        [(2, "headers: unknown key 'tenant'")],
        "unknown-headers-key",
    ),
    ("management: {mount: /auth, path: /x}\n", [(2, "management: unknown key 'path'")], "unknown-mgmt-key"),
    (
        "upstreams:\n  default: {url: 'http://127.0.0.1:9', retries: 3}\n",
        [(3, "upstreams.default: unknown key 'retries'")],
        "unknown-upstream-key",
    ),
    (
        "jwt:\n  algorithms: [RS256]\n  jwks_url: https://idp.example/jwks\n  issuer_url: x\n",
        [(5, "jwt: unknown key 'issuer_url'")],
        "unknown-jwt-key",
    ),
    (
        "jwt:\n  algorithms: [RS256]\n  jwks_url: https://idp.example/jwks\n"
        "  claims: {subject: sub, tenant: t}\n",
        [(5, "jwt.claims: unknown key 'tenant'")],
        "unknown-jwt-claims-key",
    ),
    (
        "listen: {host: 0.0.0.0, port: '8080'}\n",
        [(2, "listen.port: expected a port number 0-65535, got '8080'")],
        "port-string",
    ),
    (
        "listen:\n  port: 70000\n",
        [(3, "listen.port: expected a port number 0-65535, got 70000")],
        "port-out-of-range",
    ),
    ("listen: {port: true}\n", [(2, "listen.port: expected a port number 0-65535, got True")], "port-bool"),
    ("admin: {host: ''}\n", [(2, "admin.host: expected a host name or address, got ''")], "admin-host-empty"),
    ("methods: GET\n", [(2, "methods: expected a non-empty list of HTTP methods")], "methods-not-list"),
    ("methods: []\n", [(2, "methods: expected a non-empty list of HTTP methods")], "methods-empty"),
    (
        "methods:\n  - GET\n  - get\n",
        [(4, "methods[1]: 'get' is not an upper-case HTTP method")],
        "methods-lower-case",
    ),
    (
        "trusted_proxies: [10.0.0.0/8, nope]\n",
        [(2, "trusted_proxies[1]: 'nope' is not a CIDR")],
        "trusted-proxy-not-cidr",
    ),
    (
        "trusted_proxies: 10.0.0.0/8\n",
        [(2, "trusted_proxies: expected a list of CIDRs")],
        "trusted-proxies-not-list",
    ),
    (
        "upstreams:\n  default: ftp://x\n",
        [(3, "upstreams.default: expected an http(s) URL, got 'ftp://x'")],
        "url-ftp",
    ),
    (
        "upstreams:\n  default: 'http://'\n",
        [(3, "upstreams.default: expected an http(s) URL, got 'http://'")],
        "url-no-host",
    ),
    (
        "upstreams:\n  default: 'http://[::1'\n",
        [(3, "upstreams.default: expected an http(s) URL, got 'http://[::1'")],
        "url-unparsable",
    ),
    (
        "upstreams:\n  default: 8081\n",
        [(3, "upstreams.default: expected a mapping"), (3, "upstreams.default: missing key 'url'")],
        "url-number",
    ),
    (
        "upstreams:\n  default: {url: 'file:///etc/passwd'}\n",
        [(3, "upstreams.default.url: expected an http(s) URL, got 'file:///etc/passwd'")],
        "url-in-mapping-bad",
    ),
    (
        "upstreams:\n  default: {timeout: 3}\n",
        [(3, "upstreams.default: missing key 'url'")],
        "url-missing",
    ),
    (
        "upstreams:\n  default: {url: 'http://127.0.0.1:9', timeout: 0}\n",
        [(3, "upstreams.default.timeout: expected a positive number of seconds, got 0")],
        "upstream-timeout-zero",
    ),
    (
        "upstreams:\n  default: {url: 'http://127.0.0.1:9', connect_timeout: soon}\n",
        [(3, "upstreams.default.connect_timeout: expected a positive number of seconds, got 'soon'")],
        "upstream-connect-timeout-word",
    ),
    (
        "limits:\n  max_body: 10XB\n",
        [(3, "limits.max_body: expected a size such as 10MiB, got '10XB'")],
        "size-unit",
    ),
    ("limits:\n  max_body: 0\n", [(3, "limits.max_body: expected a size such as 10MiB, got 0")], "size-zero"),
    (
        "limits:\n  form_inspect: lots\n",
        [(3, "limits.form_inspect: expected a size such as 64KiB, got 'lots'")],
        "form-inspect-word",
    ),
    (
        "limits:\n  max_body: -5\n",
        [(3, "limits.max_body: expected a size such as 10MiB, got -5")],
        "size-negative",
    ),
    (
        "limits:\n  max_body: true\n",
        [(3, "limits.max_body: expected a size such as 10MiB, got True")],
        "size-bool",
    ),
    (
        "limits:\n  max_body: 1.5\n",
        [(3, "limits.max_body: expected a size such as 10MiB, got 1.5")],
        "size-float",
    ),
    (
        "limits:\n  max_credential: 4k\n",
        [(3, "limits.max_credential: expected a positive number of bytes, got '4k'")],
        "credential-size",
    ),
    (
        "limits:\n  header_timeout: 0\n",
        [(3, "limits.header_timeout: expected a positive number of seconds, got 0")],
        "header-timeout-zero",
    ),
    (
        "limits:\n  failed_auth_per_minute: -1\n",
        [(3, "limits.failed_auth_per_minute: expected an integer >= 0, got -1")],
        "failed-auth-negative",
    ),
    (
        "limits:\n  failed_auth_per_minute: 2.5\n",
        [(3, "limits.failed_auth_per_minute: expected an integer >= 0, got 2.5")],
        "failed-auth-float",
    ),
    (
        "tokens:\n  revocation_poll: -1\n",
        [(3, "tokens.revocation_poll: expected a positive duration such as 60, 30s or 90d, got -1")],
        "duration-negative",
    ),
    (
        "tokens:\n  cache_ttl: '-5s'\n",
        [(3, "tokens.cache_ttl: expected a positive duration such as 60, 30s or 90d, got '-5s'")],
        "duration-negative-string",
    ),
    (
        "tokens:\n  last_used_flush: 5 minutes\n",
        [(3, "tokens.last_used_flush: expected a positive duration such as 60, 30s or 90d, got '5 minutes'")],
        "duration-word-unit",
    ),
    (
        "tokens:\n  max_ttl: 0d\n",
        [(3, "tokens.max_ttl: expected a positive duration such as 60, 30s or 90d, got '0d'")],
        "duration-zero",
    ),
    (
        "tokens:\n  prefix: st-\n",
        [(3, "tokens.prefix: expected 1-16 letters, digits or _, got 'st-'")],
        "token-prefix-dash",
    ),
    # A final newline (a YAML "\n" escape) must not pass a name check: `$` matches before it.
    (
        'tokens:\n  prefix: "sg\\n"\n',
        [(3, "tokens.prefix: expected 1-16 letters, digits or _, got 'sg\\n'")],
        "token-prefix-final-newline",
    ),
    (
        'headers: {workspace: "X-Workspace\\n"}\n',
        [(2, "headers.workspace: expected a header name, got 'X-Workspace\\n'")],
        "header-name-final-newline",
    ),
    (
        'methods: [GET, "POST\\n"]\n',
        [(2, "methods[1]: 'POST\\n' is not an upper-case HTTP method")],
        "method-final-newline",
    ),
    (
        "tokens:\n  default_ttl: 400d\n  max_ttl: 365d\n",
        [(3, "tokens.default_ttl: longer than tokens.max_ttl")],
        "default-ttl-over-max",
    ),
    (
        "store: mysql://db/x\n",
        [(2, "store: expected sqlite:///path.db or postgresql://user@host:port/db, got 'mysql://db/x'")],
        "store-scheme",
    ),
    ("store: 'sqlite:///'\n", [(2, "store: expected sqlite:///path.db, got 'sqlite:///'")], "store-no-path"),
    (
        "store: postgresql://sg:hunter2@db/x\n",
        [
            (
                2,
                "store: keep the password out of the URL: set $SCOPEGATE_STORE_PASSWORD "
                "(or PGPASSWORD, ~/.pgpass)",
            )
        ],
        "store-postgres-password",
    ),
    (
        "store: postgresql://sg@db:5432/\n",
        [(2, "store: a PostgreSQL URL needs a database name: postgresql://user@host:port/db")],
        "store-postgres-no-db",
    ),
    (
        "store: postgresql:///x\n",
        [(2, "store: a PostgreSQL URL needs a host: postgresql://user@host:port/db")],
        "store-postgres-no-host",
    ),
    (
        "store: postgresql://sg@db/x?sslmode=maybe\n",
        [
            (
                2,
                "store: sslmode must be one of disable, allow, prefer, require, verify-ca, "
                "verify-full, got 'maybe'",
            )
        ],
        "store-postgres-sslmode",
    ),
    (
        "store: postgresql://sg@db/x?search_path=evil\n",
        [
            (
                2,
                "store: unknown PostgreSQL URL parameter 'search_path' (known: notify, sslcert, sslcrl, "
                "sslkey, sslmode, sslrootcert, target_session_attrs)",
            )
        ],
        "store-postgres-param",
    ),
    (
        "store: postgresql://sg@db/x?notify=maybe\n",
        [(2, "store: notify must be on or off, got 'maybe'")],
        "store-postgres-notify",
    ),
    (
        "store: postgresql://sg@db:99999/x\n",
        [(2, "store: bad PostgreSQL URL: Port out of range 0-65535")],
        "store-postgres-port",
    ),
    (
        "headers: {workspace: X Workspace}\n",
        [(2, "headers.workspace: expected a header name, got 'X Workspace'")],
        "header-name",
    ),
    (
        "management: {mount: auth}\n",
        [(2, "management.mount: expected an absolute path such as /auth, got 'auth'")],
        "mount-relative",
    ),
    (
        "log: {level: loud}\n",
        [(2, "log.level: expected debug, info, warning or error, got 'loud'")],
        "log-level",
    ),
    ("log: {format: xml}\n", [(2, "log.format: expected json or text, got 'xml'")], "log-format"),
    (
        "drain_timeout: never\n",
        [(2, "config.drain_timeout: expected a positive duration, got 'never'")],
        "drain-timeout",
    ),
    ("listen: {port: 1}\nlisten: {port: 2}\n", [(3, "duplicate key 'listen'")], "duplicate-key"),
    ("limits:\n  max_body: 1\n  max_body: 2\n", [(4, "duplicate key 'max_body'")], "duplicate-nested-key"),
    ("1: x\n", [(2, "key 1 must be a string")], "non-string-key"),
    (
        "limits:\n  max_body: [1\n",
        [(4, "YAML: expected ',' or ']', but got '<stream end>'")],
        "yaml-unclosed-list",
    ),
    (
        "listen: {port: 1\nadmin: false\n",
        [(3, "YAML: expected ',' or '}', but got ':'")],
        "yaml-unclosed-map",
    ),
    ("  bad: indent\n", [(2, "YAML: mapping values are not allowed here")], "yaml-bad-indent"),
    ("\tx: 1\n", [(2, "YAML: found character '\\t' that cannot start any token")], "yaml-tab"),
    (
        "jwt:\n  algorithms: [HS256]\n",
        [(3, "jwt: HS* algorithms need `secret` or $SCOPEGATE_JWT_SECRET")],
        "jwt-hs-without-secret",
    ),
    (
        "jwt:\n  algorithms: [HS256]\n  secret: short\n",
        [(4, "jwt.secret: must be at least 32 bytes")],
        "jwt-hs-short-secret",
    ),
    (
        f"jwt:\n  algorithms: [HS256, RS256]\n  secret: {SECRET}\n",
        [(3, "jwt.algorithms: HS* cannot be mixed with public-key algorithms")],
        "jwt-mix-hs-rs",
    ),
    (
        f"jwt:\n  algorithms: [HS256]\n  secret: {SECRET}\n  jwks_url: https://idp.example/jwks\n",
        [(3, "jwt: HS* algorithms take `secret`, not jwks_url or public_key_file")],
        "jwt-hs-with-jwks",
    ),
    (
        "jwt:\n  algorithms: [none]\n",
        [(3, "jwt.algorithms[0]: unsupported algorithm 'none'")],
        "jwt-alg-none",
    ),
    (
        "jwt:\n  algorithms: [NONE]\n",
        [(3, "jwt.algorithms[0]: unsupported algorithm 'NONE'")],
        "jwt-alg-none-upper",
    ),
    (
        "jwt:\n  algorithms:\n    - RS256\n    - None\n  jwks_url: https://idp.example/jwks\n",
        [(5, "jwt.algorithms[1]: unsupported algorithm 'None'")],
        "jwt-alg-none-second-item",
    ),
    ("jwt:\n  algorithms: []\n", [(3, "jwt.algorithms: expected a non-empty list")], "jwt-alg-empty"),
    (
        "jwt:\n  algorithms: [RS256]\n",
        [(3, "jwt: public-key algorithms need exactly one of jwks_url or public_key_file")],
        "jwt-rs-without-key-source",
    ),
    (
        "jwt:\n  algorithms: [RS256]\n  jwks_url: http://idp.example/jwks\n",
        [(4, "jwt.jwks_url: must be https (plain http only on loopback)")],
        "jwks-http-remote",
    ),
    (
        "jwt:\n  algorithms: [RS256]\n  jwks_url: http://127.0.0.1.evil.example/jwks\n",
        [(4, "jwt.jwks_url: must be https (plain http only on loopback)")],
        "jwks-http-loopback-lookalike",
    ),
    (
        "jwt:\n  algorithms: [RS256]\n  jwks_url: http://localhost@evil.example/jwks\n",
        [(4, "jwt.jwks_url: must be https (plain http only on loopback)")],
        "jwks-http-userinfo-trick",
    ),
    (
        "jwt:\n  algorithms: [RS256]\n  jwks_url: ftp://idp.example/jwks\n",
        [
            (4, "jwt.jwks_url: expected an http(s) URL, got 'ftp://idp.example/jwks'"),
            (3, "jwt: public-key algorithms need exactly one of jwks_url or public_key_file"),
        ],
        "jwks-not-http",
    ),
    (
        "jwt:\n  algorithms: [RS256]\n  jwks_url: https://idp.example/jwks\n  leeway: -1\n",
        [(5, "jwt.leeway: expected seconds >= 0, got -1")],
        "jwt-leeway-negative",
    ),
    (
        "jwt:\n  algorithms: [RS256]\n  jwks_url: https://idp.example/jwks\n  roles: {viewer: read}\n",
        [(5, "jwt.roles.viewer: expected a list of scopes")],
        "jwt-role-not-list",
    ),
    ("surface: 5\n", [(2, "duplicate key 'surface'")], "surface-twice"),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for t, e, _ in ERRORS], ids=[i for _, _, i in ERRORS])
def test_config_errors_name_file_and_line(tmp_path: Path, text: str, expected: list[tuple[int, str]]) -> None:
    path = write(tmp_path, HEAD + text)
    assert problems(path) == [f"{path}:{line}: {message}" for line, message in expected]


SURFACE_ERRORS = [
    ("", [(1, "surface: missing; name a surface file or a list of them")], "empty-file"),
    ("{}\n", [(1, "surface: missing; name a surface file or a list of them")], "empty-mapping"),
    (
        "listen: {port: 1}\n",
        [(1, "surface: missing; name a surface file or a list of them")],
        "no-surface-key",
    ),
    ("surface: 5\n", [(1, "surface: expected a file path or a non-empty list of them")], "surface-number"),
    (
        "surface: []\n",
        [(1, "surface: expected a file path or a non-empty list of them")],
        "surface-empty-list",
    ),
    (
        "surface: [a.yaml, 3]\n",
        [(1, "surface: expected a file path or a non-empty list of them")],
        "surface-mixed",
    ),
    (
        "- a\n- b\n",
        [(1, "config: expected a mapping"), (1, "surface: missing; name a surface file or a list of them")],
        "top-level-list",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for t, e, _ in SURFACE_ERRORS], ids=[i for _, _, i in SURFACE_ERRORS]
)
def test_surface_key_errors(tmp_path: Path, text: str, expected: list[tuple[int, str]]) -> None:
    path = write(tmp_path, text)
    assert problems(path) == [f"{path}:{line}: {message}" for line, message in expected]


def test_missing_public_key_file_names_the_resolved_path(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "jwt:\n  algorithms: [RS256]\n  public_key_file: keys/missing.pem\n")
    missing = str(tmp_path / "keys" / "missing.pem")
    assert problems(path) == [
        f"{path}:4: jwt.public_key_file: no such file {missing!r}",
    ]


def test_unreadable_config_is_one_problem_at_line_0(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert problems(path) == [f"{path}:0: cannot read: No such file or directory"]


def test_config_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"surface: r\xff.yaml\n")
    assert problems(path) == [f"{path}:0: not valid UTF-8"]


MOUNTS_WITH_DOTS = ["/a/../b", "/auth/.", "/.."]


@pytest.mark.parametrize("mount", MOUNTS_WITH_DOTS, ids=["dotdot-inside", "dot-last", "dotdot-only"])
def test_management_mount_with_dot_segments_is_refused(tmp_path: Path, mount: str) -> None:
    path = write(tmp_path, HEAD + f"management: {{mount: '{mount}'}}\n")
    assert problems(path) == [
        f"{path}:2: management.mount: expected an absolute path such as /auth, got {mount!r}"
    ]


SCALAR_SECTIONS = ["listen", "admin", "upstreams", "limits", "tokens", "headers", "management", "log"]


@pytest.mark.parametrize("section", SCALAR_SECTIONS, ids=SCALAR_SECTIONS)
def test_section_that_is_not_a_mapping_names_its_line(tmp_path: Path, section: str) -> None:
    path = write(tmp_path, HEAD + f"{section}: 5\n")
    assert problems(path) == [f"{path}:2: {section}: expected a mapping"]


def test_section_that_is_a_list_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "limits:\n  - max_body\n")
    assert problems(path) == [f"{path}:3: limits: expected a mapping"]


def test_several_problems_are_reported_together_in_file_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEAD
        + "colour: blue\n"  # 2
        + "upstreams:\n"  # 3
        + "  default: ftp://x\n"  # 4
        + "limits:\n"  # 5
        + "  max_body: 10XB\n"  # 6
        + "  max_bdy: 1\n"  # 7
        + "tokens:\n"  # 8
        + "  revocation_poll: -1\n"  # 9
        + "jwt:\n"  # 10
        + "  algorithms: [HS256, RS256, none]\n",  # 11
    )
    assert problems(path) == [
        f"{path}:2: config: unknown key 'colour'",
        f"{path}:4: upstreams.default: expected an http(s) URL, got 'ftp://x'",
        f"{path}:7: limits: unknown key 'max_bdy'",
        f"{path}:6: limits.max_body: expected a size such as 10MiB, got '10XB'",
        f"{path}:9: tokens.revocation_poll: expected a positive duration such as 60, 30s or 90d, got -1",
        f"{path}:11: jwt.algorithms[2]: unsupported algorithm 'none'",
        f"{path}:11: jwt.algorithms: HS* cannot be mixed with public-key algorithms",
        f"{path}:11: jwt: HS* algorithms need `secret` or $SCOPEGATE_JWT_SECRET",
    ]


def test_jwt_secret_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, HEAD + "jwt:\n  algorithms: [HS256]\n")
    monkeypatch.setenv("SCOPEGATE_JWT_SECRET", "e" * 40)
    cfg = load_config(str(path))
    assert cfg.jwt is not None
    assert cfg.jwt.secret == "e" * 40
    assert cfg.jwt.algorithms == ("HS256",)


def test_jwt_secret_in_file_beats_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, HEAD + f"jwt:\n  algorithms: [HS512]\n  secret: {SECRET}\n")
    monkeypatch.setenv("SCOPEGATE_JWT_SECRET", "e" * 40)
    cfg = load_config(str(path))
    assert cfg.jwt is not None
    assert cfg.jwt.secret == SECRET


def test_short_jwt_secret_from_environment_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, HEAD + "jwt:\n  algorithms: [HS256]\n")
    monkeypatch.setenv("SCOPEGATE_JWT_SECRET", "short")
    assert problems(path) == [f"{path}:3: jwt.secret: must be at least 32 bytes"]


def test_environment_secret_is_dropped_for_public_key_algorithms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, HEAD + "jwt:\n  algorithms: [RS256]\n  jwks_url: https://idp.example/jwks\n")
    monkeypatch.setenv("SCOPEGATE_JWT_SECRET", "e" * 40)
    cfg = load_config(str(path))
    assert cfg.jwt is not None
    assert cfg.jwt.secret is None
    assert cfg.jwt.jwks_url == URL("https://idp.example/jwks")


LOOPBACK_JWKS = ["http://127.0.0.1:8000/jwks", "http://localhost/jwks", "http://[::1]:8000/jwks"]


@pytest.mark.parametrize("url", LOOPBACK_JWKS, ids=["ipv4", "localhost", "ipv6"])
def test_plain_http_jwks_on_loopback_is_allowed(tmp_path: Path, url: str) -> None:
    path = write(tmp_path, HEAD + f"jwt:\n  algorithms: [RS256, ES256]\n  jwks_url: '{url}'\n")
    cfg = load_config(str(path))
    assert cfg.jwt is not None
    assert cfg.jwt.jwks_url == URL(url)
    assert cfg.jwt.algorithms == ("RS256", "ES256")


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf" / "keys").mkdir(parents=True)
    (tmp_path / "conf" / "keys" / "idp.pem").write_text("not parsed at load time")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write(
        tmp_path,
        "surface: [routes/a.yaml, /abs/b.yaml]\n"
        "store: sqlite:///data/tokens.db\n"
        "jwt:\n  algorithms: [RS256]\n  public_key_file: keys/idp.pem\n",
        "conf/config.yaml",
    )
    monkeypatch.chdir(elsewhere)
    cfg = load_config(os.path.join("..", "conf", "config.yaml"))
    conf = str(tmp_path / "conf")
    assert cfg.surface_files == (os.path.join(conf, "routes", "a.yaml"), "/abs/b.yaml")
    assert cfg.sqlite_path() == os.path.join(conf, "data", "tokens.db")
    assert cfg.jwt is not None
    assert cfg.jwt.public_key_file == os.path.join(conf, "keys", "idp.pem")


def test_absolute_sqlite_path_is_kept(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "store: sqlite:////var/lib/scopegate/t.db\n")
    assert load_config(str(path)).sqlite_path() == "/var/lib/scopegate/t.db"


def test_full_config_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEAD
        + "listen: {host: 127.0.0.1, port: 0}\n"
        + "admin: false\n"
        + "methods: [GET, POST, PROPFIND]\n"
        + "upstreams:\n  default: http://127.0.0.1:9\n"
        + "  slow: {url: 'https://api.example/base', timeout: 2m}\n"
        + "trusted_proxies: [10.0.0.0/8, '::1']\n"
        + "limits: {max_body: 1.5KB, max_credential: 2KiB, header_timeout: 500ms,"
        + " failed_auth_per_minute: 7, form_inspect: 16KiB}\n"
        + "tokens: {prefix: sg_, cache_ttl: 30s, default_ttl: 1w, max_ttl: 30d}\n"
        + "headers: {workspace: X-Tenant}\n"
        + "management: {mount: /_gw/}\n"
        + "drain_timeout: 1h\n",
    )
    cfg = load_config(str(path))
    assert cfg.listen == Listen("127.0.0.1", 0)
    assert cfg.admin is None
    assert cfg.methods == frozenset({"GET", "POST", "PROPFIND"})
    assert dict(cfg.upstreams) == {
        "default": Upstream("default", URL("http://127.0.0.1:9")),
        "slow": Upstream("slow", URL("https://api.example/base"), 5.0, 120.0),
    }
    assert [str(n) for n in cfg.trusted_proxies] == ["10.0.0.0/8", "::1/128"]
    assert cfg.limits == Limits(1500, 2048, 0.5, 7, 16 * 1024)
    assert cfg.tokens == TokensConfig("sg_", 30.0, 7 * 86400.0, 30 * 86400.0, 1.0, 5.0)
    assert cfg.workspace_header == "X-Tenant"
    assert cfg.management_mount == "/_gw"
    assert cfg.drain_timeout == 3600.0


DURATIONS = [
    (90, 90.0),
    (1.5, 1.5),
    ("90", 90.0),
    ("500ms", 0.5),
    ("30s", 30.0),
    ("2m", 120.0),
    ("1.5h", 5400.0),
    ("90d", 90 * 86400.0),
    ("2w", 14 * 86400.0),
    (" 3 s ", 3.0),
    ("3 days", None),
    ("-1s", None),
    ("1e3", None),
    ("", None),
    (True, None),
    (None, None),
    ([1], None),
]


@pytest.mark.parametrize(("value", "seconds"), DURATIONS, ids=[repr(v) for v, _ in DURATIONS])
def test_parse_duration(value: object, seconds: float | None) -> None:
    assert parse_duration(value) == seconds


SIZES = [
    (10, 10),
    ("10", 10),
    ("10B", 10),
    ("1KB", 1000),
    ("1KiB", 1024),
    ("10MiB", 10 * 2**20),
    ("2MB", 2 * 10**6),
    ("1GiB", 2**30),
    ("1.5KB", 1500),
    ("10 MiB", 10 * 2**20),
    ("10XB", None),
    ("10kb", None),
    ("10mib", None),
    ("-1", None),
    (False, None),
    (1.5, None),
]


@pytest.mark.parametrize(("value", "size"), SIZES, ids=[repr(v) for v, _ in SIZES])
def test_parse_size(value: object, size: int | None) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://scopegate@db.internal:5432/scopegate",
        "postgres://scopegate@db.internal/scopegate?sslmode=verify-full&sslrootcert=/etc/ssl/ca.crt",
        "postgresql://scopegate@[::1]:6432/tokens?notify=off&target_session_attrs=read-write",
    ],
)
def test_postgresql_store_urls_load(tmp_path: Path, url: str) -> None:
    cfg = load_config(str(write(tmp_path, HEAD + f"store: '{url}'\n")))
    assert cfg.store == url
    assert cfg.sqlite_path() is None
