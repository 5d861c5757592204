"""The stored form of a reservation's holds: what every store (and Redis' Lua) reads back."""

from __future__ import annotations

import json
import random

from costwarden.adapters.ledger import store
from costwarden.adapters.ledger.store import HoldSpec, dump_specs, load_specs

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
        store._PARSED.clear()  # as another process reads it
        assert load_specs(text) == specs


def test_the_parsed_cache_stays_bounded() -> None:
    for i in range(store._PARSED_MAX + 10):
        dump_specs([HoldSpec(f"k{i}", i, None, (f"k{i}",), None, None, ())])
    assert len(store._PARSED) <= store._PARSED_MAX
