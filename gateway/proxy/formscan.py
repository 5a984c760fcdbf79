"""`_method` in form bodies: found while the body streams, before the upstream has all of it.

Rails, Laravel, Symfony and Express's method-override run a POST whose form carries
`_method=DELETE` as a DELETE; the gate judged a POST. So a form body that names `_method` is
refused (400 `bad_request`), the upstream never receiving it complete:

- `application/x-www-form-urlencoded`: small by nature. Held whole (up to `limits.form_inspect`,
  larger is 413 `body_too_large`) and released only once no field is `_method`.
- `multipart/form-data`: may be a large upload, so it is never held. Every part's headers are
  read as they stream past; bytes go upstream only up to the last delimiter whose part headers
  were read. A part named `_method` cuts the upstream request before its delimiter: the upstream
  has a body with no closing delimiter (and a chunked body with no last chunk) and never acts.
  The epilogue is scanned too: PHP reads on past a close delimiter to the next boundary line.
- A form with a `Content-Encoding` cannot be read as it passes (body-parser inflates gzip): 400.

Names are compared as PHP reads them (Laravel and Symfony sit on PHP's parser): percent-decoded
with `+` as space, cut at NUL and at `[`, leading spaces dropped, `.` and space read as `_`,
and letter case ignored (fail closed). PHP also splits multipart lines at a bare LF, so the
multipart scan does too. PHP reads a line over 5 KiB as several: the boundary inside a line, or
a part header line near that size, is refused.

Interface: `scanner_for(headers, form_inspect, method)` gives a per-request scanner (or None when the
body is no form); `feed(chunk)` returns the bytes that may go upstream now, `end()` the rest
once the body is complete. Both raise BadRequest or BodyTooLarge.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from multidict import CIMultiDict, CIMultiDictProxy

from ..errors import BadRequest, BodyTooLarge
from .params import parameters

METHOD_FIELD = b"_method"
URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
MAX_PART_HEADERS = 16 * 1024  # bytes of one part's header block; longer is refused
UTF8_BOM = b"\xef\xbb\xbf"
PHP_LINE_BUFFER = 5 * 1024  # PHP's multipart reader reads a longer line as several (FILLUNIT)
_BOUNDARY_RE = re.compile(r';\s*boundary\s*=\s*(?:"([^"]{1,200})"|([^\s;,"]{1,200}))', re.IGNORECASE)
# RFC 2046's bchars: what a boundary may hold, quoted or not.
_BCHARS_RE = re.compile(r"[0-9A-Za-z'()+_,./:=? -]+\Z")
_HEADERS_END_RE = re.compile(rb"\n\r?\n")
_RACK_BOUNDARY_RE = re.compile(r'multipart/.*boundary="?([^";,]+)"?', re.IGNORECASE | re.DOTALL)
_RACK_DISPOSITION_RE = re.compile(rb"content-disposition:", re.IGNORECASE)
_RACK_NAME_RE = re.compile(rb'[;\s]\s*name=(?:"((?:[^"\\]|\\.)*)"?|([^\s;"]*))', re.IGNORECASE)
_NAME_RE = re.compile(rb'(?:^|;)\s*name(\*?)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))', re.IGNORECASE)


def php_name(raw: bytes) -> bytes:
    """A query or form field name as PHP registers it."""
    name = unquote_to_bytes(raw.replace(b"+", b" "))
    name = name.split(b"\0", 1)[0].lstrip(b" ").split(b"[", 1)[0]
    return name.replace(b" ", b"_").replace(b".", b"_")


def is_method_field(raw: bytes) -> bool:
    return php_name(raw).lower() == METHOD_FIELD


def query_names_method(query: str) -> bool:
    """Whether a raw query string (or urlencoded body) has a field that PHP would read as `_method`."""
    return _names_method(query.encode("utf-8", "surrogateescape"))


def _names_method(data: bytes) -> bool:
    if data.startswith(UTF8_BOM):
        # SECURITY: body-parser (iconv-lite) drops a leading UTF-8 BOM: `\xef\xbb\xbf_method=`
        # is `_method` to Express. To PHP the first name keeps it and is no `_method` anyway.
        data = data[len(UTF8_BOM) :]
    return any(is_method_field(field.split(b"=", 1)[0]) for field in re.split(rb"[&;]", data))


class FormScan:
    """One request body's scanner: feed every chunk, then end."""

    _buf: bytearray

    @property
    def held(self) -> int:
        """Bytes received and not yet released upstream."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> bytes:
        raise NotImplementedError

    def end(self) -> bytes:
        raise NotImplementedError


def scanner_for(
    headers: CIMultiDictProxy[str] | CIMultiDict[str], form_inspect: int, method: str = "POST"
) -> FormScan | None:
    """The scanner for a request whose body is a form, else None; refusals that the headers
    alone decide are raised here, before the upstream is contacted."""
    types = headers.getall("Content-Type", [])
    if not any(t.strip() for t in types) and method == "POST":
        # SECURITY: Rack (so Rails' MethodOverride) parses a POST body with no Content-Type as
        # an urlencoded form: `_method=DELETE` without a Content-Type is a DELETE to Rails.
        # An empty Content-Type is none to Rack too (its media type of "" is nil).
        types = [URLENCODED]
    medias = [t.split(";", 1)[0].strip().lower() for t in types]
    if not any(m.startswith((URLENCODED, MULTIPART)) for m in medias):
        return None  # not a form (multipart/mixed is a form to no framework we know)
    if len(types) > 1:
        raise BadRequest("more than one Content-Type header on a form body")
    if any(v.strip().lower() not in ("", "identity") for v in headers.getall("Content-Encoding", [])):
        # SECURITY: an upstream that inflates the body would read fields we cannot see.
        raise BadRequest("a form body with a Content-Encoding cannot be inspected")
    if medias[0].startswith(URLENCODED):
        declared = headers.get("Content-Length", "").strip()
        if declared.isascii() and declared.isdigit() and int(declared) > form_inspect:
            raise BodyTooLarge(f"form body over limits.form_inspect ({form_inspect} bytes)")
        return UrlEncodedScan(form_inspect)
    m = _BOUNDARY_RE.search(types[0])
    if m is None:
        raise BadRequest("multipart/form-data without a usable boundary")
    boundary = m.group(1) or m.group(2)
    if not _BCHARS_RE.match(boundary):
        # SECURITY: a backslash or a quote is no boundary character, and parsers read one
        # differently: busboy (multer) unescapes `boundary="a\"b"` to `a"b`, PHP and Rack keep
        # `a\`. Scanning for the wrong delimiter would see no part at all.
        raise BadRequest("multipart/form-data with a boundary outside RFC 2046's characters")
    named = [value for name, value in parameters(types[0]) or () if name == "boundary"]
    rack = _RACK_BOUNDARY_RE.match(types[0])
    if (
        # SECURITY: busboy parses the parameter list, skipping quoted strings, where the search
        # above (and PHP's, and Rack's) finds `boundary=A` inside `x=";boundary=A"`.
        named != [boundary]
        or _php_boundary(types[0]) != boundary
        or (rack is not None and rack.group(1) != boundary)
    ):
        # SECURITY: PHP takes the first "boundary" substring anywhere (`xboundary=A; boundary=B`
        # is A to PHP, B to a parameter parser), Rack the last (`boundary=A; x="boundary=B"`
        # is B to Rails): the readings must agree.
        raise BadRequest("multipart/form-data with an ambiguous boundary")
    return MultipartScan(boundary.encode("latin-1"))


def _php_boundary(content_type: str) -> str | None:
    """The boundary as PHP's rfc1867 handler reads it from the Content-Type value."""
    i = content_type.find("boundary")
    if i < 0:
        i = content_type.lower().find("boundary")
    j = content_type.find("=", i) if i >= 0 else -1
    if j < 0:
        return None
    value = content_type[j + 1 :]
    if value.startswith('"'):
        end = value.find('"', 1)
        return value[1:end] if end > 0 else None
    return re.split(r"[,;]", value, maxsplit=1)[0]


