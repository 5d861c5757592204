"""Judge one LLM request with the built-in library before sending it, and apply the fixes.

Run: python examples/python/evaluate_call.py
"""

from __future__ import annotations

import json

import costwarden
from costwarden.adapters.anthropic import subject_from_request
from costwarden.enforcers.fixes import fix_until_clean

request = {
    "model": "claude-opus-4-5",
    "max_tokens": 8192,
    "messages": [{"role": "user", "content": "Classify this ticket: 'I was charged twice.'"}],
}


def main() -> int:
    policies = costwarden.load_policies()
    call = subject_from_request(request, feature="classify", user="u-123", team="support")
    decision = policies.evaluate(call, surface="runtime")
    print(f"verdict: {decision.verdict}")
    for result in decision.violations:
        fix = f" -> fix: {result.fix.description}" if result.fix else ""
        print(f"  {result.policy}/{result.rule}: {result.message}{fix}")
    outcome = fix_until_clean(
        request,
        lambda body: policies.evaluate(
            subject_from_request(body, feature="classify", user="u-123", team="support"), surface="runtime"
        ),
        target="request",
    )
    shown = {k: v for k, v in outcome.document.items() if k != "messages"}
    print(f"after {len(outcome.applied)} fixes: {json.dumps(shown)} -> {outcome.decision.verdict}")
    return 0 if outcome.decision.allowed else 1


if __name__ == "__main__":
    raise SystemExit(main())
