"""Policies compiled from inline YAML and a fake pricer, for tests (the fixtures in ``conftest.py``
hand them out; tests that need them outside a fixture import them from here)."""

from __future__ import annotations

from collections.abc import Callable

from costwarden.engine.compile import compile_documents
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.loader import load_text
from costwarden.engine.subjects import TokenUsage
from costwarden.errors import PricingError

CompilePolicies = Callable[..., PolicySet]


class FakePricer:
    """Prices per million tokens by model family; unknown models raise, as the real one does.

    ``calls`` counts lookups so tests can see whether the engine priced anything.
    """

    PRICES = {  # family -> (input, output) USD per million tokens
        "haiku": (1.0, 5.0),
        "sonnet": (3.0, 15.0),
        "opus": (15.0, 75.0),
        "gpt-4.1-mini": (0.4, 1.6),
        "gpt-4.1": (2.0, 8.0),
    }

    def __init__(self) -> None:
        self.calls = 0

    def rates(self, model: str) -> tuple[float, float]:
        for family, rates in self.PRICES.items():
            if family in model:
                return rates
        raise PricingError(f"no price for model {model!r}")

    def cost(self, provider: str, model: str, usage: TokenUsage, *, batch: bool = False) -> float:
        self.calls += 1
        inp, out = self.rates(model)
        total = (
            usage.input_tokens * inp
            + usage.output_tokens * out
            + usage.cache_read_tokens * inp * 0.1
            + usage.cache_write_tokens * inp * 1.25
        ) / 1e6
        return total * 0.5 if batch else total


def compile_text(*texts: str, pricer: object = None) -> PolicySet:
    """Load YAML documents (joined as one stream) and compile them; raises PolicyError."""
    result = load_text("\n---\n".join(texts), file="inline.yaml")
    return compile_documents(result.documents, pricer=pricer, diagnostics=result.diagnostics)  # type: ignore[arg-type]


REQUIRE_TEAM = """\
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: p}
spec:
  subject: resource
  rules:
    - name: team
      requireTags: {keys: [team]}
"""
"""A one-rule policy ``p`` (a ``team`` tag on resources), for tests about what surrounds a policy."""


def exemption_of_p(expires: str, name: str = "ex") -> str:
    """An exemption of policy ``p`` (:data:`REQUIRE_TEAM`); ``expires`` is on its line 6, its value
    at column 12."""
    return (
        f"apiVersion: costwarden.dev/v1\nkind: Exemption\nmetadata: {{name: {name}}}\n"
        f"spec:\n  policies: [{{policy: p}}]\n  expires: {expires}\n  owner: finops@example.com\n  reason: migration\n"
    )
