"""``requirePromptCaching``: long stable prefixes carry a cache breakpoint, and get cached.

The threshold is ``max(minTokens, the model's minimum cacheable prefix)`` — below the model's
minimum Anthropic caches nothing and raises no error, so a lower threshold would demand
breakpoints that do nothing. Before the call the rule checks for a breakpoint (fix: add
``cache_control`` on the block that ends the longest stable prefix); after the call it flags a
prompt above the minimum whose usage shows neither a cache write nor a read — when the call set a
breakpoint (it asked for caching and got none: the prefix up to the breakpoint is below the
model's minimum, or the breakpoint is misplaced) or had a stable prefix at the threshold (the
call the rule asked to cache). A long conversation with neither has nothing to cache.
OpenAI caches automatically from 1,024 tokens, so calls to it are skipped.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from costwarden.engine import patch
from costwarden.engine.catalog import Catalog
from costwarden.engine.decision import Fix, Outcome
from costwarden.engine.rules.base import MEMO_LIMIT, Check, CompileEnv, EvalContext, RuleKind, RuleParams, memo_outcome
from costwarden.engine.subjects import LlmCall, Subject, TokenUsage

EXPLICIT_CACHING_PROVIDERS = frozenset({"anthropic", "bedrock", "vertex_ai"})


class RequirePromptCaching(RuleParams):
    minTokens: int = Field(default=1000, ge=0, description="prefixes at or above this size must be cached")
    fix: bool = Field(default=True, description="offer a fix that adds a cache breakpoint")
    ttl: Literal["5m", "1h"] = "5m"
    checkOutcome: bool = Field(default=True, description="after the call, flag prompts that were not cached")


def compile(params: RequirePromptCaching, env: CompileEnv) -> Check:
    catalog = env.catalog

    memo: dict[Any, Outcome] = {}
    savings: dict[Any, Any] = {}

    def check(subject: Subject, ctx: EvalContext) -> Outcome:
        assert isinstance(subject, LlmCall)
        if subject.provider not in EXPLICIT_CACHING_PROVIDERS:
            return memo_outcome(
                memo, subject.provider, lambda: Outcome("skip", f"{subject.provider} caches prompts automatically")
            )
        threshold = _threshold(params.minTokens, subject.model, catalog)
        if subject.phase == "post" and subject.usage is not None:
            return (
                _outcome_check(subject, subject.usage, threshold)
                if params.checkOutcome
                else Outcome("skip", "outcome check disabled")
            )
        prefix = subject.request.cacheable_prefix_tokens
        if prefix < threshold:
            return Outcome(
                "pass",
                f"stable prefix ~{prefix} tokens is below the {threshold}-token threshold",
                path="request.cacheable_prefix_tokens",
                expected=threshold,
                actual=prefix,
            )
        if subject.request.cache_breakpoints > 0:
            return Outcome(
                "pass",
                f"~{prefix}-token prefix has {subject.request.cache_breakpoints} cache breakpoint(s)",
                path="request.cache_breakpoints",
            )
        fix = _fix(subject, params.ttl) if params.fix else None
        return Outcome(
            "fail",
            f"~{prefix}-token stable prefix has no cache breakpoint (threshold {threshold})",
            path=subject.request.prefix_pointer or "request",
            expected="cache_control",
            actual=None,
            fix=fix,
            savings_usd_per_call=_saving(subject, prefix, ctx, savings),
        )

    return check


def _threshold(min_tokens: int, model: str, catalog: Catalog) -> int:
    model_min = catalog.min_cacheable_tokens(model)
    return max(min_tokens, model_min or 0, 1)  # an empty prefix is never one to cache


def _outcome_check(subject: LlmCall, usage: TokenUsage, threshold: int) -> Outcome:
    total = usage.total_input_tokens
    if total < threshold:
        return Outcome("pass", f"{total}-token prompt is below the {threshold}-token threshold", path="usage")
    request = subject.request
    if request.cache_breakpoints == 0 and request.cacheable_prefix_tokens < threshold:
        # a long conversation without a long stable prefix (tools + system): nothing the rule asks
        # to cache, so nothing that should have been cached
        return Outcome(
            "pass",
            f"stable prefix ~{request.cacheable_prefix_tokens} tokens is below the {threshold}-token threshold "
            "and no breakpoint was set",
            path="request.cacheable_prefix_tokens",
        )
    if usage.cache_read_tokens or usage.cache_write_tokens:
        return Outcome(
            "pass", f"cache read {usage.cache_read_tokens}, written {usage.cache_write_tokens} tokens", path="usage"
        )
    return Outcome(
        "fail",
        f"{total}-token prompt (threshold {threshold}) was neither written to nor read from the cache",
        path="usage",
        expected="cache read or write > 0",
        actual={"cache_read_tokens": 0, "cache_write_tokens": 0},
    )


def _fix(subject: LlmCall, ttl: str) -> Fix | None:
    pointer = subject.request.prefix_pointer
    body = subject.body
    if pointer is None or body is None:
        return None
    marker: dict[str, Any] = {"type": "ephemeral"} if ttl == "5m" else {"type": "ephemeral", "ttl": ttl}
    block = patch.resolve(body, pointer)
    if isinstance(block, str):
        new = [{"type": "text", "text": block, "cache_control": marker}]
        ops: tuple[dict[str, Any], ...] = ({"op": "replace", "path": pointer, "value": new},)
    elif isinstance(block, dict):
        ops = ({"op": "add", "path": patch.join(pointer, "cache_control"), "value": marker},)
    else:
        return None
    return Fix(f"add cache_control ({ttl}) at {pointer}", ops, "request")


def _saving(subject: LlmCall, prefix: int, ctx: EvalContext, memo: dict[Any, Any]) -> float | None:
    """Per repeated call: the prefix billed as cache reads instead of fresh input. Memoised per
    model and prefix size for the pricer in use (the entry keeps the pricer it was priced with)."""
    if ctx.pricer is None:
        return None
    key = ("saving", subject.provider, subject.model, prefix)
    entry = memo.get(key)
    if entry is not None and entry[0] is ctx.pricer:
        return entry[1]  # type: ignore[no-any-return]
    try:
        fresh = ctx.pricer.cost(subject.provider, subject.model, TokenUsage(input_tokens=prefix))
        cached = ctx.pricer.cost(subject.provider, subject.model, TokenUsage(cache_read_tokens=prefix))
    except Exception:  # advisory only
        return None
    saving = round(fresh - cached, 6) if fresh > cached else None
    if len(memo) < MEMO_LIMIT:
        memo[key] = (ctx.pricer, saving)
    return saving


KIND = RuleKind(
    "requirePromptCaching",
    RequirePromptCaching,
    ("llm_call",),
    compile,
    "long stable prompt prefixes are cached; fix: add cache_control",
)
