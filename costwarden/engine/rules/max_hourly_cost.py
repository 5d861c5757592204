"""``maxHourlyCost``: a workload's estimated $/hour stays under a cap unless approved.

An approval tag whose value is not known yet (a Terraform plan: known only after apply, or
possibly among the provider's default tags the plan does not show) approves nothing: nobody can
be named as the approver. The failure says so, so that the author sets it to a known value.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from costwarden.engine.decision import Outcome
from costwarden.engine.rules.base import Check, CompileEnv, EvalContext, RuleKind, RuleParams, memo_outcome
from costwarden.engine.subjects import Resource, Subject


class MaxHourlyCost(RuleParams):
    limitUsd: float = Field(gt=0, description="USD per hour for all replicas")
    approvalTag: str | None = Field(
        default=None,
        description="a non-empty tag (label) with this key approves; on Kubernetes, so does an annotation",
    )


def compile(params: MaxHourlyCost, env: CompileEnv) -> Check:
    limit = params.limitUsd
    approval = params.approvalTag
    catalog = env.catalog
    memo: dict[Any, Outcome] = {}
    unpriced = Outcome("skip", "no priced accelerators or instance type", path="workload", static=True)

    def check(subject: Subject, ctx: EvalContext) -> Outcome:
        assert isinstance(subject, Resource)
        work = subject.workload
        hourly = subject.hourly_usd
        if hourly is None:
            hourly = catalog.hourly_usd(work, spot=subject.capacity == "spot")
        if hourly is None:
            if work.gpus > 0 or work.instance_type:
                what = work.instance_type or f"{work.gpus:g}x {work.gpu_type or 'unknown GPU type'}"
                return memo_outcome(memo, what, lambda: Outcome("skip", f"no price known for {what}", path="workload"))
            return unpriced
        approver = unread = None
        if approval and hourly > limit:
            approver = _approver(subject, approval)
            unread = None if approver else _unread(subject, approval)
        return memo_outcome(memo, (hourly, approver, unread), lambda: _judge(hourly, limit, approval, approver, unread))

    return check


def _approver(subject: Resource, key: str) -> str | None:
    """Who approved: the tag's value, else the annotation's (a label cannot hold every name, such
    as an e-mail address); None when neither is set and non-empty, or the tag's value is not known."""
    tag = subject.tags.get(key) if key not in subject.unknown_tags.values else None
    return tag or subject.annotations.get(key) or None


def _unread(subject: Resource, key: str) -> str | None:
    """Why the approval tag cannot be read yet, if it cannot (see the module docstring)."""
    unknown = subject.unknown_tags
    if key in unknown.values:
        return (
            f"the approval tag {key} is known only after apply, so it approves nothing at plan time "
            "(give it a value the plan knows)"
        )
    if key not in subject.tags and unknown.may_hold(key):
        return (
            f"the approval tag {key} is not among the tags the plan shows ({unknown.incomplete} may hold it), "
            "so it approves nothing at plan time (set it on the resource)"
        )
    return None


def _judge(hourly: float, limit: float, approval: str | None, approver: str | None, unread: str | None) -> Outcome:
    if hourly <= limit:
        message = f"estimated ${hourly:,.2f}/h is within ${limit:,.2f}/h"
    elif approver:
        message = f"estimated ${hourly:,.2f}/h above ${limit:,.2f}/h, approved by {approver}"
    else:
        hint = f"; approve with the tag or annotation {approval}=<approver>" if approval else ""
        hint = f"; {unread}" if unread else hint
        message = f"estimated ${hourly:,.2f}/h exceeds the ${limit:,.2f}/h cap{hint}"
        return Outcome("fail", message, path="hourly_usd", expected=limit, actual=round(hourly, 4))
    return Outcome("pass", message, path="hourly_usd", expected=limit, actual=round(hourly, 4))


KIND = RuleKind(
    "maxHourlyCost", MaxHourlyCost, ("resource",), compile, "estimated hourly cost under a cap unless approved"
)
