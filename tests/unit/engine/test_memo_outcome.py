"""``rules.base.memo_outcome`` under concurrent first use of a key.

The evaluator caches the results of static outcomes by ``id()`` (``engine/evaluate.py``,
``engine/plan.py``), which is only sound while every static outcome it has seen stays alive:
a memo entry must never be replaced, or the replaced outcome is freed and its id can be
reused by another outcome, which then gets the cached result of the first.
"""

from __future__ import annotations

from typing import Any

from costwarden.engine.decision import Outcome
from costwarden.engine.rules.base import memo_outcome


def test_a_key_built_twice_at_once_keeps_the_first_outcome() -> None:
    memo: dict[Any, Outcome] = {}
    inner: list[Outcome] = []

    def build_racing() -> Outcome:
        # another thread memoises the same key while this one is still building
        inner.append(memo_outcome(memo, "k", lambda: Outcome("fail", "built by the other thread")))
        return Outcome("fail", "built by this thread")

    outer = memo_outcome(memo, "k", build_racing)
    (other,) = inner
    assert other.static and outer.static
    assert outer is other  # both callers were handed the one outcome the memo keeps
    assert memo["k"] is other


def test_memo_outcome_returns_the_memoised_outcome() -> None:
    memo: dict[Any, Outcome] = {}
    first = memo_outcome(memo, 1, lambda: Outcome("pass", "a"))
    assert memo_outcome(memo, 1, lambda: Outcome("fail", "b")) is first
