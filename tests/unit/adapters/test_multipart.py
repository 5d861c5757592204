"""The ``multipart/form-data`` reader: the bodies ``httpx2`` builds for the ``openai`` SDK, read part
by part with their bytes exact, and every malformed body refused with an AdapterError."""

from __future__ import annotations

import httpx2
import pytest

from costwarden.adapters.multipart import Part, boundary_of, is_form, parse_form
from costwarden.errors import AdapterError

BINARY = bytes(range(256)) + b"\r\n--not-the-boundary\r\n\r\n--" + bytes(range(255, -1, -1))
"""Every byte value, CRLFs, a blank line and dashes: what a reader splitting on lines gets wrong."""


def built(**kwargs: object) -> tuple[str, bytes]:
    """The Content-Type and body ``httpx2`` builds for a form (as the SDK's requests are built)."""
    request = httpx2.Request("POST", "http://x/v1/images/edits", **kwargs)  # type: ignore[arg-type]
    return request.headers["content-type"], request.read()


def form(content: str, boundary: str = "b0undary") -> list[Part]:
    body = content.replace("\n", "\r\n").encode()
    return list(parse_form(f"multipart/form-data; boundary={boundary}", body).parts)


# --- what httpx2 builds -----------------------------------------------------------------------------


def test_fields_and_files_built_by_httpx2_are_read_in_order_with_exact_bytes() -> None:
    content_type, body = built(
        data={"prompt": "add a hat", "n": "2", "model": "gpt-image-1"},
        files=[("image[]", ("fox.png", BINARY, "image/png")), ("image[]", ("b.jpg", b"\xff\xd8", "image/jpeg")),
               ("mask", ("m.png", b"", "image/png"))],
    )
    parts = parse_form(content_type, body).parts
    assert [(p.name, p.is_file) for p in parts] == [
        ("prompt", False), ("n", False), ("model", False), ("image[]", True), ("image[]", True), ("mask", True)]
    assert [p.text() for p in parts[:3]] == ["add a hat", "2", "gpt-image-1"]
    fox, jpeg, mask = parts[3:]
    assert (fox.filename, fox.content_type, fox.data) == ("fox.png", "image/png", BINARY)
    assert (jpeg.filename, jpeg.data) == ("b.jpg", b"\xff\xd8")
    assert (mask.filename, mask.data) == ("m.png", b"")


def test_a_file_without_a_name_or_type_is_a_field_whose_bytes_are_kept() -> None:
    content_type, body = built(files={"image": (None, BINARY)})
    (part,) = parse_form(content_type, body).parts
    assert (part.name, part.filename, part.content_type, part.is_file, part.data) == ("image", None, None, False,
                                                                                        BINARY)
    with pytest.raises(AdapterError, match="field 'image' is not UTF-8 text"):
        part.text()


def test_quoted_names_are_unescaped_and_httpx2_percent_escapes_kept() -> None:
    content_type, body = built(files={'a"b\\c': ('fo"x\\.png', b"1", "image/png")})
    (part,) = parse_form(content_type, body).parts
    assert (part.name, part.filename) == ("a%22b\\c", "fo%22x\\.png")  # httpx2 sends %22 and \\, read as sent


def test_unicode_names_and_values_are_utf8() -> None:
    content_type, body = built(data={"prompt": "un renard à Zürich ✨"}, files={"image": ("renard é.png", b"x")})
    prompt, image = parse_form(content_type, body).parts
    assert prompt.text() == "un renard à Zürich ✨"
    assert image.filename == "renard é.png"


# --- the grammar, by hand ---------------------------------------------------------------------------


def test_preamble_epilogue_padding_quoted_boundary_and_escapes() -> None:
    body = (
        b"this preamble is ignored\r\n"
        b"--a:b \t\r\n"  # transport padding after the delimiter
        b'Content-Disposition: form-data; name="say \\"hi\\""; filename=plain.txt\r\n'
        b"Content-Type: text/plain\r\n"
        b"\r\n"
        b"hello\r\n"
        b"--a:b\r\n"
        b"content-disposition: FORM-DATA;name=n\r\n"
        b"\r\n"
        b"3\r\n"
        b"--a:b--\r\n"
        b"an epilogue, also ignored\r\n--a:b\r\n"
    )
    first, second = parse_form('multipart/form-data; charset=utf-8; boundary="a:b"', body).parts
    assert (first.name, first.filename, first.content_type, first.data) == ('say "hi"', "plain.txt", "text/plain",
                                                                            b"hello")
    assert (second.name, second.text()) == ("n", "3")


