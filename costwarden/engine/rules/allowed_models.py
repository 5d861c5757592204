"""``allowedModels``: the model (or its catalog tier) is allowed for the call's feature.

Allow-list entries are ``tier:<name>``, model globs, or ``*``. With ``onViolation: downgrade`` the
fix replaces the model with the most capable allowed tier below the requested one (the tier's
``downgradeTo`` model for the call's provider); without such a tier the call is denied. A model in
no catalog tier (a fine-tune such as ``ft:gpt-4o-mini:…``, a self-hosted model behind an
OpenAI-compatible endpoint) is downgraded only when its known price is above the target's for the
call; otherwise it is denied, since the target may not stand in for it or not be served there.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from costwarden.engine.catalog import Catalog, ModelGlobs, Tier
from costwarden.engine.decision import Fix, Outcome
from costwarden.engine.diagnostics import did_you_mean
from costwarden.engine.rules.base import (
    Check,
    CompileEnv,
    EvalContext,
    RuleCompileError,
    RuleKind,
    RuleParams,
    chat_downgradable,
    memo_outcome,
)
from costwarden.engine.subjects import LlmCall, Subject, TokenUsage


class InputTokens(RuleParams):
    below: int | None = Field(default=None, ge=1, description="applies to calls with fewer input tokens")
    atLeast: int | None = Field(default=None, ge=0, description="applies to calls with at least this many")


class AllowedModels(RuleParams):
    byFeature: dict[str, list[str]] = Field(default_factory=dict, description="feature -> allowed models")
    default: list[str] | None = Field(default=None, description="for other features; unset: any model")
    onViolation: Literal["downgrade", "deny"] = "downgrade"
    inputTokens: InputTokens | None = Field(default=None, description="only calls of this estimated size")


class _Allow:
    __slots__ = ("entries", "pattern", "tiers")

    def __init__(self, entries: list[str], catalog: Catalog, loc: tuple[str | int, ...]) -> None:
        self.entries = entries
        self.tiers: set[str] = set()
        globs: list[str] = []
        for i, entry in enumerate(entries):
            if entry.startswith("tier:"):
                name = entry[5:]
                if catalog.tier(name) is None:
                    raise RuleCompileError(
                        f"unknown model tier '{name}'",
                        (*loc, i),
                        code="unknown-tier",
                        hint=did_you_mean(name, [t.name for t in catalog.tiers], what="tiers in the catalog"),
                    )
                self.tiers.add(name)
            else:
                globs.append(entry)
        self.pattern = ModelGlobs(globs) if globs else None

    def allows(self, model: str, tier: Tier | None) -> bool:
        if tier is not None and tier.name in self.tiers:
            return True
        return self.pattern is not None and self.pattern.match(model)


def compile(params: AllowedModels, env: CompileEnv) -> Check:
    catalog = env.catalog
    by_feature = {f: _Allow(v, catalog, ("byFeature", f)) for f, v in params.byFeature.items()}
    default = _Allow(params.default, catalog, ("default",)) if params.default is not None else None
    downgrade = params.onViolation == "downgrade"
    size = params.inputTokens
    if size and size.below is not None and size.atLeast is not None and size.below <= size.atLeast:
        raise RuleCompileError(
            f"inputTokens selects no call: below {size.below} is not above atLeast {size.atLeast}",
            ("inputTokens", "below"),
            code="invalid-value",
            hint="below must be greater than atLeast",
        )

    memo: dict[Any, Outcome] = {}

    def check(subject: Subject, ctx: EvalContext) -> Outcome:
        assert isinstance(subject, LlmCall)
        tokens = subject.request.input_tokens
        if size and (
            (size.below is not None and tokens >= size.below) or (size.atLeast is not None and tokens < size.atLeast)
        ):
            return memo_outcome(
                memo, ("range", tokens), lambda: Outcome("skip", f"~{tokens} input tokens is outside this rule's range")
            )
        feature = subject.feature or ""
        allow = by_feature.get(feature, default)
        if allow is None:
            return memo_outcome(
                memo, ("skip", feature), lambda: Outcome("skip", f"no model list for feature '{feature}'")
            )
        tier = catalog.tier_of(subject.model)
        if allow.allows(subject.model, tier):
            return memo_outcome(
                memo,
                ("pass", feature, subject.model),
                lambda: Outcome("pass", f"{subject.model} is allowed for feature '{feature}'", path="model"),
            )
        key = (
            "fail",
            feature,
            subject.model,
            subject.provider,
            tokens,
            subject.request.max_tokens,
            subject.request.batch,
            chat_downgradable(subject),
            subject.usage,
        )  # everything the failure (and its saving) depends on
        return memo_outcome(memo, key, lambda: _failure(subject, feature, tier, allow, downgrade, catalog, ctx))

    return check


def _failure(
    subject: LlmCall,
    feature: str,
    tier: Tier | None,
    allow: _Allow,
    downgrade: bool,
    catalog: Catalog,
    ctx: EvalContext,
) -> Outcome:
    tier_text = f" (tier {tier.name})" if tier else " (in no catalog tier)"
    message = (
        f"model {subject.model}{tier_text} is not allowed for feature '{feature}'; allowed: {', '.join(allow.entries)}"
    )
    # embeddings and legacy completions are never swapped for a tier's model, a chat model
    target = _downgrade_target(subject, tier, allow, catalog) if downgrade and chat_downgradable(subject) else None
    saving = _saving(subject, target, ctx) if target is not None else None
    if target is not None and tier is None and saving is None:
        # A model in no tier may be a fine-tune or a self-hosted model that the target cannot stand
        # in for, or that the endpoint does not serve: it is only downgraded when it is known to
        # cost more than the target.
        message += (f"; it is not downgraded to {target}, which it is not known to cost more than "
                    "(give it a tier in a ModelCatalog document)")
        target = None
    if target is None:
        return Outcome("fail", message, path="model", expected=allow.entries, actual=subject.model)
    fix = Fix(f"downgrade model to {target}", ({"op": "replace", "path": "/model", "value": target},), "request")
    return Outcome(
        "fail",
        message,
        path="model",
        expected=allow.entries,
        actual=subject.model,
        fix=fix,
        savings_usd_per_call=saving,
    )


def _downgrade_target(subject: LlmCall, tier: Tier | None, allow: _Allow, catalog: Catalog) -> str | None:
    ceiling = tier.rank if tier is not None else len(catalog.tiers)
    candidates = [
        t for t in catalog.tiers if t.rank < ceiling and t.name in allow.tiers and subject.provider in t.downgrade_to
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda t: t.rank).downgrade_to[subject.provider]


def _saving(subject: LlmCall, target: str, ctx: EvalContext) -> float | None:
    if ctx.pricer is None:
        return None
    request = subject.request
    usage = subject.usage or TokenUsage(
        input_tokens=request.input_tokens, output_tokens=(request.max_tokens or 0) * request.choices
    )
    try:
        before = ctx.pricer.cost(subject.provider, subject.model, usage, batch=subject.request.batch)
        after = ctx.pricer.cost(subject.provider, target, usage, batch=subject.request.batch)
    except Exception:  # a saving is advisory: no price means no saving shown, not an error
        return None
    return round(before - after, 6) if before > after else None


KIND = RuleKind(
    "allowedModels",
    AllowedModels,
    ("llm_call",),
    compile,
    "model or its tier allowed for the call's feature; fix: downgrade",
)
