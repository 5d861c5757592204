"""Guard an application's LLM calls: the call-guard in the real ``anthropic`` and ``openai`` SDKs,
with the built-in policy library, a SQLite budget ledger and a JSON Lines cost-event file.

Run: python examples/python/guard_calls.py [--live]

Offline (the default), the SDKs send their requests to a stand-in for the provider APIs inside
this process: an HTTP transport that answers like the Messages and Chat Completions APIs, usage
included. Everything else is what an application runs. With ``--live`` the same calls go to the
real APIs (``ANTHROPIC_API_KEY`` and ``OPENAI_API_KEY``; they cost a fraction of a cent).

What it shows:
1. An Opus request for a classification feature is rewritten before it leaves: the model becomes
   the simple tier and ``max_tokens`` is clamped (``allowed-model-tiers``, ``cap-output-tokens``).
2. A streamed OpenAI chat is billed from its usage chunk. The guard asks for that chunk, and the
   application never sees it.
3. A call whose worst case does not fit the user's trial budget is refused before any request is
   sent (``BudgetExceeded``).
4. Spend against every budget, from the ledger, and the cost events, from the file.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai

import costwarden
from costwarden.adapters.events.jsonl import JsonlSink
from costwarden.adapters.ledger.status import budget_status

TRIAL_BUDGET = """
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: trial-user-budget, severity: high}
spec:
  subject: llm_call
  match: {selector: {matchLabels: {plan: trial}}}
  enforcement: {default: deny}
  onError: deny
  rules:
    - name: daily-cap
      budget: {per: [user], limitUsd: 0.02, window: day, alertAt: [0.5]}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live", action="store_true", help="call the real APIs (needs API keys)")
    live = parser.parse_args().live
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "trial-budget.yaml").write_text(TRIAL_BUDGET)
        policies = costwarden.load_policies(costwarden.builtin_library_path(), work / "trial-budget.yaml")
        ledger = costwarden.open_ledger(f"sqlite:///{work}/spend.db")
        guard = costwarden.CallGuard(policies, ledger=ledger, sinks=[JsonlSink(work / "events.jsonl")])
        stand_in = StandIn()
        claude = anthropic.Anthropic(middleware=[guard], **stand_in.options("anthropic", live))
        gpt = costwarden.guard_openai(openai.OpenAI(**stand_in.options("openai", live)), guard)

        with costwarden.attribution(feature="classify", user="u-123", team="support", plan="trial"):
            reply = claude.messages.create(
                model="claude-opus-4-6", max_tokens=8192,
                messages=[{"role": "user", "content": "Classify this ticket: 'I was charged twice.'"}],
            )
            print(f"1. asked for claude-opus-4-6, max_tokens 8192; served by {reply.model}")

        with costwarden.attribution(feature="support-chat", user="u-123", team="support", plan="trial"):
            stream = gpt.chat.completions.create(
                model="gpt-4.1-mini", max_tokens=200, stream=True,
                messages=[{"role": "user", "content": "How do I reset my password?"}],
            )
            chunks = list(stream)
            text = "".join(c.choices[0].delta.content or "" for c in chunks)
            print(f"2. streamed {len(chunks)} chunks, every one with a choice: {text[:40]!r}...")

        with costwarden.attribution(feature="report", user="u-123", team="support", plan="trial"):
            sent = stand_in.requests
            try:
                claude.messages.create(
                    model="claude-sonnet-4-6", max_tokens=4000,
                    messages=[{"role": "user", "content": "Write the quarterly support report."}],
                )
            except costwarden.BudgetExceeded as exc:
                counted = "" if live else f", {stand_in.requests - sent} requests sent"  # live: nothing to count
                print(f"3. refused{counted}: {exc}")

        guard.close()
        print("4. spend by budget window (settled + held, of the limit):")
        for row in budget_status(ledger):
            limit = f"${row.limit_usd:,.2f}" if row.limit_usd else "no limit"
            print(f"   {row.key}: ${row.spent_usd:.6f} + ${row.held_usd:.6f} of {limit}")
        ledger.close()
        print("   cost events:")
        for line in (work / "events.jsonl").read_text().splitlines():
            e = json.loads(line)
            rewrites = "; ".join(e["rewrites"]) or "none"
            print(f"   {e['provider']}/{e['model']} {e['outcome']}: ${e['cost_usd']:.6f} "
                  f"({e['usage_source']} usage), rewrites: {rewrites}")
    return 0


class StandIn:
    """Answers like the Messages and Chat Completions APIs, counting the requests it gets."""

    def __init__(self) -> None:
        self.requests = 0

    def options(self, provider: str, live: bool) -> dict[str, Any]:
        """Client options: the stand-in's transport offline, the SDK's defaults live."""
        if live:
            return {}
        base = "https://api.anthropic.com" if provider == "anthropic" else "https://api.openai.com/v1"
        client = httpx2.Client(transport=httpx2.MockTransport(self.answer))
        return {"api_key": "offline", "base_url": base, "http_client": client}

    def answer(self, request: httpx2.Request) -> httpx2.Response:
        self.requests += 1
        body = json.loads(request.content)
        tokens = max(1, len(json.dumps(body.get("messages", []))) // 4)
        if request.url.path.endswith("/v1/messages"):
            return httpx2.Response(200, json={
                "id": f"msg_{self.requests}", "type": "message", "role": "assistant", "model": body["model"],
                "content": [{"type": "text", "text": "billing"}], "stop_reason": "end_turn",
                "usage": {"input_tokens": tokens, "output_tokens": 3},
            })
        return httpx2.Response(200, headers={"content-type": "text/event-stream"},
                               content=b"".join(self._chat_stream(body, tokens)))

    @staticmethod
    def _chat_stream(body: dict[str, Any], tokens: int) -> Iterator[bytes]:
        words = ["Open ", "Settings ", "and ", "choose ", "Reset ", "password."]
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}
        for word in words:
            chunk = {**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": tokens, "completion_tokens": len(words), "total_tokens": tokens + len(words)}
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode()
        yield b"data: [DONE]\n\n"


if __name__ == "__main__":
    raise SystemExit(main())
