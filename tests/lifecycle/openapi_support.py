"""Reading the management API's OpenAPI document in tests: refs inlined, answers validated."""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from gateway.web.apidoc import document

MOUNT = "/auth"
DOC = document(MOUNT)
ERROR_CODES = frozenset(DOC["components"]["schemas"]["Error"]["properties"]["error"]["enum"])


def inline(node: Any, doc: dict[str, Any] = DOC) -> Any:
    """`node` with every local `$ref` replaced by what it points at (the document has no cycles)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = doc
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return inline({**target, **rest}, doc)
        return {k: inline(v, doc) for k, v in node.items()}
    if isinstance(node, list):
        return [inline(v, doc) for v in node]
    return node


def template_of(path: str) -> str | None:
    """The document's path template for a concrete path; literal segments beat parameters."""
    segs = path.strip("/").split("/")
    best: tuple[tuple[int, ...], str] | None = None
    for template in DOC["paths"]:
        parts = template.strip("/").split("/")
        if len(parts) != len(segs):
            continue
        if all(p.startswith("{") or p == s for p, s in zip(parts, segs, strict=True)):
            rank = tuple(int(p.startswith("{")) for p in parts)
            if best is None or rank < best[0]:
                best = (rank, template)
    return best[1] if best else None


def check_answer(method: str, path: str, status: int, content_type: str, body: bytes) -> str:
    """Assert that the answer is one the document describes (status, media type, body schema);
    the operation's template, for coverage counts."""
    template = template_of(path)
    assert template is not None, f"{method} {path}: no such path in the document"
    operation = DOC["paths"][template].get(method.lower())
    assert operation is not None, f"{method} {template}: no such operation in the document"
    responses = operation["responses"]
    assert str(status) in responses, f"{method} {path} answered {status}, not documented: {body[:300]!r}"
    response = inline(responses[str(status)])
    content = response.get("content")
    if status >= 400:
        # Every refusal is the contract's JSON, with a code the document lists.
        value = json.loads(body)
        assert value.get("error") in ERROR_CODES, value
    if not content:
        assert body == b"", f"{method} {path} {status}: documented without a body, got {body[:200]!r}"
        return template
    assert content_type in content, f"{method} {path} {status}: {content_type} not documented"
    schema = content[content_type]["schema"]
    jsonschema.Draft202012Validator(schema).validate(json.loads(body))
    return template
