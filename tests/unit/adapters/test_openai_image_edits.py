"""OpenAI image edits (``images.edit``) as ``llm_call`` subjects: the form read into the body judged,
each input image's tokens by OpenAI's GPT Image formula from its pixel size, the worst case they add,
and the routing of ``/images/edits`` to the images edge."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import httpx2
import pytest

from costwarden.adapters import openai_images as images
from costwarden.adapters.multipart import parse_form
from costwarden.adapters.pricing import GenaiPricer
from costwarden.enforcers import openai_endpoints as endpoints
from costwarden.engine.rules.budget import worst_case_usage
from costwarden.engine.subjects import TokenUsage
from costwarden.errors import AdapterError

PRICER = GenaiPricer()
PROMPT = "a watercolour fox in the snow"  # 8 tokens by the prose estimate
TEXT = 8


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def edit(fields: dict[str, str], files: list[tuple[str, Any]]) -> dict[str, Any]:
    """The body judged for a form as ``httpx2`` builds it for the SDK."""
    request = httpx2.Request("POST", "https://api.openai.com/v1/images/edits", data=fields, files=files)
    return images.edit_body(parse_form(request.headers["content-type"], request.read()))


def fields(**extra: str) -> dict[str, str]:
    return {"model": "gpt-image-1", "prompt": PROMPT, **extra}


# --- the formula ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "tokens"),
    [
        (1024, 1024, 194),  # scaled to 512x512: one tile
        (1024, 1025, 194),  # rounds down to 512x512, as OpenAI billed it
        (1023, 1024, 194),
        (512, 513, 323),  # not scaled (its shortest side is 512): two tiles
        (1536, 1024, 323),  # 768x512
        (4032, 3024, 323),  # a phone photo: 2048x1536, then 682x512
        (100, 100, 194),  # small images are not scaled up
        (2048, 512, 581),  # four tiles, the most there can be
        (600, 2048, 581),  # 512x1747
        (10000, 1, 581),  # fit in 2048: 2048x1 (never a zero side)
        (3000, 3000, 194),
    ],
)
def test_input_image_tokens_follow_openais_formula(width: int, height: int, tokens: int) -> None:
    assert images.input_image_tokens(width, height) == tokens
    assert images.input_image_tokens(height, width) == tokens  # the tiles do not care which side is which


@pytest.mark.parametrize(("width", "height", "extra"), [(1024, 1024, 4096), (1536, 1024, 6144), (1024, 1025, 6144)])
def test_high_input_fidelity_adds_its_tokens_by_shape(width: int, height: int, extra: int) -> None:
    assert images.input_image_tokens(width, height, high_fidelity=True) == images.input_image_tokens(
        width, height) + extra


def test_no_image_costs_more_than_the_largest_reserved_for_an_unknown_one() -> None:
    sides = [1, 7, 300, 511, 512, 513, 700, 1024, 1025, 1536, 2047, 2048, 2049, 3000, 8192, 20000]
    worst = max(images.input_image_tokens(w, h, high_fidelity=True) for w in sides for h in sides)
    assert worst == images.MAX_INPUT_IMAGE_TOKENS == 65 + 4 * 129 + 6144


# --- the form read into a body ----------------------------------------------------------------------


def test_a_form_becomes_a_typed_body_with_its_images_described_not_carried() -> None:
    body = edit(fields(n="2", size="1024x1536", quality="low", input_fidelity="high", stream="false",
                       output_compression="80"),
                [("image[]", ("fox.png", png(1536, 1024), "image/png")),
                 ("image[]", ("noise.bin", b"\x00" * 50, "application/octet-stream")),
                 ("mask", ("mask.png", png(1536, 1024), "image/png"))])
    assert {k: body[k] for k in ("model", "prompt", "n", "size", "quality", "input_fidelity", "stream",
                                 "output_compression")} == {
        "model": "gpt-image-1", "prompt": PROMPT, "n": 2, "size": "1024x1536", "quality": "low",
        "input_fidelity": "high", "stream": False, "output_compression": 80}
    fox, noise = body["image"]
    assert fox == {"filename": "fox.png", "content_type": "image/png", "bytes": len(png(1536, 1024)),
                   "width": 1536, "height": 1024}
    assert (noise["width"], noise["height"], noise["bytes"]) == (None, None, 50)
    assert body["mask"]["width"] == 1536 and not isinstance(body["mask"], list)


def test_a_single_image_is_a_list_and_a_file_without_a_name_still_an_image() -> None:
    body = edit(fields(), [("image", (None, png(640, 480)))])
    assert [(i["width"], i["height"], i["filename"]) for i in body["image"]] == [(640, 480, None)]


@pytest.mark.parametrize(
    ("form_fields", "files", "match"),
    [
        ({"n": "two"}, [("image", ("a.png", b"1", "image/png"))], "'n' must be a whole number, got 'two'"),
        ({"n": "²"}, [("image", ("a.png", b"1", "image/png"))], "'n' must be a whole number"),
        ({}, [("model", (None, b"gpt-image-1-mini"))], "'model' is sent more than once"),
        ({}, [("mask", ("a.png", b"1", "image/png")), ("mask", ("b.png", b"2", "image/png"))], "'mask' is sent more"),
        ({}, [("user", (None, b"\xff\xfe"))], "field 'user' is not UTF-8 text"),
        ({"n": "1"}, [("n[]", (None, b"2"))], "'n\\[\\]' is sent more than once"),
    ],
)
def test_a_form_the_guard_cannot_read_one_way_is_refused(
    form_fields: dict[str, str], files: list[tuple[str, Any]], match: str
) -> None:
    with pytest.raises(AdapterError, match=match):
        edit(fields(**form_fields), files)


# --- the subject ------------------------------------------------------------------------------------


def test_the_subject_adds_each_image_and_the_mask_to_the_estimated_input() -> None:
    body = edit(fields(size="1024x1024", quality="medium", n="3"),
                [("image[]", ("a.png", png(1024, 1024), "image/png")),
                 ("image[]", ("b.png", png(1536, 1024), "image/png")),
                 ("mask", ("m.png", png(1024, 1024), "image/png"))])
    call = images.subject_from_request(body)
    assert (call.kind, call.request.input_tokens) == ("images", TEXT + 194 + 323 + 194)
    assert (call.request.max_tokens, call.request.choices, call.request.output_image) == (1056, 3, True)
    assert images.edit_image_tokens(body) == 194 + 323 + 194


def test_high_fidelity_and_unreadable_images_are_reserved_at_their_most() -> None:
    files = [("image", ("a.png", png(1024, 1024), "image/png")), ("image", ("b.gif", b"GIF89a....", "image/gif"))]
    low = images.subject_from_request(edit(fields(), files))
    assert low.request.input_tokens == TEXT + 194 + 581  # never 0 for an image whose size is unknown
    high = images.subject_from_request(edit(fields(input_fidelity="high"), files))
    assert high.request.input_tokens == TEXT + (194 + 4096) + images.MAX_INPUT_IMAGE_TOKENS


@pytest.mark.parametrize("model", ["gpt-image-2", "gpt-image-1-mini", "chatgpt-image-latest"])
def test_a_model_without_a_published_formula_reserves_each_image_at_the_most(model: str) -> None:
    body = edit(fields(model=model), [("image", ("a.png", png(64, 64), "image/png")),
                                      ("mask", ("m.png", png(64, 64), "image/png"))])
    assert images.edit_image_tokens(body) == 2 * images.MAX_INPUT_IMAGE_TOKENS


def test_dated_and_prefixed_gpt_image_1_5_use_the_formula() -> None:
    for model in ("gpt-image-1.5", "gpt-image-1-2025-04-23", "openai/gpt-image-1"):
        assert images.edit_image_tokens({"model": model, "image": [{"width": 1024, "height": 1024}]}) == 194


def test_a_json_edit_names_its_images_and_each_is_reserved_at_the_most() -> None:
    body = {"model": "gpt-image-1", "prompt": PROMPT, "images": [{"image_url": "https://x/a.png"}, {"file_id": "f"}],
            "mask": {"file_id": "m"}}
    assert images.subject_from_request(body).request.input_tokens == TEXT + 3 * 581


def test_a_generation_has_no_input_images() -> None:
    assert images.edit_image_tokens({"model": "gpt-image-1", "prompt": PROMPT}) == 0


def test_a_streamed_edit_is_a_stream_as_a_streamed_generation_is() -> None:
    call = images.subject_from_request(edit(fields(stream="true"), [("image", ("a.png", png(8, 8), "image/png"))]))
    assert call.request.stream is True


# --- the worst case ---------------------------------------------------------------------------------


def edit_call() -> Any:
    return images.subject_from_request(edit(fields(size="1024x1024", quality="low"),
                                            [("image", ("a.png", png(1024, 1024), "image/png"))]))


def test_the_worst_case_holds_the_input_images_as_input() -> None:
    usage = worst_case_usage(edit_call())
    assert (usage.input_tokens, usage.output_tokens, usage.output_image_tokens) == (TEXT + 194, 272, 272)


def test_the_worst_case_holds_input_images_at_the_input_image_rate() -> None:
    usage = worst_case_usage(edit_call())
    assert usage.input_image_tokens == 194
    assert PRICER.cost("openai", "gpt-image-1", usage) == pytest.approx((TEXT * 5 + 194 * 10 + 272 * 40) / 1e6)


def test_the_usage_settles_the_image_share_at_its_rate() -> None:
    response = {"usage": {"input_tokens": 230, "output_tokens": 272, "total_tokens": 502,
                          "input_tokens_details": {"text_tokens": 36, "image_tokens": 194}}}
    call = images.subject_from_request(edit(fields(), [("image", ("a.png", png(1024, 1024), "image/png"))]),
                                       response=response)
    assert call.usage == TokenUsage(input_tokens=230, output_tokens=272, input_image_tokens=194)


# --- routing ----------------------------------------------------------------------------------------


def test_edits_route_to_the_images_edge_and_variations_stay_unguarded() -> None:
    assert endpoints.path_api("/v1/images/edits") == endpoints.path_api("/v1/images/edits/") == "images"
    assert endpoints.guarded_path("POST", "/v1/images/edits")
    assert endpoints.route(endpoints.edges(), "/v1/images/edits") is endpoints.OPENAI_IMAGES
    assert endpoints.unguarded_spend("POST", "/v1/images/edits") is None
    assert "/images/edits" not in endpoints.UNGUARDED_SPEND
    assert endpoints.unguarded_spend("POST", "/v1/images/variations") == "/images/variations"
    assert not endpoints.guarded_path("POST", "/v1/images/variations")


def test_only_an_edit_sent_as_a_form_is_read_as_one() -> None:
    form = httpx2.Request("POST", "https://x/v1/images/edits", files={"image": ("a.png", b"1")})
    json_edit = httpx2.Request("POST", "https://x/v1/images/edits", json={"model": "gpt-image-1"})
    chat_form = httpx2.Request("POST", "https://x/v1/chat/completions", files={"image": ("a.png", b"1")})
    assert [endpoints.sends_form(r) for r in (form, json_edit, chat_form)] == [True, False, False]
