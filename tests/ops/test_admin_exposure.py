"""The image's admin listener binds 0.0.0.0 for probes: the config and README say not to publish it."""

from __future__ import annotations

import re

from tests.ops.test_deploy_files import DOCKER_CONFIG, REPO

README = REPO / "README.md"


def test_the_image_config_says_the_admin_listener_is_not_to_be_published() -> None:
    lines = DOCKER_CONFIG.read_text().splitlines()
    admin = next(line for line in lines if line.startswith("admin:"))
    assert "host: 0.0.0.0" in admin
    assert "for probes; do not publish" in admin


def test_the_readme_says_so_and_does_not_publish_it() -> None:
    text = README.read_text()
    docker = text[text.index("**Docker.**") : text.index("**Kubernetes sidecar.**")]
    plain = re.sub(r"\s+", " ", docker.replace("**", ""))
    assert "for probes; do not publish" in plain
    assert "9090:9090" not in docker
