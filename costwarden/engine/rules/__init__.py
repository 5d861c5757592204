"""The registry of rule kinds: YAML key → kind. Adding a rule kind adds one line here."""

from __future__ import annotations

from typing import Any

from costwarden.engine.rules import (
    allowed_models,
    budget,
    expr,
    max_hourly_cost,
    max_output_tokens,
    require_prompt_caching,
    require_tags,
    serving_config,
    spot_only,
)
from costwarden.engine.rules.base import RuleKind

RULE_KINDS: dict[str, RuleKind[Any]] = {
    kind.key: kind
    for kind in (
        require_tags.KIND,
        spot_only.KIND,
        allowed_models.KIND,
        require_prompt_caching.KIND,
        max_output_tokens.KIND,
        budget.KIND,
        serving_config.KIND,
        max_hourly_cost.KIND,
        expr.KIND,
    )
}

__all__ = ["RULE_KINDS"]
