"""Budget rule edges a FinOps user hits: limits no store can keep, attribution values stores mangle,
and what a refusal names."""

from __future__ import annotations

import textwrap
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from policy_support import FakePricer, compile_text

from costwarden.adapters.ledger import open_ledger
from costwarden.adapters.ledger.memory import MemoryLedger
from costwarden.adapters.ledger.sqlite import SqliteLedger
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.subjects import LlmCall
from costwarden.errors import PolicyError

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def budget(params: str) -> PolicySet:
    doc = textwrap.dedent(f"""\
        apiVersion: costwarden.dev/v1
        kind: Policy
        metadata: {{name: p}}
        spec:
          subject: llm_call
          rules:
            - name: r
              budget: {params}
        """)
    return compile_text(doc, pricer=FakePricer())


def llm_call(**fields: object) -> LlmCall:
    return LlmCall(provider="anthropic", model="claude-sonnet-4-5", **fields)  # type: ignore[arg-type]


class TestLimit:
    # A limit that loads but that no ledger can hold denied every call at reserve time (the store
    # refused the hold: an enforced budget fails closed) — "1e12: effectively unlimited" included.
    @pytest.mark.parametrize("limit", ["1e12", ".inf", "1e10"])
    def test_a_limit_no_ledger_can_keep_is_a_load_error(self, limit: str) -> None:
        with pytest.raises(PolicyError) as info:
            budget(f"{{per: [user], limitUsd: {limit}, window: day}}")
        [diagnostic] = info.value.diagnostics
        assert "limitUsd" in str(diagnostic)

    def test_the_largest_limit_a_ledger_keeps_reserves(self) -> None:
        ps = budget("{per: [user], limitUsd: 9000000000, window: day}")
        decision = ps.evaluate(llm_call(user="alice", estimated_cost_usd=1.0), ledger=MemoryLedger(), now=NOW)
        assert MemoryLedger().reserve("r1", decision.holds, ttl_s=60, now=NOW).granted


class TestAttributionValues:
    def test_a_nul_in_a_user_is_encoded_so_every_store_keeps_the_key(self, tmp_path: object) -> None:
        """SQLite's JSON functions cut a text at NUL: a settle charged a truncated key and left
        the hold, so the user's spend vanished at the hold's TTL (a budget bypass)."""
        ps = budget("{per: [user], limitUsd: 10, window: day}")
        ledger = SqliteLedger(f"{tmp_path}/ledger.db")
        decision = ps.evaluate(llm_call(user="mallory\x00x", estimated_cost_usd=4.0), ledger=ledger, now=NOW)
        [hold] = decision.holds
        assert hold.key == "budget:p/r:user=mallory%00x:2026-11-30"
        assert ledger.reserve("r1", decision.holds, ttl_s=60, now=NOW).granted
        ledger.settle("r1", 3.0, now=NOW)
        later = NOW + timedelta(minutes=5)  # past the hold's TTL: only settled spend is left
        assert ledger.spent([hold.key], now=later) == [3.0]
        again = ps.evaluate(llm_call(user="mallory\x00x", estimated_cost_usd=8.0), ledger=ledger, now=later)
        assert [r.result for r in again.results] == ["fail"]
        ledger.close()

    def test_a_lone_surrogate_in_a_user_is_encoded_so_every_store_keeps_the_key(self, tmp_path: object) -> None:
        """JSON lets a request body's user id hold a lone surrogate; no store could encode the key
        (a raw UnicodeEncodeError out of SQLite, Redis and PostgreSQL)."""
        ps = budget("{per: [user], limitUsd: 10, window: day}")
        ledger = SqliteLedger(f"{tmp_path}/ledger.db")
        decision = ps.evaluate(llm_call(user="eve\ud800", estimated_cost_usd=4.0), ledger=ledger, now=NOW)
        [hold] = decision.holds
        assert hold.key == "budget:p/r:user=eve%uD800:2026-11-30"
        assert ledger.reserve("r1", decision.holds, ttl_s=60, now=NOW).granted
        ledger.settle("r1", 3.0, now=NOW)
        assert ledger.spent([hold.key], now=NOW) == [3.0]
        ledger.close()

    def test_a_user_called_like_an_encoding_does_not_share_the_bucket(self) -> None:
        ps = budget("{per: [user], limitUsd: 10, window: day}")
        ledger = MemoryLedger()
        for special, lookalike in (("a\x00", "a%00"), ("a\udc00", "a%uDC00")):
            [encoded] = ps.evaluate(llm_call(user=special, estimated_cost_usd=1.0), ledger=ledger, now=NOW).holds
            [text] = ps.evaluate(llm_call(user=lookalike, estimated_cost_usd=1.0), ledger=ledger, now=NOW).holds
            assert encoded.key != text.key


    def test_a_very_long_value_is_keyed_by_its_hash_so_postgresql_can_index_it(self, postgres_db: str) -> None:
        """PostgreSQL indexes at most 2704 bytes per key: a longer attribution value failed every
        reserve there (an enforced budget then denies every call of that user)."""
        ps = budget("{per: [user], limitUsd: 10, window: day}")
        long_user = "".join(f"{i:x}-" for i in range(1000))  # 3890 characters, incompressible enough
        with open_ledger(f"{postgres_db}?table_prefix=t{uuid.uuid4().hex[:8]}_&timeout=5") as ledger:
            decision = ps.evaluate(llm_call(user=long_user, estimated_cost_usd=4.0), ledger=ledger, now=NOW)
            [hold] = decision.holds
            assert ledger.reserve("r1", decision.holds, ttl_s=60, now=NOW).granted
            ledger.settle("r1", 3.0, now=NOW)
            assert ledger.spent([hold.key], now=NOW) == [3.0]
        [other] = ps.evaluate(llm_call(user=long_user + "x", estimated_cost_usd=1.0), ledger=MemoryLedger(),
                              now=NOW).holds
        assert hold.key != other.key
        assert len(hold.key) < 200

    def test_a_value_that_looks_like_a_hash_is_encoded_not_taken_for_one(self) -> None:
        ps = budget("{per: [user], limitUsd: 10, window: day}")
        long_user = "u" * 300
        [hashed] = ps.evaluate(llm_call(user=long_user, estimated_cost_usd=1.0), ledger=MemoryLedger(),
                               now=NOW).holds
        lookalike = hashed.key.split("user=", 1)[1].rsplit(":", 1)[0]
        [plain] = ps.evaluate(llm_call(user=lookalike, estimated_cost_usd=1.0), ledger=MemoryLedger(),
                              now=NOW).holds
        assert plain.key != hashed.key


class TestRefusalMessage:
    def test_names_the_whole_attribution_even_with_colons(self) -> None:
        ps = budget("{per: [user, team], limitUsd: 10, window: day}")
        ledger = MemoryLedger()
        ledger.add_spend("budget:p/r:user=tenant:42,team=ml:2026-11-30", 9.5)
        [result] = ps.evaluate(llm_call(user="tenant:42", team="ml", estimated_cost_usd=1.0),
                               ledger=ledger, now=NOW).results
        assert result.result == "fail"
        assert result.message == "spend $10.5000 would exceed the $10.00 day budget for user=tenant:42,team=ml"
