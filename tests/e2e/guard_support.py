"""What the call-guard's end-to-end tests and benchmarks share beside the fake API: an in-memory
sink, a counting ledger, inline budget policies, and the load a concurrency proof runs."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from costwarden.enforcers.settler import flush_all


class ListSink:
    """Keeps every cost event in memory (thread-safe)."""

    def __init__(self) -> None:
        self._events: list[Any] = []
        self._lock = threading.Lock()

    @property
    def events(self) -> list[Any]:
        """The events so far, once every background settlement queued before now has run."""
        flush_all(10)
        return self._events

    def emit(self, event: Any) -> None:
        with self._lock:
            self._events.append(event)

    def close(self) -> None:
        pass


class CountingLedger:
    """Wraps a ledger and counts reserve / settle / release calls per reservation id."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._calls: list[tuple[str, str, Any]] = []

    @property
    def calls(self) -> list[tuple[str, str, Any]]:
        """The operations so far, once every background settlement queued before now has run."""
        flush_all(10)
        return self._calls

    def spent(self, keys: Any, *, now: Any) -> Any:
        return self.inner.spent(keys, now=now)

    def reserve(self, reservation_id: str, holds: Any, *, ttl_s: float, now: Any, **kw: Any) -> Any:
        self._calls.append(("reserve", reservation_id, tuple(holds)))
        return self.inner.reserve(reservation_id, holds, ttl_s=ttl_s, now=now, **kw)

    def settle(self, reservation_id: str, cost_usd: float, *, now: Any) -> Any:
        self._calls.append(("settle", reservation_id, cost_usd))
        return self.inner.settle(reservation_id, cost_usd, now=now)

    def release(self, reservation_id: str, *, now: Any) -> None:
        self._calls.append(("release", reservation_id, None))
        self.inner.release(reservation_id, now=now)

    def status(self, prefix: str = "budget:", *, now: Any = None) -> Any:
        return self.inner.status(prefix, now=now)

    def count(self, op: str) -> int:
        return sum(1 for name, _, _ in self.calls if name == op)

    def counts(self) -> tuple[int, int, int]:
        """How many reserve, settle and release calls were made so far, in that order."""
        return self.count("reserve"), self.count("settle"), self.count("release")


def compile_policies(text: str) -> Any:
    """Inline policy YAML compiled with the real genai-prices pricer."""
    from costwarden.adapters.pricing import GenaiPricer
    from costwarden.engine.compile import compile_documents
    from costwarden.engine.loader import load_text

    result = load_text(text, file="inline.yaml")
    return compile_documents(result.documents, pricer=GenaiPricer(), diagnostics=result.diagnostics)


def spent_today(ledger: Any, user: str, policy: str = "user-budget") -> float:
    """What ``user`` has spent today under :func:`budget_policy` ``policy``, once every guard's
    background settlements ran."""
    flush_all(10)
    now = datetime.now(UTC)
    return float(ledger.spent([f"budget:{policy}/cap:user={user}:{now:%Y-%m-%d}"], now=now)[0])


def budget_policy(limit_usd: float, *, name: str = "user-budget", per: str = "user", window: str = "day") -> str:
    return f"""
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {{name: {name}}}
spec:
  subject: llm_call
  enforcement: {{default: deny}}
  onError: deny
  rules:
    - name: cap
      budget: {{per: [{per}], limitUsd: {limit_usd}, window: {window}}}
"""


LOAD_PROMPT = "Summarise the following paragraph in one line. " * 8
"""~100 estimated input tokens: more than the 42 the fake server bills, so a call never costs more
than it reserved and the concurrency proof can hold the total under the limit exactly."""


@dataclass
class LoadResult:
    admitted: int = 0
    denied: int = 0
    failed: int = 0
    ledger_total: float = 0.0
    errors: list[str] = field(default_factory=list)
    """The proof budget's spend as this worker's ledger saw it at its end (the only view of memory://)."""


def run_load(
    server_url: str, ledger_url: str, events_path: str, policy_text: str, threads: int, calls: int, provider: str,
    background: bool = False,
) -> LoadResult:
    """Guarded calls from ``threads`` threads through the real SDK (a worker process of the proof);
    ``background``: the guard settles on its settler thread."""
    from concurrent.futures import ThreadPoolExecutor

    from costwarden.adapters.events.jsonl import JsonlSink
    from costwarden.adapters.ledger import open_ledger
    from costwarden.enforcers.callguard import CallGuard, attribution
    from costwarden.errors import BudgetExceeded

    ledger = open_ledger(ledger_url)
    sink = JsonlSink(events_path)
    guard = CallGuard(compile_policies(policy_text), ledger=ledger, sinks=[sink], settle_in_background=background)
    client = _load_client(provider, server_url, guard)
    result = LoadResult()
    lock = threading.Lock()

    def one() -> None:
        for _ in range(calls):
            try:
                with attribution(user="load", feature="proof"):
                    _load_call(provider, client)
                outcome = "admitted"
            except BudgetExceeded:
                outcome = "denied"
            except Exception as exc:
                outcome = "failed"
                result.errors.append(f"{type(exc).__name__}: {exc}")
            with lock:
                setattr(result, outcome, getattr(result, outcome) + 1)

    try:
        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(one) for _ in range(threads)]:
                future.result()
        if not guard.flush(60):
            result.errors.append("background settlements still queued after 60 s")
        result.ledger_total = proof_total(ledger)
    finally:
        client.close()
        guard.close()
        ledger.close()
    return result


def proof_total(ledger: Any) -> float:
    """Today's spend of user ``load`` under the ``proof-budget`` policy."""
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return float(ledger.spent([f"budget:proof-budget/cap:user=load:{now:%Y-%m-%d}"], now=now)[0])


def _load_client(provider: str, server_url: str, guard: Any) -> Any:
    if provider == "anthropic":
        import anthropic

        return anthropic.Anthropic(base_url=server_url, api_key="test", middleware=[guard], max_retries=0)
    import openai

    from costwarden.enforcers.openai_guard import openai_http_client

    return openai.OpenAI(base_url=server_url + "/v1", api_key="test", max_retries=0,
                         http_client=openai_http_client(guard))


def _load_call(provider: str, client: Any) -> None:
    messages = [{"role": "user", "content": LOAD_PROMPT}]
    if provider == "anthropic":
        client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=messages)
    else:
        client.chat.completions.create(model="gpt-4.1-mini", max_tokens=50, messages=messages)


def calls_holding(marker: str) -> list[Any]:
    """Every live ``GuardedCall`` whose body holds ``marker``, after a collection: what a guard (or
    its settler) still keeps of a call, and of its prompt."""
    import gc

    from costwarden.enforcers.guarded_call import GuardedCall

    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, GuardedCall) and marker in str(o.body)]
