"""``maxOutputTokens``: the request caps output at or below a limit per feature; fix: clamp.

A call that generates no output (``request.choices == 0``: an embeddings call) has nothing to cap,
and one whose API has no field that caps output (``request.max_tokens_field`` empty: image
generation, where size and quality set it; Responses compaction) cannot be capped: both are
skipped, as adding ``max_tokens`` would break the request."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from costwarden.engine import patch
from costwarden.engine.decision import Fix, Outcome
from costwarden.engine.rules.base import Check, CompileEnv, EvalContext, RuleKind, RuleParams, memo_outcome
from costwarden.engine.subjects import LlmCall, Subject


class MaxOutputTokens(RuleParams):
    limit: int = Field(ge=1, description="cap for features not listed in byFeature")
    byFeature: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict, description="feature -> cap")


def compile(params: MaxOutputTokens, env: CompileEnv) -> Check:
    default = params.limit
    by_feature = dict(params.byFeature)
    memo: dict[Any, Outcome] = {}

    def check(subject: Subject, ctx: EvalContext) -> Outcome:
        assert isinstance(subject, LlmCall)
        if not subject.request.choices:
            return _NO_OUTPUT
        if not subject.request.max_tokens_field:
            return _NO_FIELD
        feature = subject.feature or ""
        field = subject.request.max_tokens_field
        requested = subject.request.max_tokens
        cap = by_feature.get(feature, default)
        # a cap the body does not set (an implied default, such as legacy Completions' 16) is added, not replaced
        present = field in subject.body if subject.body is not None else requested is not None
        return memo_outcome(memo, (feature, field, requested, present),
                            lambda: _judge(field, requested, cap, feature, present))

    return check


_NO_OUTPUT = Outcome("skip", "the call generates no output (an embeddings call): nothing to cap", static=True)
_NO_FIELD = Outcome("skip", "the API has no field that caps output (image generation, Responses compaction)",
                    static=True)


def _judge(field: str, requested: int | None, cap: int, feature: str, present: bool) -> Outcome:
    if requested is not None and requested <= cap:
        return Outcome("pass", f"{field} {requested} is within {cap}", path=field, expected=cap, actual=requested)
    verb = "replace" if present else "add"
    fix = Fix(f"clamp {field} to {cap}", ({"op": verb, "path": patch.join("", field), "value": cap},), "request")
    what = f"{field} {requested} exceeds" if requested is not None else f"{field} is unset; it must be set to at most"
    return Outcome(
        "fail", f"{what} the cap of {cap} for feature '{feature}'", path=field, expected=cap, actual=requested, fix=fix
    )


KIND = RuleKind(
    "maxOutputTokens",
    MaxOutputTokens,
    ("llm_call",),
    compile,
    "max output tokens at or below a cap per feature; fix: clamp",
)
