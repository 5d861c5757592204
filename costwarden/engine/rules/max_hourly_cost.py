"""``maxHourlyCost``: a workload's estimated $/hour stays under a cap unless approved."""

from __future__ import annotations

from pydantic import Field

from costwarden.engine.decision import Outcome
from costwarden.engine.rules.base import Check, CompileEnv, EvalContext, RuleKind, RuleParams
from costwarden.engine.subjects import Resource, Subject


class MaxHourlyCost(RuleParams):
    limitUsd: float = Field(gt=0, description="USD per hour for all replicas")
    approvalTag: str | None = Field(default=None, description="a non-empty tag with this key approves")


def compile(params: MaxHourlyCost, env: CompileEnv) -> Check:
    limit = params.limitUsd
    approval = params.approvalTag
    catalog = env.catalog

    def check(subject: Subject, ctx: EvalContext) -> Outcome:
        assert isinstance(subject, Resource)
        hourly = subject.hourly_usd
        if hourly is None:
            hourly = catalog.hourly_usd(subject.workload, spot=subject.capacity == "spot")
        if hourly is None:
            work = subject.workload
            if work.gpus > 0 or work.instance_type:
                what = work.instance_type or f"{work.gpus:g}x {work.gpu_type or 'unknown GPU type'}"
                return Outcome("skip", f"no price known for {what}", path="workload")
            return Outcome("skip", "no priced accelerators or instance type", path="workload")
        if hourly <= limit:
            return Outcome(
                "pass",
                f"estimated ${hourly:,.2f}/h is within ${limit:,.2f}/h",
                path="hourly_usd",
                expected=limit,
                actual=round(hourly, 4),
            )
        approver = subject.tags.get(approval) if approval else None
        if approver:
            return Outcome(
                "pass",
                f"estimated ${hourly:,.2f}/h above ${limit:,.2f}/h, approved by {approver}",
                path="hourly_usd",
                expected=limit,
                actual=round(hourly, 4),
            )
        hint = f"; approve with tag {approval}=<approver>" if approval else ""
        return Outcome(
            "fail",
            f"estimated ${hourly:,.2f}/h exceeds the ${limit:,.2f}/h cap{hint}",
            path="hourly_usd",
            expected=limit,
            actual=round(hourly, 4),
        )

    return check


KIND = RuleKind(
    "maxHourlyCost", MaxHourlyCost, ("resource",), compile, "estimated hourly cost under a cap unless approved"
)