def test_a_part_without_headers_beyond_the_disposition_and_an_empty_value() -> None:
    (part,) = form('--b0undary\nContent-Disposition: form-data; name="empty"\n\n\n--b0undary--\n')
    assert (part.name, part.data, part.is_file) == ("empty", b"", False)


def test_filename_star_is_decoded_and_folded_headers_joined() -> None:
    (part,) = form("--b0undary\nContent-Disposition: form-data; name=image;\n filename*=UTF-8''r%C3%A9nard.png\n\n"
                   "x\n--b0undary--\n")
    assert part.filename == "rénard.png"


def test_an_empty_form() -> None:
    assert parse_form("multipart/form-data; boundary=z", b"--z--\r\n").parts == ()


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [("multipart/form-data; boundary=x", True), ("Multipart/Form-Data ;boundary=x", True),
     ("application/json", False), ("multipart/mixed; boundary=x", False), (None, False)],
)
def test_is_form(content_type: str | None, expected: bool) -> None:
    assert is_form(content_type) is expected


def test_boundary_of_reads_quoted_and_bare_boundaries() -> None:
    assert boundary_of("multipart/form-data; boundary=abc") == b"abc"
    assert boundary_of('multipart/form-data; boundary="a b=c"') == b"a b=c"


# --- malformed bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "match"),
    [
        ("multipart/form-data", "no valid boundary"),
        ("multipart/form-data; boundary=", "no valid boundary"),
        ("multipart/form-data; boundary=" + "x" * 71, "no valid boundary"),
        ("multipart/mixed; boundary=b0undary", "no valid boundary"),
        ('multipart/form-data; boundary="b0undary', "malformed Content-Type parameters"),
    ],
)
def test_a_content_type_without_a_usable_boundary_is_refused(content_type: str, match: str) -> None:
    with pytest.raises(AdapterError, match=match):
        parse_form(content_type, b"--b0undary--\r\n")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("no boundary here\n", "boundary never appears"),
        ("--b0undary\nContent-Disposition: form-data; name=a\n\nvalue", "does not end with a boundary"),
        ("--b0undary\nContent-Disposition: form-data; name=a\n\nv\n--b0undary\n", "does not end with a boundary"),
        ("--b0undary\nContent-Disposition: form-data; name=a\nvalue\n--b0undary--\n", "headers of part 1 do not end"),
        ("--b0undary\nContent-Type: text/plain\n\nv\n--b0undary--\n", "part 1 has no Content-Disposition"),
        ("--b0undary\nContent-Disposition: attachment; name=a\n\nv\n--b0undary--\n", "not a named form-data part"),
        ("--b0undary\nContent-Disposition: form-data; filename=a.png\n\nv\n--b0undary--\n", "not a named form-data"),
        ('--b0undary\nContent-Disposition: form-data; name="a\n\nv\n--b0undary--\n', "malformed Content-Disposition"),
        ("--b0undary\nContent-Disposition: form-data; name=a\nno colon\n\nv\n--b0undary--\n", "malformed header"),
        ("--b0undaryX\nContent-Disposition: form-data; name=a\n\nv\n--b0undary--\n", "after its boundary"),
        ("--b0undary\nContent-Disposition: form-data; name=a\n\nv\n--b0undary--\n"[:-3], "without its closing"),
    ],
)
def test_a_malformed_body_is_refused_with_a_clear_error(content: str, match: str) -> None:
    with pytest.raises(AdapterError, match=f"multipart/form-data body: .*{match}"):
        form(content)


def test_an_undecodable_filename_star_is_refused() -> None:
    with pytest.raises(AdapterError, match="undecodable filename"):
        form("--b0undary\nContent-Disposition: form-data; name=a; filename*=utf-8''%FF.png\n\nv\n--b0undary--\n")


def test_a_body_cut_inside_the_last_part_is_refused() -> None:
    content_type, body = built(files={"image": ("a.png", BINARY, "image/png")})
    with pytest.raises(AdapterError, match="part 1 does not end with a boundary"):
        parse_form(content_type, body[: len(body) // 2])
