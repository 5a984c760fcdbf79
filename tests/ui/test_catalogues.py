"""The page's five catalogues: the same keys, nothing empty, every string the page uses."""

from __future__ import annotations

import re

import pytest

from gateway import errors
from gateway.web.ui import LANGUAGES, STATIC
from tests.ui.conftest import CATALOGUES

ENGLISH = CATALOGUES["en"]
JS = "\n".join(p.read_text("utf-8") for p in sorted(STATIC.glob("*.js")))
HTML = (STATIC / "index.html").read_text("utf-8")


def _codes() -> set[str]:
    found: set[str] = set()
    todo: list[type[errors.GatewayError]] = [errors.GatewayError]
    while todo:
        cls = todo.pop()
        found.add(cls.code)
        todo.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize("lang", LANGUAGES)
def test_same_keys_and_no_empty_value(lang: str) -> None:
    messages = CATALOGUES[lang]
    assert set(messages) == set(ENGLISH), set(messages) ^ set(ENGLISH)
    empty = [key for key, value in messages.items() if not isinstance(value, str) or not value.strip()]
    assert empty == []


@pytest.mark.parametrize("lang", LANGUAGES)
def test_placeholders_match_english(lang: str) -> None:
    def holes(text: str) -> set[str]:
        return set(re.findall(r"\{([a-z]+)\}", text))

    wrong = [k for k, v in CATALOGUES[lang].items() if holes(v) != holes(ENGLISH[k])]
    assert wrong == []


def test_every_language_is_on_the_switch() -> None:
    assert re.findall(r'<option value="([a-z]+)"', HTML) == list(LANGUAGES)


def test_every_api_error_code_has_a_message() -> None:
    missing = sorted(code for code in _codes() if f"error.{code}" not in ENGLISH)
    assert missing == []
    assert {"error.network", "error.unknown"} <= set(ENGLISH)


def test_the_catalogue_holds_exactly_the_keys_the_page_uses() -> None:
    used = set(re.findall(r'data-i18n="([^"]+)"', HTML))
    # Every string literal in the script shaped like a key (`"create.title"`); a bare family
    # prefix (`"preset." + p`) is expanded below.
    families = {key.split(".")[0] for key in ENGLISH}
    alternatives = "|".join(sorted(families))
    literal = re.compile(r'"((?:' + alternatives + r')\.[a-z_:]+)"')
    used |= set(literal.findall(JS))
    # Keys built from a family: presets, statuses (the API's, mapped in list.js) and built-in scopes.
    presets = re.search(r"const PRESETS = \[([^\]]*)\]", JS)
    builtin = re.search(r"const BUILTIN = \[([^\]]*)\]", JS)
    assert presets and builtin
    for preset in re.findall(r'"([a-z]+)"', presets.group(1)):
        used |= {f"preset.{preset}", f"preset.{preset}_hint"}
    used |= {f"scope.{s}" for s in re.findall(r'"([a-z:]+)"', builtin.group(1))}
    statuses = re.search(r"const STATUSES = \{([^}]*)\}", JS)
    assert statuses
    used |= {f"status.{s}" for s in re.findall(r':\s*"([a-z_]+)"', statuses.group(1))}
    used |= {f"error.{code}" for code in _codes()} | {"error.network", "error.unknown"}
    assert sorted(used - set(ENGLISH)) == [], "named by the page, missing from the catalogue"
    assert sorted(set(ENGLISH) - used) == [], "in the catalogue, used nowhere"
