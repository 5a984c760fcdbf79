"""Header parameters (`type; name=value; name="quoted"`) read as a strict parser reads them.

The form scan (formscan.py) also reads `boundary` and a part's `name` the way PHP and Rack do,
with substring searches and unanchored regexes. busboy (multer, so most Express apps) parses the
parameter list instead, skipping quoted strings: `x=";boundary=A"; boundary=B` is B to it and A
to a search. The scan checks every reading; this module gives the parser's.
"""

from __future__ import annotations

import re

# RFC 9110 token characters.
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_OWS = " \t"


def parameters(value: str) -> list[tuple[str, str]] | None:
    """The parameters after the first `;`, names lower-cased, quoted values unescaped, in order
    (repeats kept); None when the list is not well formed. Everything before the first `;` (the
    media type or disposition) is the caller's."""
    start = value.find(";")
    if start < 0:
        return []
    out: list[tuple[str, str]] = []
    i, end = start, len(value)
    while i < end:
        if value[i] in _OWS:
            i += 1
            continue
        if value[i] != ";":
            return None
        i += 1
        while i < end and value[i] in _OWS:
            i += 1
        if i == end:
            break  # a trailing `;`
        name = _TOKEN_RE.match(value, i)
        if name is None or name.end() == end or value[name.end()] != "=":
            return None
        i = name.end() + 1
        if i < end and value[i] == '"':
            i, text = _quoted(value, i + 1)
            if i < 0:
                return None
        else:
            token = _TOKEN_RE.match(value, i)
            if token is None:
                return None
            i, text = token.end(), token.group()
        out.append((name.group().lower(), text))
    return out


def _quoted(value: str, i: int) -> tuple[int, str]:
    """A quoted string's text from just after its opening quote, quoted-pairs unescaped, and the
    index after its closing quote (-1 when it has none, or holds a control character)."""
    text: list[str] = []
    end = len(value)
    while i < end:
        c = value[i]
        if c == '"':
            return i + 1, "".join(text)
        if c == "\\":
            i += 1
            if i == end:
                break
            c = value[i]
        if (c < " " and c != "\t") or c == "\x7f":
            break
        text.append(c)
        i += 1
    return -1, ""