class UrlEncodedScan(FormScan):
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> bytes:
        self._buf += chunk
        if len(self._buf) > self._limit:
            raise BodyTooLarge(f"form body over limits.form_inspect ({self._limit} bytes)")
        return b""  # nothing goes upstream before the whole form is read

    def end(self) -> bytes:
        body = bytes(self._buf)
        if _names_method(body):
            # SECURITY: the upstream would run this POST as the method `_method` names.
            raise BadRequest("a _method field in a form body is not accepted")
        return body


class MultipartScan(FormScan):
    def __init__(self, boundary: bytes) -> None:
        # PHP finds a boundary at the start of any line; a virtual LF makes the first one alike.
        self._delim = b"\n--" + boundary
        self._buf = bytearray(b"\n")
        self._virtual = 1  # leading bytes of _buf that the client never sent
        self._pos = 0  # everything before _pos is settled: scanned and free to go upstream
        self._seen = 1  # `--boundary` starting before this index of _buf has been checked

    def feed(self, chunk: bytes) -> bytes:
        self._buf += chunk
        self._no_boundary_inside_a_line()
        self._scan(eof=False)
        return self._release()

    def end(self) -> bytes:
        self._no_boundary_inside_a_line()
        self._scan(eof=True)
        self._pos = len(self._buf)
        return self._release()

    def _scan(self, eof: bool) -> None:
        buf, delim = self._buf, self._delim
        while True:
            i = buf.find(delim, self._pos)
            if i < 0:
                # A delimiter may straddle this chunk and the next: hold its possible start.
                self._pos = max(self._pos, len(buf) - len(delim) + 1)
                return
            after = i + len(delim)
            if len(buf) - after < 2 and not eof:
                self._pos = i
                return
            mark = bytes(buf[after : after + 2])  # what follows the boundary: `--`, CRLF or more
            if len(mark) == 2 and mark not in (b"--", b"\r\n"):
                # SECURITY: busboy reads on as the same part's headers after `--boundary x`
                # (`form-data\r\n\r\n--B ;name=_method` is a folded `name` to it).
                raise BadRequest("a multipart boundary line holds more than the boundary")
            if mark == b"--":
                # SECURITY: the close delimiter ends nothing for PHP, which reads on to the next
                # boundary line; the epilogue is scanned like the rest.
                self._pos = after + 2
                continue
            end = _HEADERS_END_RE.search(buf, after)
            if end is None:
                if eof:
                    raise BadRequest("multipart body ends inside a part's headers")
                if len(buf) - after > MAX_PART_HEADERS:
                    raise BadRequest("a multipart part's headers are too long")
                self._pos = i  # hold the delimiter until its part's headers are read
                return
            if buf[end.start() - 1 : end.end()] != b"\r\n\r\n":
                # SECURITY: Rack reads a part's headers up to CRLF CRLF, PHP up to an empty line:
                # after `\n\r\n`, Rack would still read headers that are body to this scan.
                raise BadRequest("a multipart part's headers must end with CRLF CRLF")
            block = bytes(buf[after : end.start()])
            if delim in block:
                # SECURITY: busboy removes a delimiter met inside a part's headers and joins
                # the two sides: `name="` CRLF `--B_method"` is `name="_method"` to it.
                raise BadRequest("a multipart boundary inside a part's headers")
            _check_part(block)
            # SECURITY: the blank line's LF may begin the next delimiter: Rack reads a boundary
            # line right after a part's headers as the end of an empty part, and a new part.
            self._pos = end.end() - 1

    def _no_boundary_inside_a_line(self) -> None:
        """SECURITY: PHP reads a line longer than its 5 KiB buffer as several lines, so
        `<5120 bytes>--boundary` opens a part to PHP that a search for LF + `--boundary` never
        sees (in the preamble or the epilogue). A boundary must not occur inside the body's
        content, so `--boundary` anywhere but at a line's start is refused."""
        buf, needle = self._buf, self._delim[1:]
        i = buf.find(needle, self._seen)
        while i >= 0:
            if buf[i - 1] != ord("\n"):  # _seen >= 1, so i >= 1
                raise BadRequest("the multipart boundary occurs inside a line")
            i = buf.find(needle, i + len(needle))
        self._seen = max(self._seen, len(buf) - len(needle) + 1)

    def _release(self) -> bytes:
        cut = self._pos
        out = bytes(self._buf[self._virtual : cut]) if cut > self._virtual else b""
        del self._buf[:cut]
        self._pos -= cut
        self._seen = max(1, self._seen - cut)
        self._virtual = max(0, self._virtual - cut)
        return out


