"""The stored form of a reservation's holds: what every store (and Redis' Lua) reads back."""

from __future__ import annotations

import json
import random

from costwarden.adapters.ledger import hold_specs
from costwarden.adapters.ledger.hold_specs import HoldSpec, dump_specs, load_specs

KEYS = ["budget:p/r:user=alice:2026-11-30", 'odd "quote" \\ back\n é ☃ \U0001f600', "", "x" * 300]


def reference_dump(specs: tuple[HoldSpec, ...]) -> str:
    """The format as first written: json.dumps of objects with the None fields left out."""
    out = []
    for s in specs:
        item: dict[str, object] = {"k": s.key, "a": s.amount, "w": list(s.window), "t": [repr(t) for t in s.alert_at]}
        optional = {"l": s.limit, "n": s.ends_ms, "e": s.keep_until_ms}
        item.update({name: value for name, value in optional.items() if value is not None})
        out.append(item)
    return json.dumps(out, separators=(",", ":"))


def random_specs(rng: random.Random) -> tuple[HoldSpec, ...]:
    return tuple(
        HoldSpec(
            rng.choice(KEYS),
            rng.randrange(10**12),
            rng.choice([None, 0, rng.randrange(10**9)]),
            tuple(rng.sample(KEYS, rng.randrange(3))),
            rng.choice([None, 1_764_500_000_000]),
            rng.choice([None, 1_764_600_000_000]),
            tuple(rng.sample([0.5, 0.8, 0.95, 1.0, 0.1 + 0.2], rng.randrange(3))),
        )
        for _ in range(rng.randrange(4))
    )


def test_dump_is_byte_for_byte_the_json_it_always_was_and_loads_back() -> None:
    rng = random.Random(7)
    for _ in range(500):
        specs = random_specs(rng)
        text = dump_specs(specs)
        assert text == reference_dump(specs)
        assert load_specs(text) == specs
        hold_specs._PARSED.clear()  # as another process reads it
        assert load_specs(text) == specs


def test_the_parsed_cache_stays_bounded() -> None:
    for i in range(hold_specs._PARSED_MAX + 10):
        dump_specs([HoldSpec(f"k{i}", i, None, (f"k{i}",), None, None, ())])
    assert len(hold_specs._PARSED) <= hold_specs._PARSED_MAX


def test_specs_convert_a_budget_window_once_and_only_the_amount_per_call() -> None:
    from datetime import UTC, datetime, timedelta

    from costwarden.engine.ledger import Hold

    ends = datetime(2026, 12, 1, tzinfo=UTC)
    key = "budget:p/r:user=alice:2026-11-30"
    first, second = (hold_specs.specs_from([Hold(key, a, 25.0, (key,), ends, (0.5,))])[0] for a in (0.25, 0.5))
    assert (first.amount, second.amount) == (250_000, 500_000)
    assert first.window is second.window  # converted once, shared by both
    assert (first.limit, first.ends_ms, first.alert_at) == (25_000_000, int(ends.timestamp() * 1000), (0.5,))
    rolled = hold_specs.specs_from([Hold(key, 0.25, 25.0, (key,), ends + timedelta(days=1), (0.5,))])[0]
    assert rolled.ends_ms == first.ends_ms + 86_400_000  # another window end is another conversion
    listed = hold_specs.specs_from([Hold(key, 0.25, 25.0, [key], ends, [0.5])])[0]  # type: ignore[arg-type]
    assert (listed.window, listed.alert_at) == ((key,), (0.5,))  # unhashable fields: converted, not memoised
    dumped = dump_specs((first,))
    assert load_specs(dumped) == (first,) and json.loads(dumped)[0]["a"] == 250_000
