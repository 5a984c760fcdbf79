"""The files under deploy/: they parse, the configs pass `scopegate check`, and every proxy's
header list names every identity header scopegate sets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml

from gateway.proxy.headers import IDENTITY, METHOD_OVERRIDE, REWRITE

from .conftest import REPO

DEPLOY = REPO / "deploy"
DOCKER_CONFIG = DEPLOY / "docker" / "config.yaml"
IMAGE_SURFACE = "/etc/scopegate/policies/example.yaml"
SECRET = "s" * 48
FORWARDED = {h.lower() for h in (*IDENTITY, "X-Workspace-Id")}


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def check(config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "SCOPEGATE_JWT_SECRET"}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**clean, **env},
        timeout=60,
    )


def docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def test_there_is_something_to_deploy() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in yaml_files()}
    assert names >= {
        "docker/config.yaml",
        "kubernetes/sidecar.yaml",
        "kubernetes/ingress-nginx-auth.yaml",
        "kubernetes/replicas-postgresql.yaml",
        "traefik/forwardauth.yaml",
        "envoy/ext_authz.yaml",
    }


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_yaml_file_parses(path: Path) -> None:
    assert docs(path)


def image_config(tmp_path: Path, text: str | None = None) -> Path:
    text = DOCKER_CONFIG.read_text() if text is None else text
    assert text.count(IMAGE_SURFACE) == 1
    config = tmp_path / "config.yaml"
    config.write_text(text.replace(IMAGE_SURFACE, str(REPO / "policies" / "example.yaml")))
    return config


def test_the_image_config_passes_check(tmp_path: Path) -> None:
    result = check(image_config(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_config_keeps_its_promises() -> None:
    cfg = yaml.safe_load(DOCKER_CONFIG.read_text())
    assert cfg["listen"] == {"host": "0.0.0.0", "port": 8080}
    assert cfg["admin"] == {"host": "0.0.0.0", "port": 9090}
    assert cfg["store"] == "sqlite:////var/lib/scopegate/scopegate.db"
    assert cfg["surface"] == IMAGE_SURFACE
    assert "jwt" not in cfg


def test_the_image_configs_commented_jwt_block_works_with_the_environment_secret(tmp_path: Path) -> None:
    head, sep, tail = DOCKER_CONFIG.read_text().partition("# jwt:\n")
    assert sep, "deploy/docker/config.yaml: expected a commented `# jwt:` block"
    text = (
        head + "jwt:\n" + re.sub(r"\A((?:# {3}.*\n)+)", lambda m: re.sub(r"^# ", "", m[1], flags=re.M), tail)
    )
    assert yaml.safe_load(text)["jwt"]["algorithms"] == ["HS256"]
    config = image_config(tmp_path, text)
    ok = check(config, SCOPEGATE_JWT_SECRET=SECRET)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    missing = check(config)
    assert missing.returncode == 1
    assert "SCOPEGATE_JWT_SECRET" in missing.stdout + missing.stderr


def test_the_image_ships_the_deploy_config() -> None:
    assert "COPY deploy/docker/config.yaml /etc/scopegate/config.yaml" in (REPO / "Dockerfile").read_text()


def sidecar() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs(DEPLOY / "kubernetes" / "sidecar.yaml")}


def test_the_sidecar_configmap_passes_check(tmp_path: Path) -> None:
    data = sidecar()["ConfigMap"]["data"]
    for name, text in data.items():
        (tmp_path / name).write_text(text)
    result = check(tmp_path / "config.yaml", SCOPEGATE_JWT_SECRET=SECRET)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning: store:" not in result.stderr  # the example checks PostgreSQL's certificate


def test_the_sidecar_deployment_is_locked_down_and_probed_on_the_admin_port() -> None:
    kinds = sidecar()
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    gate = next(c for c in pod["containers"] if c["name"] == "scopegate")
    app = next(c for c in pod["containers"] if c["name"] != "scopegate")
    assert gate["securityContext"]["readOnlyRootFilesystem"] is True
    assert gate["securityContext"]["allowPrivilegeEscalation"] is False
    ports = {p["name"]: p["containerPort"] for p in gate["ports"]}
    assert ports == {"http": 8080, "admin": 9090}
    assert gate["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert gate["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    env = {e["name"]: e for e in gate["env"]}
    assert env["SCOPEGATE_JWT_SECRET"]["valueFrom"]["secretKeyRef"]["key"] == "secret"
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in gate["volumeMounts"]}
    assert "configMap" in volumes[mounts["/etc/scopegate"]]
    config = yaml.safe_load(kinds["ConfigMap"]["data"]["config.yaml"])
    # It points at the shared PostgreSQL store of the multi-replica example, with its Secret.
    assert config["store"] == replicas()["ConfigMap"]["store"]
    assert kinds["Deployment"]["spec"]["replicas"] > 1
    assert env["SCOPEGATE_STORE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "scopegate-store",
        "key": "password",
    }
    assert config["upstreams"]["default"]["url"] == "http://127.0.0.1:8081"
    assert {e["name"]: e["value"] for e in app["env"]} == {"HOST": "127.0.0.1", "PORT": "8081"}
    assert pod["terminationGracePeriodSeconds"] > config["drain_timeout"]
    service = kinds["Service"]["spec"]
    assert [p["targetPort"] for p in service["ports"]] == ["http"]


def test_ingress_nginx_asks_verify_and_takes_every_identity_header() -> None:
    ingress = next(
        d for d in docs(DEPLOY / "kubernetes" / "ingress-nginx-auth.yaml") if d["kind"] == "Ingress"
    )
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/auth-url"].endswith("/auth/verify")
    assert notes["nginx.ingress.kubernetes.io/auth-method"] == "GET"  # or X-Original-URI is not sent
    listed = notes["nginx.ingress.kubernetes.io/auth-response-headers"].split(",")
    # ingress-nginx refuses the whole annotation if one name is not a bare token (no spaces).
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", h) for h in listed), listed
    names = {h.lower() for h in listed}
    assert names >= FORWARDED | {"authorization"}


def test_ingress_nginx_blanks_what_the_app_must_not_trust() -> None:
    # Issue 8 item 9: a listed header is set from scopegate's answer or removed. scopegate never
    # answers these (X-Auth-Authorization: only its own, for a JWT), so a client's copy never
    # reaches the app, as the nginx, Traefik and Envoy files already ensure.
    ingress = next(
        d for d in docs(DEPLOY / "kubernetes" / "ingress-nginx-auth.yaml") if d["kind"] == "Ingress"
    )
    listed = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/auth-response-headers"]
    names = {h.lower() for h in listed.split(",")}
    must_blank = {"x-auth-authorization"} | set(METHOD_OVERRIDE) | set(REWRITE)
    assert must_blank <= names, must_blank - names


def test_traefik_forward_auth_takes_every_identity_header() -> None:
    mw = docs(DEPLOY / "traefik" / "forwardauth.yaml")[0]["http"]["middlewares"]["scopegate"]["forwardAuth"]
    assert mw["address"].endswith("/auth/verify")
    assert mw["trustForwardHeader"] is False
    assert {h.lower() for h in mw["authResponseHeaders"]} >= FORWARDED | {"authorization"}


def test_envoy_ext_authz_takes_every_identity_header() -> None:
    hcm = docs(DEPLOY / "envoy" / "ext_authz.yaml")[0]["static_resources"]["listeners"][0]["filter_chains"][0]
    filters = hcm["filters"][0]["typed_config"]["http_filters"]
    names = [f["name"] for f in filters]
    assert (
        names.index("scopegate.ask")
        < names.index("envoy.filters.http.ext_authz")
        < names.index("scopegate.pass")
    )
    assert names[-1] == "envoy.filters.http.router"
    service = next(f for f in filters if f["name"] == "envoy.filters.http.ext_authz")["typed_config"][
        "http_service"
    ]
    assert service["path_prefix"].startswith("/auth/verify?")
    upstream = {p["exact"] for p in service["authorization_response"]["allowed_upstream_headers"]["patterns"]}
    assert upstream >= FORWARDED | {"x-auth-authorization"}
    asked = {p["exact"] for p in service["authorization_request"]["allowed_headers"]["patterns"]}
    assert {"x-forwarded-uri", "x-forwarded-method", "authorization"} <= asked
    assert not any(h.startswith("x-original") for h in asked)


def test_the_nginx_snippet_sets_every_identity_header_from_the_answer() -> None:
    conf = (DEPLOY / "nginx" / "forward-auth.conf").read_text()
    for header in (*IDENTITY, "X-Workspace-Id"):
        var = "$upstream_http_" + header.lower().replace("-", "_")
        assert re.search(rf"auth_request_set\s+(\$\w+)\s+{re.escape(var)};", conf), header
        assert re.search(rf"proxy_set_header\s+{header}\s+\$sg_\w+;", conf), header
    assert re.search(r"proxy_set_header\s+Authorization\s+\$sg_authorization;", conf)


def replicas() -> dict[str, Any]:
    kinds: dict[str, Any] = {d["kind"]: d for d in docs(DEPLOY / "kubernetes" / "replicas-postgresql.yaml")}
    kinds["ConfigMap"] = {**kinds["ConfigMap"], **yaml.safe_load(kinds["ConfigMap"]["data"]["config.yaml"])}
    return kinds


def test_the_multi_replica_configmap_passes_check(tmp_path: Path) -> None:
    data = replicas()["ConfigMap"]["data"]
    for name, text in data.items():
        (tmp_path / name).write_text(text)
    result = check(tmp_path / "config.yaml", SCOPEGATE_JWT_SECRET=SECRET)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning: store:" not in result.stderr  # the example checks PostgreSQL's certificate


def test_the_multi_replica_example_runs_three_replicas_on_postgresql() -> None:
    kinds = replicas()
    store = kinds["ConfigMap"]["store"]
    assert store.startswith("postgresql://") and ":" not in store.split("@")[0][len("postgresql://") :]
    query = dict(parse_qsl(urlsplit(store).query))
    assert query["sslmode"] == "verify-full"
    deployment = kinds["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (gate,) = pod["containers"]
    assert gate["securityContext"]["readOnlyRootFilesystem"] is True
    # The CA that sslrootcert names is mounted where the URL says.
    mounts = {m["mountPath"]: m["name"] for m in gate["volumeMounts"]}
    ca_volume = mounts[os.path.dirname(query["sslrootcert"])]
    assert {v["name"] for v in pod["volumes"]} >= {ca_volume}
    ports = {p["name"]: p["containerPort"] for p in gate["ports"]}
    assert ports == {"http": 8080, "admin": 9090}
    assert gate["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert gate["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    env = {e["name"]: e for e in gate["env"]}
    ref = env["SCOPEGATE_STORE_PASSWORD"]["valueFrom"]["secretKeyRef"]
    secret = kinds["Secret"]
    assert (ref["name"], ref["key"] in secret["stringData"]) == (secret["metadata"]["name"], True)
    assert secret["stringData"][ref["key"]] == "REPLACE-ME"  # a placeholder, never a real password
    assert pod["terminationGracePeriodSeconds"] > kinds["ConfigMap"]["drain_timeout"]
    service = kinds["Service"]
    # The Service ingress-nginx-auth.yaml asks: scopegate.scopegate.svc, port 8080, never admin.
    assert (service["metadata"]["name"], service["metadata"]["namespace"]) == ("scopegate", "scopegate")
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(8080, "http")]
    assert kinds["PodDisruptionBudget"]["spec"]["minAvailable"] == 2