def _check_part(block: bytes) -> None:
    """Refuse a part whose Content-Disposition names `_method` (the boundary line's rest first)."""
    lines: list[bytes] = []
    php: list[bytes] = []  # the same block as PHP's multipart_buffer_headers joins it
    for line in block.split(b"\n")[1:]:
        if len(line) >= PHP_LINE_BUFFER - 100:
            # SECURITY: PHP cuts a longer line in two, and the second piece may be a header of
            # its own (`X-Pad: <5 KiB>Content-Disposition: form-data; name="_method"`).
            raise BadRequest("a multipart part header line is too long")
        line = line.rstrip(b"\r")
        if line[:1] in (b" ", b"\t") and lines:
            lines[-1] += b" " + line.strip()  # a folded header line continues the previous one
        else:
            lines.append(line)
        if php and (line[:1].isspace() or b":" not in line):
            # SECURITY: PHP appends a line that starts with whitespace or has no ':' to the
            # previous header as it is, with no separator: `name="_met` + `hod"` is `_method`.
            php[-1] += line
        elif b":" in line and not line[:1].isspace():
            php.append(line)
    for line in lines + php:
        name, sep, value = line.partition(b":")
        if not sep or name.strip().lower() != b"content-disposition":
            continue
        for key, text in parameters(value.decode("latin-1")) or ():
            if key == "name" and is_method_field(text.encode("latin-1")):
                # SECURITY: busboy's reading, which skips quoted strings: `x=";name="; name=
                # "_method"` has a regex's `name=` inside x's quotes and hides the real one.
                raise BadRequest("a _method part in a multipart form body is not accepted")
        for m in _NAME_RE.finditer(value):
            raw = m.group(2) if m.group(2) is not None else m.group(3) or b""
            if m.group(2) is not None:
                raw = re.sub(rb"\\(.)", rb"\1", raw)
            readings = [raw.strip()]
            if m.group(1):  # RFC 5987 `name*=charset'lang'value`
                readings = [raw.strip().rsplit(b"'", 1)[-1]]
            elif m.group(2) is None:
                # SECURITY: PHP reads `name='_method'` (single quotes) and cuts an unquoted
                # value at whitespace (`name=_method x`); both are `_method` to Laravel.
                readings.append(_php_unquoted(raw))
            if any(is_method_field(r) for r in readings):
                # SECURITY: the upstream would run this POST as the method the part names.
                raise BadRequest("a _method part in a multipart form body is not accepted")
    _check_rack(block)


