"""Budget windows as keys: a window is named by the period it covers, never swept.

``window_keys("day", now, tz)`` → ``["2026-11-30"]``; a rolling window is the list of hourly
buckets it spans, newest last, so spend over it is the sum of those keys. ``rolling:<N>h`` reads
N+1 buckets, the current hour's and the N before it: every moment of the last N hours is in them,
so no N-hour span ever holds more than the limit (spend up to N+1 hours old may still count).
With only N buckets, a burst at 10:59 and another at 11:00 would each see an empty window.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WINDOW_PATTERN = r"^(day|week|month|rolling:[1-9][0-9]{0,3}h)$"
_ROLLING = re.compile(r"^rolling:(\d+)h$")


@cache
def zone(name: str) -> tzinfo:
    """A time zone by IANA name; raises ValueError for an unknown one."""
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a folder ("Europe"), a long name
        raise ValueError(f"unknown time zone {name!r}") from exc


def window_keys(window: str, now: datetime, tz: tzinfo) -> list[str]:
    """The ledger key suffixes that make up ``window`` at ``now`` (calendar windows in ``tz``)."""
    local = now.astimezone(tz)
    if window == "day":
        return [local.strftime("%Y-%m-%d")]
    if window == "week":
        year, week, _ = local.isocalendar()
        return [f"{year}-W{week:02d}"]
    if window == "month":
        return [local.strftime("%Y-%m")]
    match = _ROLLING.match(window)
    if not match:
        raise ValueError(f"unknown budget window {window!r}")
    hours = int(match.group(1))
    utc = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return [(utc - timedelta(hours=h)).strftime("h%Y-%m-%dT%H") for h in range(hours, -1, -1)]


def window_end(window: str, now: datetime, tz: tzinfo) -> datetime:
    """When the current window (or the newest rolling bucket) stops receiving spend."""
    local = now.astimezone(tz)
    start_of_day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "day":
        return start_of_day + timedelta(days=1)
    if window == "week":
        return start_of_day + timedelta(days=7 - local.weekday())
    if window == "month":
        first = start_of_day.replace(day=1)
        return (first + timedelta(days=32)).replace(day=1)
    utc = now.astimezone(UTC)  # hourly buckets are UTC hours, whatever the zone's offset
    return utc.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def window_start(window: str, now: datetime, tz: tzinfo) -> datetime:
    """When the current window (or the newest rolling bucket) started receiving spend."""
    local = now.astimezone(tz)
    start_of_day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "day":
        return start_of_day
    if window == "week":
        return start_of_day - timedelta(days=local.weekday())
    if window == "month":
        return start_of_day.replace(day=1)
    return now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


_CURRENT: dict[tuple[str, tzinfo], tuple[datetime, datetime, tuple[str, ...]]] = {}


def current_window(window: str, now: datetime, tz: tzinfo) -> tuple[tuple[str, ...], datetime]:
    """``window_keys`` and ``window_end`` at ``now``, worked out once per window (or rolling
    bucket) rather than per call: they change only when it rolls over. Any ``now``, earlier ones
    included, gets the keys of the window that contains it."""
    found = _CURRENT.get((window, tz))
    if found is not None and found[0] <= now < found[1]:
        return found[2], found[1]
    keys, end = tuple(window_keys(window, now, tz)), window_end(window, now, tz)
    if len(_CURRENT) < 1024:  # one entry per (window, zone) the policies name
        _CURRENT[(window, tz)] = (window_start(window, now, tz), end, keys)
    return keys, end


__all__ = ["WINDOW_PATTERN", "current_window", "window_end", "window_keys", "window_start", "zone"]
