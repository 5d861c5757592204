"""``multipart/form-data`` request bodies (RFC 7578 on RFC 2046) read, never rebuilt.

The call-guard judges a request from its body, and some billed requests are forms: OpenAI's image
edits send the prompt and options as text fields beside the image files. This reads such a body
(already in memory, as the ``openai`` SDK builds it) into its parts, so the guard can judge it and
then send the *original* bytes: nothing here writes a form::

    >>> form = parse_form('multipart/form-data; boundary=x',
    ...                   b'--x\\r\\nContent-Disposition: form-data; name="prompt"\\r\\n\\r\\na fox\\r\\n--x--\\r\\n')
    >>> [(part.name, part.text()) for part in form.parts]
    [('prompt', 'a fox')]

The reader is strict where a lenient one could be led to judge a different request than the server
reads: a body without its opening or closing boundary, a part whose headers do not end, a part that
is not ``form-data`` or has no ``name``, a delimiter line with anything after the boundary, or a
quoted parameter left open raises :class:`~costwarden.errors.AdapterError`. Names and file names
are read as sent (quoted strings unescaped; ``filename*`` decoded per RFC 5987); the percent
escapes HTML forms and ``httpx`` put in names (``%22`` for ``"``) are left as they are. The
preamble before the first boundary and the epilogue after the last are ignored, as RFC 2046 says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from costwarden.errors import AdapterError

FORM_DATA = "multipart/form-data"
_WHAT = "multipart/form-data body"
_CRLF = b"\r\n"
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAM = re.compile(rf'\s*;\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|[^";]*)\s*')
_ESCAPED = re.compile(r"\\(.)")
_MAX_BOUNDARY = 70  # RFC 2046: 1 to 70 characters


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a form: its field ``name``, its bytes, and for a file its ``filename`` and
    ``content_type`` (None where the part does not say)."""

    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    @property
    def is_file(self) -> bool:
        """Whether the part was sent as a file (it names a file or a content type)."""
        return self.filename is not None or self.content_type is not None

    def text(self) -> str:
        """The part's value as text (UTF-8, RFC 7578's default); AdapterError when it is not."""
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError:
            raise AdapterError(f"{_WHAT}: field '{self.name}' is not UTF-8 text") from None


@dataclass(frozen=True, slots=True)
class Form:
    """The parts of a form, in the order they were sent."""

    parts: tuple[Part, ...]


def is_form(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` header names a ``multipart/form-data`` body."""
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == FORM_DATA


def boundary_of(content_type: str) -> bytes:
    """The ``boundary`` parameter of a ``multipart/form-data`` content type; AdapterError without one."""
    kind, params = _header_params(content_type, "Content-Type")
    value = params.get("boundary")
    if kind != FORM_DATA or not value or len(value) > _MAX_BOUNDARY:
        raise AdapterError(f"{_WHAT}: Content-Type {content_type!r} has no valid boundary parameter")
    return value.encode("latin-1")


def parse_form(content_type: str, body: bytes) -> Form:
    """The parts of ``body``, a form whose ``Content-Type`` is ``content_type``."""
    delimiter = b"--" + boundary_of(content_type)
    at = _first_delimiter(body, delimiter)
    parts: list[Part] = []
    while not body.startswith(b"--", at):  # ``--`` right after a delimiter closes the form
        start = _line_end(body, at)
        end = body.find(_CRLF + delimiter, start)
        if end < 0:
            raise AdapterError(f"{_WHAT}: part {len(parts) + 1} does not end with a boundary (the body is cut short)")
        parts.append(_part(body[start:end], len(parts) + 1))
        at = end + len(_CRLF) + len(delimiter)
    return Form(tuple(parts))


def _first_delimiter(body: bytes, delimiter: bytes) -> int:
    """Where the first delimiter line ends (after any preamble)."""
    if body.startswith(delimiter):
        return len(delimiter)
    found = body.find(_CRLF + delimiter)
    if found < 0:
        raise AdapterError(f"{_WHAT}: its boundary never appears in the body")
    return found + len(_CRLF) + len(delimiter)


def _line_end(body: bytes, at: int) -> int:
    """Past the rest of a delimiter line: optional spaces or tabs, then CRLF."""
    while body[at : at + 1] in (b" ", b"\t"):
        at += 1
    if at >= len(body):
        raise AdapterError(f"{_WHAT}: the body ends without its closing boundary")
    if body[at : at + 2] != _CRLF:
        raise AdapterError(f"{_WHAT}: a boundary line has {body[at:at + 8]!r} after its boundary")
    return at + 2


def _part(raw: bytes, number: int) -> Part:
    if raw.startswith(_CRLF):  # no headers at all
        head, data = b"", raw[2:]
    else:
        split = raw.find(_CRLF + _CRLF)
        if split < 0:
            raise AdapterError(f"{_WHAT}: the headers of part {number} do not end with a blank line")
        head, data = raw[:split], raw[split + 4 :]
    headers = _headers(head, number)
    disposition = headers.get("content-disposition")
    if disposition is None:
        raise AdapterError(f"{_WHAT}: part {number} has no Content-Disposition header")
    kind, params = _header_params(disposition, "Content-Disposition")
    name = params.get("name")
    if kind != "form-data" or name is None:
        raise AdapterError(f"{_WHAT}: part {number} is not a named form-data part ({disposition!r})")
    filename = _extended(params["filename*"]) if "filename*" in params else params.get("filename")
    return Part(name, data, filename, headers.get("content-type"))


def _headers(head: bytes, number: int) -> dict[str, str]:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")  # a legacy client's file name: judged as sent, never rewritten
    lines: list[str] = []
    for line in text.split("\r\n") if text else ():
        if line[:1] in (" ", "\t") and lines:  # an obsolete folded line continues the one before
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not re.fullmatch(_TOKEN, name):
            raise AdapterError(f"{_WHAT}: part {number} has a malformed header line {line[:60]!r}")
        headers[name.lower()] = value.strip()
    return headers


def _header_params(value: str, header: str) -> tuple[str, dict[str, str]]:
    """The lower-cased main value of a header and its ``; key=value`` parameters (keys lower-cased,
    quoted strings unescaped)."""
    main, semicolon, rest = value.partition(";")
    params: dict[str, str] = {}
    at, rest = 0, semicolon + rest
    while at < len(rest):
        found = _PARAM.match(rest, at)
        if found is None:
            if rest[at:].strip(" \t;") == "":
                break
            raise AdapterError(f"{_WHAT}: malformed {header} parameters {value!r}")
        key, raw = found.group(1).lower(), found.group(2)
        params[key] = _ESCAPED.sub(r"\1", raw[1:-1]) if raw.startswith('"') else raw.strip()
        at = found.end()
    return main.strip().lower(), params


def _extended(value: str) -> str:
    """An RFC 5987 ``charset'language'percent-encoded`` value."""
    charset, _, rest = value.partition("'")
    _, _, encoded = rest.partition("'")
    try:
        return unquote(encoded, encoding=charset or "utf-8", errors="strict")
    except (LookupError, UnicodeDecodeError):
        raise AdapterError(f"{_WHAT}: undecodable filename* parameter {value!r}") from None


__all__ = ["FORM_DATA", "Form", "Part", "boundary_of", "is_form", "parse_form"]