def _check_rack(block: bytes) -> None:
    """Rack (Rails) finds the name with an unanchored regex over the whole header block:
    `Content-Disposition:[^:]*;\\s*name=` (Rack 3), `Content-Disposition:.*;\\s*name=` (2.2),
    `Content-Disposition:.*\\s+name=` (older). So `Content-Disposition:` inside another
    header's value counts, and so may a name after a space rather than a `;`."""
    for m in _RACK_DISPOSITION_RE.finditer(block):
        rest = block[m.end() :]
        for span in (rest.split(b"\n", 1)[0], rest.split(b":", 1)[0]):
            for n in _RACK_NAME_RE.finditer(span):
                raw = n.group(1) if n.group(1) is not None else n.group(2)
                if is_method_field(raw.strip()):
                    # SECURITY: `X-Note: Content-Disposition: x; name="_method"` is _method to Rack.
                    raise BadRequest("a _method part in a multipart form body is not accepted")


def _php_unquoted(raw: bytes) -> bytes:
    """A parameter value PHP's multipart reader takes without double quotes (php_ap_getword_conf)."""
    value = raw.lstrip(b" \t\r\n\v\f")
    if value[:1] == b"'":
        body = re.match(rb"((?:[^'\\]|\\.)*)", value[1:])
        return re.sub(rb"\\(['\\])", rb"\1", body.group(1) if body else b"")
    return re.split(rb"[ \t\r\n\v\f]", value, maxsplit=1)[0]
