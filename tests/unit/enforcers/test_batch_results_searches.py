"""ResultsTally: web searches in Message Batch results are summed and priced."""

from __future__ import annotations

import json

import pytest
from genai_prices import Usage, calc_price

from costwarden.adapters.pricing import GenaiPricer
from costwarden.enforcers.batch_results import ResultsTally
from costwarden.engine.subjects import TokenUsage

HAIKU = "claude-haiku-4-5-20251001"


def _line(custom_id: str, searches: int) -> bytes:
    usage = {"input_tokens": 1_000, "output_tokens": 200, "cache_creation_input_tokens": 0,
             "cache_read_input_tokens": 0, "server_tool_use": {"web_search_requests": searches}}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": HAIKU, "content": [],
               "usage": usage}
    return json.dumps({"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}).encode()


def test_batch_results_sum_and_price_web_searches() -> None:
    tally = ResultsTally()
    tally.add_line(_line("a", 5))
    tally.add_line(_line("b", 2))
    assert tally.usage().web_search_requests == 7
    cost, unpriced = tally.cost(GenaiPricer(), None)
    assert unpriced == 0
    context = {"processing": "batch"}  # genai-prices' own batch table for Claude Haiku 4.5
    tokens = float(calc_price(Usage(input_tokens=1_000, output_tokens=200), model_ref=HAIKU,
                              provider_id="anthropic", price_context=context).total_price)
    per_search = float(calc_price(Usage(web_searches=1), model_ref=HAIKU, provider_id="anthropic",
                                  price_context=context).total_price)
    assert per_search > 0
    assert cost == pytest.approx(2 * tokens + 7 * per_search, rel=1e-9)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_a_results_download_that_cannot_be_decoded_is_marked_so_not_raised(encoding: str) -> None:
    # a failure here would raise inside the application's read of its batch results
    from costwarden.enforcers.batch_results import JsonlTap

    lines: list[bytes] = []
    tap = JsonlTap(content_encoding=encoding, on_line=lines.append, on_end=lambda *a: None)
    chunk = b"\x00not compressed at all\xff" * 4
    assert tap.feed(chunk) == chunk  # the application still gets its bytes
    assert tap.undecodable and lines == []


def test_a_tally_sums_the_audio_and_image_shares_of_its_lines() -> None:
    """A batch's cost event carries every modality's tokens its lines used, not only text."""
    tally = ResultsTally()
    for images in (3, 4):
        tally.used.append(("gpt-image-1", TokenUsage(input_tokens=10, output_tokens=images * 100,
                                                     output_image_tokens=images * 100, input_audio_tokens=2)))
    total = tally.usage()
    assert (total.output_tokens, total.output_image_tokens, total.input_audio_tokens) == (700, 700, 4)
