"""A batch's creation record, carried in a ledger key: what survives the round trip and what a long
record gives up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from costwarden.adapters.ledger import open_ledger
from costwarden.enforcers.batch_record import (
    MAX_KEY_CHARS,
    RECORD_PREFIX,
    BatchRecord,
    parse_record,
    record_hold,
    record_key,
    recorded,
)

NOW = datetime(2026, 11, 30, 15, 4, 5, 123456, tzinfo=UTC)
FULL = BatchRecord(
    feature="search & rank",
    user="ü-123/=x",
    team=None,
    tags={"env": "prod", "cost-center": "42%"},
    model_requested="claude-sonnet-4-6",
    model="mixed",
    estimate=0.123456789,
    rewrites=("/requests/0/params: clamp max_tokens to 1024", "/requests/1/params: add cache_control"),
    started_at=NOW,
)


def _text(key: str, batch_id: str) -> str:
    head = f"{RECORD_PREFIX}{batch_id}:"
    assert key.startswith(head)
    return key[len(head):]


def test_a_record_survives_the_round_trip_through_its_key() -> None:
    key = record_key("msgbatch_01", FULL)
    assert key is not None and key.isascii() and "{" not in key and "*" not in key
    assert parse_record(_text(key, "msgbatch_01")) == FULL


def test_a_record_without_optional_parts_round_trips() -> None:
    bare = BatchRecord(None, None, None, model_requested="claude-haiku-4-5", model="claude-haiku-4-5")
    key = record_key("b", bare)
    assert key is not None and parse_record(_text(key, "b")) == bare


def test_a_long_record_drops_rewrites_then_tags_and_says_so() -> None:
    many = BatchRecord("f", "u", "t", {"env": "prod"}, "m", "m", 1.0, tuple(f"rewrite {i} " * 5 for i in range(100)))
    key = record_key("b", many)
    assert key is not None and len(key) <= MAX_KEY_CHARS
    got = parse_record(_text(key, "b"))
    assert got is not None and got.rewrites == () and got.tags == {"env": "prod"} and got.user == "u"
    assert "partial=1" in key

    tagged = BatchRecord("f", "u", "t", {f"t{i}": "x" * 40 for i in range(40)}, "m", "m")
    key = record_key("b", tagged)
    assert key is not None and len(key) <= MAX_KEY_CHARS
    got = parse_record(_text(key, "b"))
    assert got is not None and got.tags == {} and (got.feature, got.user, got.team) == ("f", "u", "t")


def test_a_record_too_long_even_without_tags_is_not_written() -> None:
    huge = BatchRecord("f" * MAX_KEY_CHARS, "u", "t", model_requested="m", model="m")
    assert record_key("b", huge) is None
    assert record_hold("b", huge, NOW, 60.0) is None


@pytest.mark.parametrize("text", ["", "feature=x", "model=m&estimate=lots", "model=m&started_at=yesterday", "a&&b"])
def test_text_that_is_not_a_record_reads_as_none(text: str) -> None:
    assert parse_record(text) is None


@pytest.mark.parametrize("url", ["memory://", "sqlite:///{tmp}/ledger.db"])
def test_a_reservation_with_the_record_hold_can_be_read_back_by_batch_id(url: str, tmp_path: object) -> None:
    with open_ledger(url.format(tmp=tmp_path)) as ledger:
        hold = record_hold("msgbatch_A", FULL, NOW, 30 * 86_400.0)
        other = record_hold("msgbatch_a", BatchRecord("x", None, None, model="m", model_requested="m"), NOW, 60.0)
        assert hold is not None and other is not None and hold.amount_usd == 0.0 and not hold.check
        assert ledger.reserve("cw-batch-msgbatch_A", [hold], ttl_s=60.0, now=NOW).granted
        assert ledger.reserve("cw-batch-msgbatch_a", [other], ttl_s=60.0, now=NOW).granted
        assert recorded(ledger, "msgbatch_A", NOW) == FULL  # not its lower-case neighbour
        ledger.settle("cw-batch-msgbatch_A", 0.5, now=NOW)
        assert recorded(ledger, "msgbatch_A", NOW + timedelta(days=29)) == FULL  # outlives the hold
        assert recorded(ledger, "msgbatch_A", NOW + timedelta(days=31)) is None
        assert recorded(ledger, "msgbatch_B", NOW) is None
