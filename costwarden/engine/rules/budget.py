"""``budget``: spend per attribution key over a window stays under a limit.

Before a call the rule checks ``spent + this call's worst-case cost`` (estimated input plus
``max_tokens`` of output) against the limit, reading spend from the ledger; the call-guard then
reserves that amount atomically. After a call it checks the settled spend. Windows are keys
(``budget:<policy>/<rule>:user=alice:2026-11-30``). No ledger means nothing to check (``skip``);
a ledger that fails raises, which the evaluator turns into an ``error`` judged by ``onError``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from costwarden.engine.budget import WINDOW_PATTERN, current_window, zone
from costwarden.engine.decision import Fix, Outcome
from costwarden.engine.ledger import Hold
from costwarden.engine.pricing import cost_in_context, price_context
from costwarden.engine.rules.base import (
    Check,
    CompileEnv,
    EvalContext,
    RuleCompileError,
    RuleKind,
    RuleParams,
    chat_downgradable,
)
from costwarden.engine.subjects import LlmCall, Subject, TokenUsage

DIMENSIONS = ("user", "feature", "team")
OUTPUT_TOKENS_CAP = 32768
"""Worst-case output is clamped so a huge max_tokens cannot pin a budget (FACTS.md, Budgets)."""
MAX_VALUE_BYTES = 256
"""Attribution values longer than this (UTF-8) are keyed by their hash (see budget_key)."""
MAX_LIMIT_USD = 9e9
"""The largest limit every ledger store keeps exactly (integer micro-dollars under 2**53): a larger
one, or ``.inf`` for "no limit", would load and then fail every reservation — deny every call."""


def _dimension(item: str) -> str:
    if item not in DIMENSIONS and not (item.startswith("tag:") and len(item) > 4):
        raise ValueError(f"'{item}' is not user, feature, team or tag:<name>")
    return item


class Budget(RuleParams):
    per: list[Annotated[str, AfterValidator(_dimension)]] = Field(  # each bad item reported at its index
        min_length=1, description="user | feature | team | tag:<name>"
    )
    limitUsd: float = Field(gt=0, le=MAX_LIMIT_USD, allow_inf_nan=False)
    window: str = Field(pattern=WINDOW_PATTERN, description="day | week | month | rolling:<N>h")
    timezone: str = Field(default="UTC", description="IANA zone for calendar windows")
    alertAt: list[float] = Field(default_factory=list, description="fractions of the limit, e.g. 0.8")
    onExceed: Literal["deny", "downgrade", "warn"] = "deny"

    @field_validator("alertAt")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if any(not 0 < v <= 1 for v in value):
            raise ValueError("alert thresholds are fractions in (0, 1]")
        return sorted(value)


def budget_key(policy: str, rule: str, subject: LlmCall, per: list[str]) -> str | None:
    """The window-less ledger key for a call, or None if an attribution dimension is missing.
    Each value is made safe for every store by :func:`key_value`."""
    tags = subject.tags
    parts = []
    for dim in per:
        name = dim[4:] if dim.startswith("tag:") else dim
        # as ``subject.attribution`` has it (the field over the tag), without building that mapping
        value = (getattr(subject, name) or tags.get(name)) if name in _FIELDS else tags.get(name)
        if not value:
            return None
        parts.append(f"{name}={key_value(value)}")
    return f"budget:{policy}/{rule}:{','.join(parts)}"


_FIELDS = frozenset({"feature", "user", "team"})


def key_value(value: str) -> str:
    """An attribution value as a budget key holds it, so that no two values share a key and every
    store keeps it. ``%``, ``,`` and ``=`` are percent-encoded (user ``a,team=b`` with team ``c``
    against user ``a`` with team ``b,team=c``); so are NUL, which SQLite's JSON functions cut a text
    at and PostgreSQL refuses, and lone surrogates (``%uD800``), which no store can encode — a user
    id from a request body's JSON may hold either. A value longer than ``MAX_VALUE_BYTES`` is keyed
    by its SHA-256 (``%sha256-<hex>``): PostgreSQL cannot index a key of more than 2704 bytes.
    Escapes start with ``%`` and a value's own ``%`` is encoded, so no value can pass for another."""
    if len(value) > MAX_VALUE_BYTES // 4 and len(raw := value.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
        return f"%sha256-{hashlib.sha256(raw).hexdigest()}"
    if "," in value or "=" in value or "%" in value or "\x00" in value:
        value = value.replace("%", "%25").replace(",", "%2C").replace("=", "%3D").replace("\x00", "%00")
    if not value.isascii() and _SURROGATE.search(value):
        value = _SURROGATE.sub(lambda m: f"%u{ord(m.group()):04X}", value)
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def split_key(key: str) -> tuple[str, str, str] | None:
    """A budget window's ledger key as ``(policy/rule, attribution, window)``: the inverse of
    :func:`budget_key` plus its window suffix (``budget:p/r:user=u-1:2026-11-30`` gives
    ``("p/r", "user=u-1", "2026-11-30")``). Attribution values may hold colons; policy, rule and
    window names do not. None for a key of another shape."""
    if not key.startswith("budget:") or key.count(":") < 3:
        return None
    head, window = key.rsplit(":", 1)
    budget, _, who = head[len("budget:"):].partition(":")
    return budget, who, window


