"""Budget windows as keys: calendar windows in the budget's zone, rolling windows as UTC hours."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costwarden.engine.budget import WINDOW_PATTERN, current_window, window_end, window_keys, window_start, zone

TOKYO = zone("Asia/Tokyo")  # UTC+9, no DST
LOS_ANGELES = zone("America/Los_Angeles")
BERLIN = zone("Europe/Berlin")
KOLKATA = zone("Asia/Kolkata")  # UTC+5:30


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


class TestZone:
    def test_utc_by_any_case(self) -> None:
        assert zone("UTC") is UTC
        assert zone("utc") is UTC

    def test_iana(self) -> None:
        assert utc(2026, 1, 1).astimezone(zone("Europe/Berlin")).utcoffset() == timedelta(hours=1)

    # "Europe" and "America" are folders of the zone database: ZoneInfo raises IsADirectoryError
    @pytest.mark.parametrize("name", ["Mars/Olympus", "", "../etc/passwd", "Europe", "America", "x" * 300])
    def test_unknown(self, name: str) -> None:
        with pytest.raises(ValueError, match="unknown time zone"):
            zone(name)


class TestCalendarWindows:
    @pytest.mark.parametrize(
        ("now", "tz", "day", "week", "month"),
        [
            # 23:30 UTC on Nov 30 is already Dec 1 in Tokyo
            (utc(2026, 11, 30, 23, 30), UTC, "2026-11-30", "2026-W49", "2026-11"),
            (utc(2026, 11, 30, 23, 30), TOKYO, "2026-12-01", "2026-W49", "2026-12"),
            # 03:00 UTC on Dec 1 is still Nov 30 in Los Angeles
            (utc(2026, 12, 1, 3, 0), UTC, "2026-12-01", "2026-W49", "2026-12"),
            (utc(2026, 12, 1, 3, 0), LOS_ANGELES, "2026-11-30", "2026-W49", "2026-11"),
            # Sunday evening in LA is Monday in UTC: a new ISO week
            (utc(2026, 12, 7, 2, 0), LOS_ANGELES, "2026-12-06", "2026-W49", "2026-12"),
            (utc(2026, 12, 7, 2, 0), UTC, "2026-12-07", "2026-W50", "2026-12"),
            # New Year in Tokyo: ISO week 53 of 2026 continues into 2027
            (utc(2026, 12, 31, 15, 30), TOKYO, "2027-01-01", "2026-W53", "2027-01"),
            (utc(2026, 12, 31, 14, 59), TOKYO, "2026-12-31", "2026-W53", "2026-12"),
        ],
    )
    def test_keys_are_local_periods(self, now: datetime, tz: object, day: str, week: str, month: str) -> None:
        assert window_keys("day", now, tz) == [day]  # type: ignore[arg-type]
        assert window_keys("week", now, tz) == [week]  # type: ignore[arg-type]
        assert window_keys("month", now, tz) == [month]  # type: ignore[arg-type]

    def test_same_instant_in_any_zone_gives_the_same_keys(self) -> None:
        instant = utc(2026, 11, 30, 23, 30)
        for shown in (instant, instant.astimezone(LOS_ANGELES), instant.astimezone(timezone(timedelta(hours=-3)))):
            assert window_keys("day", shown, TOKYO) == ["2026-12-01"]

    def test_day_end_is_next_local_midnight(self) -> None:
        end = window_end("day", utc(2026, 11, 30, 23, 30), TOKYO)
        assert end == utc(2026, 12, 1, 15, 0)  # midnight Dec 2 in Tokyo
        assert window_end("day", utc(2026, 11, 30, 10), UTC) == utc(2026, 12, 1)

    def test_day_end_across_a_dst_change(self) -> None:
        # Berlin springs forward on 2026-03-29: the day is 23 hours long
        end = window_end("day", utc(2026, 3, 29, 10), BERLIN)
        assert end == utc(2026, 3, 29, 22)
        # and falls back on 2026-10-25: 25 hours
        assert window_end("day", utc(2026, 10, 25, 10), BERLIN) == utc(2026, 10, 25, 23)

    def test_week_end_is_next_monday(self) -> None:
        end = window_end("week", utc(2026, 12, 7, 2, 0), LOS_ANGELES)  # Sunday evening in LA
        assert end == datetime(2026, 12, 7, 0, 0, tzinfo=LOS_ANGELES)
        assert window_end("week", utc(2026, 12, 7, 2, 0), UTC) == utc(2026, 12, 14)

    def test_month_end(self) -> None:
        assert window_end("month", utc(2026, 12, 31, 15, 30), TOKYO) == datetime(2027, 2, 1, tzinfo=TOKYO)
        assert window_end("month", utc(2026, 12, 15), UTC) == utc(2027, 1, 1)
        assert window_end("month", utc(2027, 1, 31, 12), UTC) == utc(2027, 2, 1)

    def test_now_is_inside_its_window(self) -> None:
        now = utc(2026, 11, 30, 23, 30)
        for window in ("day", "week", "month"):
            for tz in (UTC, TOKYO, LOS_ANGELES, BERLIN, KOLKATA):
                assert window_end(window, now, tz) > now


class TestRollingWindows:
    def test_three_hour_buckets_newest_last(self) -> None:
        assert window_keys("rolling:3h", utc(2026, 11, 30, 15, 42), UTC) == [
            "h2026-11-30T12",
            "h2026-11-30T13",
            "h2026-11-30T14",
            "h2026-11-30T15",
        ]

    def test_across_midnight(self) -> None:
        assert window_keys("rolling:3h", utc(2026, 12, 1, 1, 10), UTC) == [
            "h2026-11-30T22",
            "h2026-11-30T23",
            "h2026-12-01T00",
            "h2026-12-01T01",
        ]

    def test_buckets_are_utc_hours_whatever_the_zone(self) -> None:
        now = utc(2026, 11, 30, 15, 42)
        expected = window_keys("rolling:3h", now, UTC)
        assert window_keys("rolling:3h", now, TOKYO) == expected
        assert window_keys("rolling:3h", now.astimezone(KOLKATA), KOLKATA) == expected

    def test_lengths(self) -> None:
        now = utc(2026, 11, 30, 15, 42)
        assert window_keys("rolling:1h", now, UTC) == ["h2026-11-30T14", "h2026-11-30T15"]
        keys = window_keys("rolling:48h", now, UTC)
        assert len(keys) == 49
        assert len(set(keys)) == 49
        assert keys[0] == "h2026-11-28T15"
        assert keys == sorted(keys)

    def test_end_is_the_next_utc_hour(self) -> None:
        assert window_end("rolling:3h", utc(2026, 11, 30, 15, 42), UTC) == utc(2026, 11, 30, 16)

    def test_end_is_the_next_utc_hour_for_a_half_hour_zone(self) -> None:
        """The newest bucket is a UTC hour, so it ends on a UTC hour even when ``now`` is shown in
        a zone 5:30 off UTC."""
        now = utc(2026, 11, 30, 15, 42).astimezone(KOLKATA)
        assert window_end("rolling:3h", now, KOLKATA) == utc(2026, 11, 30, 16)

    def test_unknown_window(self) -> None:
        with pytest.raises(ValueError, match="unknown budget window"):
            window_keys("hour", utc(2026, 1, 1), UTC)


@pytest.mark.parametrize(
    ("window", "valid"),
    [
        ("day", True),
        ("week", True),
        ("month", True),
        ("rolling:1h", True),
        ("rolling:9999h", True),
        ("rolling:0h", False),
        ("rolling:10000h", False),
        ("rolling:3", False),
        ("rolling:3d", False),
        ("year", False),
        ("Day", False),
    ],
)
def test_window_pattern(window: str, valid: bool) -> None:
    assert bool(re.match(WINDOW_PATTERN, window)) is valid


class TestCurrentWindow:
    """``current_window`` caches a window's keys and end until it rolls over; for any time, in
    any order (clocks are injectable, so time can go backwards), it must give what
    ``window_keys`` and ``window_end`` give."""

    @given(
        window=st.sampled_from(["day", "week", "month", "rolling:1h", "rolling:24h", "rolling:3h"]),
        tz=st.sampled_from([UTC, TOKYO, LOS_ANGELES, BERLIN, KOLKATA]),
        minutes=st.lists(st.integers(min_value=-60 * 24 * 70, max_value=60 * 24 * 70), min_size=1, max_size=12),
    )
    @settings(max_examples=200, deadline=None)
    def test_equals_the_uncached_functions(self, window: str, tz: tzinfo, minutes: list[int]) -> None:
        base = utc(2026, 3, 29, 0, 30)  # the night Berlin moves its clocks forward
        for m in minutes:
            for now in (base + timedelta(minutes=m), base + timedelta(minutes=m, seconds=59)):
                keys, end = current_window(window, now, tz)
                assert keys == tuple(window_keys(window, now, tz))
                assert end == window_end(window, now, tz)

    @pytest.mark.parametrize("window", ["day", "week", "month", "rolling:6h"])
    def test_a_window_starts_where_the_previous_one_ends(self, window: str) -> None:
        now = utc(2026, 11, 30, 15, 7)
        for tz in (UTC, LOS_ANGELES, KOLKATA):
            start = window_start(window, now, tz)
            assert start <= now < window_end(window, now, tz)
            assert window_end(window, start - timedelta(microseconds=1), tz) == start
