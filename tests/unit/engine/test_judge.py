"""The surface judge (``PolicySet.evaluator``): plans inlined as they are met, the same function
throughout, the same decisions as ``evaluate``; plan keys; the Decision's verdict field."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from costwarden.engine.decision import Decision, RuleResult, SubjectRef
from costwarden.engine.evaluate import PolicySet, plan_entry
from costwarden.engine.judge import INLINE_PLANS
from costwarden.engine.subjects import Resource, Subject, subject_from_dict

CompilePolicies = Callable[..., PolicySet]
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # a fixed time takes evaluate() past the judge

TAGS_AND_SPOT = """
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: tags-and-spot}
spec:
  subject: resource
  rules:
    - {name: tags, requireTags: {keys: [team, feature]}}
    - {name: spot, spotOnly: {workloadClasses: [batch]}}
"""


def job(kind: str = "Job", **fields: Any) -> Subject:
    data: dict[str, Any] = {"type": "resource", "provider": "kubernetes", "kind": kind, "name": "train"}
    data.update(fields)
    return subject_from_dict(data)


def kinds(n: int) -> list[str]:
    return [f"Kind{i}" for i in range(n)]


def test_the_evaluator_is_one_function_per_surface(compile_policies: CompilePolicies) -> None:
    ps = compile_policies(TAGS_AND_SPOT)
    judge = ps.evaluator("ci")
    assert ps.evaluator("ci") is judge
    assert ps.evaluator("admission") is not judge
    with pytest.raises(ValueError, match="unknown surface"):
        ps.evaluator("nowhere")  # type: ignore[arg-type]


def test_plans_are_inlined_as_keys_are_met_and_the_function_stays_the_same(
    compile_policies: CompilePolicies,
) -> None:
    ps = compile_policies(TAGS_AND_SPOT)
    judge = ps.evaluator("ci")
    before = judge.__code__
    first = judge(job(tags={"team": "a"}))
    assert judge.__code__ is not before  # the Job plan is now part of the function
    grown = judge.__code__
    assert "K0" in grown.co_names and "K1" not in grown.co_names
    again = judge(job(tags={"team": "a"}))
    assert judge.__code__ is grown  # a known key compiles nothing
    assert again == first and not first.allowed
    judge(job("CronJob"))
    assert "K1" in judge.__code__.co_names


def test_beyond_the_inline_limit_decisions_are_unchanged(compile_policies: CompilePolicies) -> None:
    ps = compile_policies(TAGS_AND_SPOT)
    judge = ps.evaluator("ci")
    subjects = [
        job(kind, tags={"team": "a", "feature": "f"} if n % 2 else {}, capacity="spot", workload={"class": "batch"})
        for n, kind in enumerate(kinds(INLINE_PLANS + 5))
    ]
    for _ in range(3):  # first sight, inlined (or not: past the limit), then served from tables
        for n, subject in enumerate(subjects):
            decision = judge(subject)
            assert decision == ps.evaluate(subject, "ci", now=NOW)  # through the plan functions, not the judge
            assert decision.allowed is bool(n % 2)
    names = judge.__code__.co_names
    assert f"K{INLINE_PLANS - 1}" in names and f"K{INLINE_PLANS}" not in names


def test_threads_judging_while_plans_are_inlined(compile_policies: CompilePolicies) -> None:
    ps = compile_policies(TAGS_AND_SPOT)
    judge = ps.evaluator("admission")
    subjects = [job(kind, tags={"team": "a", "feature": "f"}) for kind in kinds(INLINE_PLANS * 2)]
    expected = [ps.evaluate(s, "admission", now=NOW) for s in subjects]
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        start.wait()
        try:
            for i in range(len(subjects) * 3):
                n = (i + offset) % len(subjects)
                assert judge(subjects[n]) == expected[n]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k * 5,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_evaluate_goes_through_the_same_judge(compile_policies: CompilePolicies) -> None:
    ps = compile_policies(TAGS_AND_SPOT)
    subject = job(tags={"team": "a", "feature": "f"}, capacity="on-demand", workload={"class": "batch"})
    decision = ps.evaluate(subject, "ci")
    assert decision == ps.evaluator("ci")(subject) == ps.evaluate(subject, "ci", now=NOW)
    assert "K0" in ps.evaluator("ci").__code__.co_names
    assert [r.result for r in decision.results] == ["pass", "fail"] and not decision.allowed


class TestPlanKeys:
    def test_one_interned_key_per_type_provider_and_kind(self) -> None:
        a, b = job(), job()
        key_a, ref_a = plan_entry(a)
        key_b, _ = plan_entry(b)
        assert key_a is key_b  # compared with `is` by the judge
        assert ref_a.kind == "Job" and ref_a.name == "train"
        assert plan_entry(job("CronJob"))[0] != key_a

    @pytest.mark.parametrize(
        ("one", "other"),
        [(("a'b", "c"), ("a", "'bc")), (("a", "b c"), ("a b", "c")), (("ab", "c"), ("a", "bc"))],
    )
    def test_no_two_triples_share_a_key(self, one: tuple[str, str], other: tuple[str, str]) -> None:
        assert plan_entry(Resource(*one))[0] != plan_entry(Resource(*other))[0]

    def test_subjects_of_other_types_with_the_same_provider_and_kind_get_other_plans(
        self, compile_policies: CompilePolicies
    ) -> None:
        ps = compile_policies(TAGS_AND_SPOT)
        serving = subject_from_dict({"type": "serving_config", "provider": "kubernetes", "kind": "Job", "model": "m"})
        assert plan_entry(serving)[0] != plan_entry(job())[0]
        assert ps.evaluator("ci")(serving).results == ()  # the policy is for resources only
        assert not ps.evaluator("ci")(job()).allowed


class TestDecisionVerdict:
    REF = SubjectRef("resource", "kubernetes", "Job", "train")
    FAIL = RuleResult("p", "r", "fail", "deny", "high", "missing")
    WARN = RuleResult("p", "r", "fail", "warn", "high", "missing")

    def test_allowed_is_worked_out_from_the_results(self) -> None:
        assert not Decision("ci", self.REF, (self.FAIL,)).allowed
        assert Decision("ci", self.REF, (self.WARN,)).allowed
        assert Decision("ci", self.REF).allowed
        assert Decision("ci", self.REF, (self.FAIL,), True).allowed is False  # never taken from the caller

    def test_replace_and_pickle_work_it_out_again(self) -> None:
        denied = Decision("ci", self.REF, (self.FAIL,))
        assert denied._replace(results=()).allowed
        assert not Decision("ci", self.REF)._replace(results=(self.FAIL,), allowed=True).allowed
        assert pickle.loads(pickle.dumps(denied)) == denied
        assert Decision._make(("ci", self.REF, (self.FAIL,))).verdict == "deny"
        with pytest.raises(ValueError, match="no fields"):
            denied._replace(verdict="allow")

    def test_plans_build_the_same_decision_as_the_constructor(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(TAGS_AND_SPOT)
        for subject in (job(), job(tags={"team": "a", "feature": "f"}), job(workload={"class": "batch"})):
            decision = ps.evaluate(subject, "ci")
            assert decision == Decision(decision.surface, decision.subject, decision.results)