def compile(params: Budget, env: CompileEnv) -> Check:
    try:
        tz = zone(params.timezone)
    except ValueError as exc:
        raise RuleCompileError(
            str(exc), ("timezone",), code="invalid-value", hint="use an IANA name such as UTC or Europe/Berlin"
        ) from exc
    limit = params.limitUsd
    per = list(params.per)
    policy, rule = env.policy, env.rule
    cheapest = env.catalog.tiers[0] if env.catalog.tiers else None

    unattributed = Outcome("skip", f"call has no {'/'.join(per)} attribution to budget against", static=True)
    against = f" worst case to reserve against ${limit:,.2f} per {params.window}"
    of_limit = f" of ${limit:,.2f} per {params.window}"
    alert_at = tuple(params.alertAt)
    no_ledger = Outcome("skip", "no budget ledger configured", static=True)

    def check(subject: Subject, ctx: EvalContext) -> Outcome:
        assert isinstance(subject, LlmCall)
        if ctx.ledger is None:
            return no_ledger
        base = budget_key(policy, rule, subject, per)
        if base is None:
            return unattributed
        now = ctx.now
        suffixes, ends = current_window(params.window, now, tz)
        keys = tuple([f"{base}:{w}" for w in suffixes])
        pending = _worst_case(subject, ctx) if subject.phase == "pre" else 0.0
        if ctx.reserving and pending and params.onExceed == "deny" and pending <= limit:
            # The reservation that follows checks spend + this hold against the limit atomically;
            # reading the spend here as well would only cost a round trip and could be stale anyway.
            hold = Hold(keys[-1], pending, limit, keys, ends, alert_at)
            return Outcome(
                "pass",
                f"${pending:,.4f}{against}",
                path=f"budget[{base}]",
                expected=limit,
                actual=round(pending, 6),
                holds=(hold,),
            )
        spent = sum(ctx.ledger.spent(keys, now=now))
        total = spent + pending
        path = f"budget[{base}]"
        hold = Hold(keys[-1], pending, limit, keys, ends, alert_at)
        if total <= limit:
            return Outcome(
                "pass",
                f"${total:,.4f}{of_limit}",
                path=path,
                expected=limit,
                actual=round(total, 6),
                holds=(hold,) if pending else (),
            )
        verb = "would exceed" if pending else "exceeds"
        message = f"spend ${total:,.4f} {verb} the ${limit:,.2f} {params.window} budget for {base.split(':', 2)[2]}"
        fix = None
        # embeddings and legacy completions are never swapped for a tier's model, a chat model
        if (params.onExceed == "downgrade" and cheapest and subject.provider in cheapest.downgrade_to
                and chat_downgradable(subject)):
            target = cheapest.downgrade_to[subject.provider]
            if target != subject.model:
                fix = Fix(
                    f"downgrade model to {target}", ({"op": "replace", "path": "/model", "value": target},), "request"
                )
        return Outcome(
            "fail",
            message,
            path=path,
            expected=limit,
            actual=round(total, 6),
            fix=fix,
            advisory=params.onExceed == "warn",
            holds=(hold,) if pending else (),  # counted if the call still goes ahead (a warning)
        )

    return check


def _worst_case(subject: LlmCall, ctx: EvalContext) -> float:
    """Estimated input plus max_tokens of output (clamped); raises when the model has no price.
    Priced once per subject and pricer, however many budgets judge the call (subjects are immutable)."""
    if subject.estimated_cost_usd is not None:
        return subject.estimated_cost_usd
    pricer = ctx.pricer
    if pricer is None:
        return 0.0
    memo = subject.__dict__.get("_worst_case")
    if memo is not None and memo[0] is pricer:
        return memo[1]  # type: ignore[no-any-return]
    usage = worst_case_usage(subject)
    cost = cost_in_context(pricer, subject.provider, subject.model, usage, batch=subject.request.batch,
                           context=price_context(subject.body))
    subject.__dict__["_worst_case"] = (pricer, cost)
    return cost


def worst_case_usage(subject: LlmCall, *, output: bool = True) -> TokenUsage:
    """The usage a call is reserved for: its estimated input, billed as cache writes when the request
    has a cache breakpoint (a write costs 1.25x input for 5m, 2x for 1h: ``request.cache_write_1h``,
    when any breakpoint asks for it), plus ``max_tokens`` of output, clamped, for each of the completions it asks for
    (``request.choices``: Chat Completions' ``n``), all of it audio when the request asks for audio
    output and all of it image when its output is image tokens (``request.output_image``: GPT Image),
    the image share of the input at its rate (``request.input_image_tokens``: an image edit's images),
    and the web searches it allows (``request.max_web_searches``); no output and no
    searches when ``output`` is False."""
    request = subject.request
    cap = OUTPUT_TOKENS_CAP if request.max_tokens is None else min(request.max_tokens, OUTPUT_TOKENS_CAP)
    out = cap * request.choices if output else 0
    tokens = request.input_tokens
    cached = request.cache_breakpoints
    return TokenUsage(
        input_tokens=0 if cached else tokens,
        output_tokens=out,
        cache_write_5m_tokens=tokens if cached and not request.cache_write_1h else 0,
        cache_write_1h_tokens=tokens if cached and request.cache_write_1h else 0,
        web_search_requests=request.max_web_searches if output else 0,
        output_audio_tokens=out if request.output_audio else 0,
        output_image_tokens=out if request.output_image else 0,
        input_image_tokens=request.input_image_tokens,
    )


KIND = RuleKind("budget", Budget, ("llm_call",), compile, "spend per attribution key over a window stays under a limit")
