"""YAML loading that remembers where every key came from, so errors can say `file:line`."""

from __future__ import annotations

from typing import Any

import yaml

from .errors import ConfigError, Problem


class LMap(dict[str, Any]):
    """A mapping from a YAML file; `lines[key]` is the 1-based line of each key."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.line = 0
        self.lines: dict[str, int] = {}


class LList(list[Any]):
    """A sequence from a YAML file; `lines[i]` is the 1-based line of each item."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.line = 0
        self.lines: list[int] = []


class _Loader(yaml.SafeLoader):
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> LMap:
    out = LMap()
    out.line = node.start_mark.line + 1
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raise ConfigError([Problem(loader.name, line, f"key {key!r} must be a string")])
        if key in out:
            raise ConfigError([Problem(loader.name, line, f"duplicate key {key!r}")])
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = line
    return out


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> LList:
    out = LList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.lines = [child.start_mark.line + 1 for child in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


def load_yaml(path: str) -> Any:
    """Parse one YAML file; a syntax or I/O error becomes a ConfigError with its line."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError([Problem(path, 0, f"cannot read: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem(path, 0, "not valid UTF-8")]) from None
    loader = _Loader(text)
    loader.name = path
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise ConfigError([Problem(path, line, f"YAML: {exc.problem or exc}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(path, 0, f"YAML: {exc}")]) from None
    finally:
        loader.dispose()


def line_of(container: Any, key: str | int, default: int = 0) -> int:
    if isinstance(container, LMap) and isinstance(key, str):
        return container.lines.get(key, container.line or default)
    if isinstance(container, LList) and isinstance(key, int):
        return container.lines[key] if 0 <= key < len(container.lines) else container.line or default
    line = getattr(container, "line", default)
    return line if isinstance(line, int) and line else default
