"""gateway.proxy.params: a header's parameter list as a strict parser (busboy) reads it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.proxy.params import parameters

TOKEN = "!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("multipart/form-data", []),
        ("multipart/form-data; boundary=abc", [("boundary", "abc")]),
        ('form-data; NAME="a;b=c"; filename="x.txt"', [("name", "a;b=c"), ("filename", "x.txt")]),
        ('t; x=";boundary=A;"; boundary=B', [("x", ";boundary=A;"), ("boundary", "B")]),
        ('t; b="a\\"b"; c="a\\\\b"', [("b", 'a"b'), ("c", "a\\b")]),
        ("t;boundary=abc;\tcharset=utf-8 ;", [("boundary", "abc"), ("charset", "utf-8")]),
        ("t; a=1; a=2", [("a", "1"), ("a", "2")]),
        ('t; n="caf\xe9"', [("n", "caf\xe9")]),
    ],
    ids=[
        "none",
        "one",
        "quoted-separators",
        "quoted-boundary",
        "quoted-pairs",
        "spacing",
        "repeats",
        "obs-text",
    ],
)
def test_parameters_are_read_past_quoted_strings(value: str, expected: list[tuple[str, str]]) -> None:
    assert parameters(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "t; xboundaryx",  # no `=`
        "t; a=",  # no value
        "t; a = b",  # space around `=`
        't; a="open',  # no closing quote
        't; a="x\x01y"',  # a control character in quotes
        "t; a=b c",  # two tokens
        "t; =b",  # no name
        't; a="b"c',  # text after the closing quote
    ],
)
def test_a_malformed_list_is_none(value: str) -> None:
    assert parameters(value) is None


names = st.text(TOKEN, min_size=1, max_size=12)
values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=20
)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(max_examples=300)
@given(
    st.lists(st.tuples(names, values, st.booleans()), max_size=5), st.sampled_from(["; ", ";", ";\t", " ; "])
)
def test_a_written_list_reads_back(params: list[tuple[str, str, bool]], sep: str) -> None:
    """Whatever a value holds (`;`, `=`, quotes, backslashes), written as a quoted string it is
    read back whole, and a token value as itself."""
    rendered = "multipart/form-data" + "".join(
        f"{sep}{name}={value if bare and value and all(c in TOKEN for c in value) else _quote(value)}"
        for name, value, bare in params
    )
    assert parameters(rendered) == [(name.lower(), value) for name, value, _ in params]
