"""Reading a located YAML mapping: typed values, every problem kept with its file and line."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from yarl import URL

from ..errors import Problem
from ..yamlsrc import LMap, line_of

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 10**6, "MiB": 2**20, "GB": 10**9, "GiB": 2**30}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: object) -> float | None:
    """`30d`, `12h`, `90`, 90 -> seconds; None when not a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    return None


def parse_size(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
    return None


T = TypeVar("T")


class Reader:
    """Pulls typed values out of a located YAML mapping, collecting every problem."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def error(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.file, line, message))

    def mapping(self, node: Any, where: str, allowed: set[str], line: int = 0) -> LMap:
        if not isinstance(node, LMap):
            self.error(getattr(node, "line", line), f"{where}: expected a mapping")
            return LMap()
        for key in node:
            if key not in allowed:
                self.error(line_of(node, key), f"{where}: unknown key {key!r}")
        return node

    def get(
        self,
        node: LMap,
        key: str,
        where: str,
        convert: Callable[[Any], T | None],
        default: T,
        expect: str,
    ) -> T:
        if key not in node or node[key] is None:
            return default
        value = convert(node[key])
        if value is None:
            self.error(line_of(node, key), f"{where}.{key}: expected {expect}, got {node[key]!r}")
            return default
        return value


def nonempty_str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def port_number(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 65535 else None


def nonneg_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def pos_duration(v: Any) -> float | None:
    d = parse_duration(v)
    return d if d is not None and d > 0 else None


def nonneg_duration(v: Any) -> float | None:
    d = parse_duration(v)
    return d if d is not None and d >= 0 else None


def pos_size(v: Any) -> int | None:
    s = parse_size(v)
    return s if s is not None and s > 0 else None


def http_url(v: Any) -> URL | None:
    if not isinstance(v, str):
        return None
    try:
        url = URL(v)
    except ValueError:
        return None
    if url.scheme not in ("http", "https") or not url.host:
        return None
    return url
