"""The management API's OpenAPI 3.1 document: one YAML source in the package, served under the mount.

management_openapi.yaml is written with paths relative to the mount; `document(mount)` gives
the copy a gateway serves at `<mount>/openapi.json`, its paths under the configured mount.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from typing import Any

import yaml

SOURCE = "management_openapi.yaml"


@functools.cache
def _source() -> dict[str, Any]:
    text = resources.files(__package__).joinpath(SOURCE).read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


def document(mount: str) -> dict[str, Any]:
    """The document for a gateway whose management API is served under `mount` (e.g. /auth)."""
    doc = copy.deepcopy(_source())
    base = mount.rstrip("/")
    doc["paths"] = {base + path: item for path, item in doc["paths"].items()}
    return doc


@functools.cache
def document_json(mount: str) -> str:
    """`document(mount)` serialised once per mount, as the gateway serves it."""
    return json.dumps(document(mount), indent=1)
