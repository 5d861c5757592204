"""``maxOutputTokens``: the request caps output at or below a limit per feature; fix: clamp."""

from __future__ import annotations

from pydantic import Field

from costwarden.engine import patch
from costwarden.engine.decision import Fix, Outcome
from costwarden.engine.rules.base import Check, CompileEnv, EvalContext, RuleKind, RuleParams
from costwarden.engine.subjects import LlmCall, Subject


class MaxOutputTokens(RuleParams):
    limit: int = Field(ge=1, description="cap for features not listed in byFeature")
    byFeature: dict[str, int] = Field(default_factory=dict, description="feature -> cap")


def compile(params: MaxOutputTokens, env: CompileEnv) -> Check:
    default = params.limit
    by_feature = dict(params.byFeature)

    def check(subject: Subject, ctx: EvalContext) -> Outcome:
        assert isinstance(subject, LlmCall)
        cap = by_feature.get(subject.feature or "", default)
        field = subject.request.max_tokens_field
        requested = subject.request.max_tokens
        if requested is not None and requested <= cap:
            return Outcome("pass", f"{field} {requested} is within {cap}", path=field, expected=cap, actual=requested)
        verb = "replace" if requested is not None else "add"
        fix = Fix(f"clamp {field} to {cap}", ({"op": verb, "path": patch.join("", field), "value": cap},), "request")
        what = (
            f"{field} {requested} exceeds" if requested is not None else f"{field} is unset; it must be set to at most"
        )
        return Outcome(
            "fail",
            f"{what} the cap of {cap} for feature '{subject.feature or ''}'",
            path=field,
            expected=cap,
            actual=requested,
            fix=fix,
        )

    return check


KIND = RuleKind(
    "maxOutputTokens",
    MaxOutputTokens,
    ("llm_call",),
    compile,
    "max output tokens at or below a cap per feature; fix: clamp",
)
