"""An exemption waives a budget on the call path too: the call-guard evaluates with
``reserving=True`` (the budget leaves its limit check to the ledger's reservation), so an
exempted subject's holds must not be checked against the limit there either."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from policy_support import FakePricer, compile_text

from costwarden.adapters import anthropic as anthropic_adapter
from costwarden.adapters.ledger.memory import MemoryLedger
from costwarden.adapters.ledger.sqlite import SqliteLedger
from costwarden.enforcers.attribution import attribution
from costwarden.enforcers.callguard import CallGuard
from costwarden.enforcers.guarded_call import ProviderEdge
from costwarden.engine.ledger import Hold
from costwarden.engine.subjects import LlmCall, LlmRequest
from costwarden.errors import BudgetExceeded

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
POLICY = """
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: user-budget}
spec:
  subject: llm_call
  enforcement: {default: deny}
  rules:
    - name: cap
      budget: {per: [user], limitUsd: 1, window: day}
"""
EXEMPTION = """
apiVersion: costwarden.dev/v1
kind: Exemption
metadata: {name: research-runs}
spec:
  policies: [{policy: user-budget}]
  match: {names: [research]}
  expires: 2027-01-31
  owner: finops@example.com
  reason: quarter-end evaluation runs
"""
KEY = f"budget:user-budget/cap:user=rich:{NOW:%Y-%m-%d}"
EDGE = ProviderEdge("anthropic", anthropic_adapter.subject_from_request, anthropic_adapter.usage_from_response)
BODY = {"model": "claude-haiku-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "Hello there"}]}


def _spend(ledger: MemoryLedger | SqliteLedger, amount: float) -> None:
    ledger.reserve("old", [Hold(KEY, amount, 1.0)], ttl_s=60, now=NOW)
    ledger.settle("old", amount, now=NOW)


@pytest.mark.parametrize("reserving", [True, False])
def test_an_exempted_call_over_budget_reserves(reserving: bool, tmp_path: object) -> None:
    ps = compile_text(POLICY, EXEMPTION, pricer=FakePricer())
    ledger = SqliteLedger(f"{tmp_path}/ledger.db")
    _spend(ledger, 0.999)
    subject = LlmCall(
        "anthropic",
        "claude-haiku-4-5",
        feature="research",
        user="rich",
        request=LlmRequest(max_tokens=1000),
        estimated_cost_usd=0.01,
    )
    d = ps.evaluate(subject, "runtime", now=NOW, ledger=ledger, reserving=reserving)
    assert d.allowed
    assert d.holds  # the exempted spend is still counted ...
    granted = ledger.reserve("exempted", d.holds, ttl_s=60, now=NOW)
    assert granted.granted  # ... but never refused: the exemption waives the limit
    assert ledger.spent([KEY], now=NOW)[0] == pytest.approx(1.009)


def test_an_exempted_call_is_not_refused_by_the_call_guard() -> None:
    ledger = MemoryLedger()
    _spend(ledger, 0.99999)
    policies = compile_text(POLICY, EXEMPTION, pricer=FakePricer())
    guard = CallGuard(policies, ledger=ledger, clock=lambda: NOW)
    with attribution(user="rich", feature="research"):
        call = guard.begin(EDGE, BODY, key="k")
    assert call.held
    assert ledger.spent([KEY], now=NOW)[0] > 1.0  # counted, over the limit, as the exemption allows
    with attribution(user="rich", feature="chat"), pytest.raises(BudgetExceeded):
        guard.begin(EDGE, BODY, key="k2")  # not exempted: refused
