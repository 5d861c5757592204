"""The evaluator: effects per surface, verdicts, onError, exemptions, caching, JSON, threads."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from costwarden.adapters.ledger.memory import MemoryLedger
from costwarden.engine.decision import DECISION_SCHEMA_VERSION, Decision
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.subjects import Subject, subject_from_dict
from costwarden.errors import LedgerError, PolicyError

CompilePolicies = Callable[..., PolicySet]
NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def policy(
    name: str = "p",
    *,
    subject: str = "resource",
    rules: str = "- name: team\n  requireTags: {keys: [team]}",
    spec: str = "",
    severity: str = "medium",
) -> str:
    rules_block = "\n".join("    " + line for line in rules.strip("\n").splitlines())
    spec_block = "\n".join("  " + line for line in spec.strip("\n").splitlines())
    return (
        "apiVersion: costwarden.dev/v1\nkind: Policy\n"
        f"metadata: {{name: {name}, severity: {severity}}}\n"
        f"spec:\n  subject: {subject}\n{spec_block}\n  rules:\n{rules_block}\n"
    )


def exemption(
    name: str = "ex", *, policies: str = "[{policy: p}]", match: str = "{}", expires: str = "2027-01-31T00:00:00Z"
) -> str:
    return (
        "apiVersion: costwarden.dev/v1\nkind: Exemption\n"
        f"metadata: {{name: {name}}}\n"
        f"spec:\n  policies: {policies}\n  match: {match}\n  expires: {expires}\n"
        "  owner: finops@example.com\n  reason: migration in progress\n"
    )


def res(**fields: Any) -> Subject:
    data: dict[str, Any] = {"type": "resource", "provider": "kubernetes", "kind": "Job", "name": "train"}
    data.update(fields)
    return subject_from_dict(data)


def call(**fields: Any) -> Subject:
    data: dict[str, Any] = {"type": "llm_call", "provider": "anthropic", "model": "claude-sonnet-4-5"}
    data.update(fields)
    return subject_from_dict(data)


class TestEffects:
    @pytest.fixture
    def ps(self, compile_policies: CompilePolicies) -> PolicySet:
        spec = "enforcement: {default: deny, admission: warn, runtime: audit, audit: 'off'}"
        return compile_policies(policy(spec=spec))

    def test_deny(self, ps: PolicySet) -> None:
        d = ps.evaluate(res(), surface="ci", now=NOW)
        [r] = d.results
        assert (r.result, r.effect, r.is_blocking) == ("fail", "deny", True)
        assert d.verdict == "deny"
        assert not d.allowed
        assert d.blocking == (r,)

    def test_warn_never_denies(self, ps: PolicySet) -> None:
        d = ps.evaluate(res(), surface="admission", now=NOW)
        [r] = d.results
        assert (r.result, r.effect, r.is_blocking) == ("warn", "warn", False)
        assert d.verdict == "allow"
        assert d.warnings == (r,)
        assert d.violations == (r,)

    def test_audit_is_only_recorded(self, ps: PolicySet) -> None:
        d = ps.evaluate(res(), surface="runtime", now=NOW)
        [r] = d.results
        assert (r.result, r.effect) == ("fail", "audit")
        assert d.verdict == "allow"
        assert d.warnings == ()
        assert d.violations == (r,)
        assert r.is_violation

    def test_off_is_not_evaluated(self, ps: PolicySet) -> None:
        d = ps.evaluate(res(), surface="audit", now=NOW)
        assert d.results == ()
        assert d.verdict == "allow"

    def test_off_skips_even_a_failing_when(self, compile_policies: CompilePolicies) -> None:
        spec = "match: {when: 'subject.tags.x == \"y\"'}\nenforcement: {default: 'off', ci: deny}"
        ps = compile_policies(policy(spec=spec))
        assert ps.evaluate(res(), surface="admission", now=NOW).results == ()
        assert ps.evaluate(res(), surface="ci", now=NOW).results[0].result == "error"

    def test_pass_carries_the_effect_but_never_blocks(self, ps: PolicySet) -> None:
        d = ps.evaluate(res(tags={"team": "ml"}), surface="ci", now=NOW)
        [r] = d.results
        assert (r.result, r.effect, r.is_blocking) == ("pass", "deny", False)
        assert d.verdict == "allow"

    def test_unknown_surface_is_rejected(self, ps: PolicySet) -> None:
        with pytest.raises(ValueError, match="unknown surface"):
            ps.evaluate(res(), surface="webhook")  # type: ignore[arg-type]

    def test_severity_from_policy_and_rule(self, compile_policies: CompilePolicies) -> None:
        rules = "- name: a\n  requireTags: {keys: [team]}\n- name: b\n  severity: critical\n  requireTags: {keys: [x]}"
        d = compile_policies(policy(rules=rules, severity="low")).evaluate(res(), now=NOW)
        assert [(r.rule, r.severity) for r in d.results] == [("a", "low"), ("b", "critical")]


class TestVerdict:
    @pytest.fixture
    def ps(self, compile_policies: CompilePolicies) -> PolicySet:
        return compile_policies(
            policy("hard", spec="enforcement: {default: deny}"),
            policy("soft", rules="- name: env\n  requireTags: {keys: [env]}", spec="enforcement: {default: warn}"),
            policy("quiet", rules="- name: cc\n  requireTags: {keys: [cc]}", spec="enforcement: {default: audit}"),
        )

    def test_one_deny_fail_denies(self, ps: PolicySet) -> None:
        d = ps.evaluate(res(), now=NOW)
        assert d.verdict == "deny"
        assert [r.policy for r in d.blocking] == ["hard"]
        assert d.counts() == {"pass": 0, "fail": 2, "warn": 1, "error": 0, "skip": 0}
        assert d.summary() == "denied: [hard/team] missing required tag: team"

    def test_warn_and_audit_alone_allow(self, ps: PolicySet) -> None:
        d = ps.evaluate(res(tags={"team": "ml"}), now=NOW)
        assert d.verdict == "allow"
        assert [r.result for r in d.results] == ["pass", "warn", "fail"]
        assert d.summary() == "allowed by 3 result(s)"

    def test_result_for_and_order(self, ps: PolicySet) -> None:
        d = ps.evaluate(res(), now=NOW)
        assert [r.policy for r in d.results] == ["hard", "soft", "quiet"]
        found = d.result_for("soft", "env")
        assert found is not None
        assert found.result == "warn"
        assert d.result_for("soft", "nope") is None

    def test_fixes_follow_results(self, compile_policies: CompilePolicies) -> None:
        rules = "- name: a\n  requireTags: {keys: [team], defaults: {team: x}}"
        ps = compile_policies(
            policy("a", rules=rules),
            policy("b", rules=rules, spec="enforcement: {default: warn}"),
        )
        subject = res(raw={"metadata": {}}, tags_pointer="/metadata/labels")
        d = ps.evaluate(subject, now=NOW)
        assert len(d.fixes()) == 2
        assert len(d.fixes(only_blocking=True)) == 1

    def test_custom_message_only_on_failure(self, compile_policies: CompilePolicies) -> None:
        rules = "- name: team\n  message: add a team label\n  requireTags: {keys: [team]}"
        ps = compile_policies(policy(rules=rules))
        assert ps.evaluate(res(), now=NOW).results[0].message == "add a team label (missing required tag: team)"
        assert "add a team label" not in ps.evaluate(res(tags={"team": "a"}), now=NOW).results[0].message


class RaisingLedger(MemoryLedger):
    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    def spent(self, keys: Any, *, now: datetime) -> list[float]:
        raise self.exc


BUDGET = "- name: daily\n  budget: {per: [user], limitUsd: 25, window: day}"


class TestOnError:
    @pytest.mark.parametrize(("on_error", "effect", "verdict"), [("deny", "deny", "deny"), ("allow", "audit", "allow")])
    def test_rule_error(self, compile_policies: CompilePolicies, on_error: str, effect: str, verdict: str) -> None:
        rules = "- name: e\n  expr: {cel: 'subject.name', message: m}"
        ps = compile_policies(policy(rules=rules, spec=f"onError: {on_error}"))
        d = ps.evaluate(res(), now=NOW)
        [r] = d.results
        assert (r.result, r.effect) == ("error", effect)
        assert d.verdict == verdict

    def test_default_is_deny(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy(rules="- name: e\n  expr: {cel: 'subject.tags.nope == 1', message: m}"))
        assert ps.evaluate(res(), now=NOW).verdict == "deny"

    @pytest.mark.parametrize(("on_error", "verdict"), [("deny", "deny"), ("allow", "allow")])
    def test_ledger_error(self, compile_policies: CompilePolicies, on_error: str, verdict: str) -> None:
        ps = compile_policies(policy(subject="llm_call", rules=BUDGET, spec=f"onError: {on_error}"))
        ledger = RaisingLedger(LedgerError("redis://ledger:6379 unreachable"))
        d = ps.evaluate(call(user="alice", estimated_cost_usd=0.01), surface="runtime", now=NOW, ledger=ledger)
        [r] = d.results
        assert r.result == "error"
        assert r.message == "redis://ledger:6379 unreachable"
        assert d.verdict == verdict

    def test_unexpected_exception_is_an_error_result(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy(subject="llm_call", rules=BUDGET))
        ledger = RaisingLedger(RuntimeError("boom"))
        d = ps.evaluate(call(user="alice", estimated_cost_usd=0.01), now=NOW, ledger=ledger)
        assert d.results[0].result == "error"
        assert d.results[0].message == "RuntimeError: boom"
        assert d.verdict == "deny"

    def test_error_on_a_warn_surface_does_not_deny(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(
            policy(rules="- name: e\n  expr: {cel: 'subject.tags.nope == 1', message: m}",
                   spec="enforcement: {default: warn}")
        )
        d = ps.evaluate(res(), now=NOW)
        assert (d.results[0].result, d.results[0].effect, d.verdict) == ("error", "warn", "allow")

    def test_later_rules_still_run_after_an_error(self, compile_policies: CompilePolicies) -> None:
        rules = ("- name: e\n  expr: {cel: 'subject.tags.nope == 1', message: m}\n"
                 "- name: team\n  requireTags: {keys: [team]}")
        d = compile_policies(policy(rules=rules)).evaluate(res(), now=NOW)
        assert [(r.rule, r.result) for r in d.results] == [("e", "error"), ("team", "fail")]


class TestExemptions:
    def test_active_exemption_skips(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy(), exemption())
        d = ps.evaluate(res(), now=NOW)
        [r] = d.results
        assert (r.result, r.exemption) == ("skip", "ex")
        assert r.message == (
            "missing required tag: team [exempted by ex (owner finops@example.com, until 2027-01-31 00:00 UTC): "
            "migration in progress]"
        )
        assert d.verdict == "allow"

    def test_passes_are_not_marked_exempt(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy(), exemption())
        [r] = ps.evaluate(res(tags={"team": "a"}), now=NOW).results
        assert (r.result, r.exemption) == ("pass", None)

    def test_errors_and_warnings_can_be_exempted(self, compile_policies: CompilePolicies) -> None:
        rules = "- name: e\n  expr: {cel: 'subject.tags.nope == 1', message: m}"
        ps = compile_policies(policy(rules=rules, spec="enforcement: {default: deny, ci: warn}"), exemption())
        assert ps.evaluate(res(), surface="admission", now=NOW).results[0].exemption == "ex"
        ps = compile_policies(policy(spec="enforcement: {default: warn}"), exemption())
        assert ps.evaluate(res(), now=NOW).results[0].result == "skip"

    def test_rule_scoped_exemption(self, compile_policies: CompilePolicies) -> None:
        rules = "- name: team\n  requireTags: {keys: [team]}\n- name: env\n  requireTags: {keys: [env]}"
        ps = compile_policies(policy(rules=rules), exemption(policies="[{policy: p, rules: [env]}]"))
        d = ps.evaluate(res(), now=NOW)
        assert [(r.rule, r.result, r.exemption) for r in d.results] == [("team", "fail", None), ("env", "skip", "ex")]
        assert d.verdict == "deny"

    def test_match_limits_the_exemption(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy(), exemption(match="{namespaces: [legacy], names: ['train-*']}"))
        assert ps.evaluate(res(namespace="legacy", name="train-7b"), now=NOW).verdict == "allow"
        assert ps.evaluate(res(namespace="legacy", name="serve"), now=NOW).verdict == "deny"
        assert ps.evaluate(res(name="train-7b"), now=NOW).verdict == "deny"

    def test_empty_provider_list_exempts_nothing(self, compile_policies: CompilePolicies) -> None:
        """``providers: []`` names no provider; it must not widen the exemption to every subject."""
        ps = compile_policies(policy(), exemption(match="{providers: []}"))
        assert ps.evaluate(res(), now=NOW).verdict == "deny"

    def test_other_policies_are_not_exempted(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy("p"), policy("q"), exemption())
        d = ps.evaluate(res(), now=NOW)
        assert [(r.policy, r.result) for r in d.results] == [("p", "skip"), ("q", "fail")]

    def test_expired_at_decision_time(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy(), exemption(expires="2026-12-01T12:00:00Z"))
        before = datetime(2026, 12, 1, 11, 59, 59, tzinfo=UTC)
        after = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
        assert ps.evaluate(res(), now=before).verdict == "allow"
        d = ps.evaluate(res(), now=after)
        [r] = d.results
        assert (r.result, r.exemption) == ("fail", None)
        assert "exemption ex expired 2026-12-01 12:00 UTC" in r.message
        assert d.verdict == "deny"

    def test_expiry_with_a_zone_offset(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy(), exemption(expires="2026-12-01T12:00:00+02:00"))
        assert ps.evaluate(res(), now=datetime(2026, 12, 1, 9, 59, tzinfo=UTC)).verdict == "allow"
        assert ps.evaluate(res(), now=datetime(2026, 12, 1, 10, 0, tzinfo=UTC)).verdict == "deny"

    def test_expired_through_the_policy_set_clock(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy(), exemption(expires="2026-12-01T12:00:00Z"))
        early = ps.with_clock(lambda: datetime(2026, 11, 1, tzinfo=UTC))
        late = ps.with_clock(lambda: datetime(2027, 1, 1, tzinfo=UTC))
        assert early.evaluate(res()).verdict == "allow"
        d = late.evaluate(res())
        assert d.verdict == "deny"
        assert "expired" in d.results[0].message
        # with_clock is a new value; the original keeps its own clock
        assert early.policies == ps.policies
        assert early is not ps
        assert ps.clock is not early.clock

    def test_explicit_now_overrides_the_clock(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy(), exemption(expires="2026-12-01T12:00:00Z"))
        late = ps.with_clock(lambda: datetime(2027, 1, 1, tzinfo=UTC))
        assert late.evaluate(res(), now=datetime(2026, 11, 1, tzinfo=UTC)).verdict == "allow"

    def test_date_only_expiry_runs_to_the_end_of_that_day(self, compile_policies: CompilePolicies) -> None:
        """``expires: 2026-12-01`` (no time) applies all through Dec 1 UTC (exemptions.py docstring)."""
        ps = compile_policies(policy(), exemption(expires="2026-12-01"))
        assert ps.evaluate(res(), now=datetime(2026, 12, 1, 18, 0, tzinfo=UTC)).verdict == "allow"
        assert ps.evaluate(res(), now=datetime(2026, 12, 2, 0, 0, tzinfo=UTC)).verdict == "deny"

    def test_naive_now_is_read_as_utc(self, compile_policies: CompilePolicies) -> None:
        """A naive ``now`` is UTC, as a naive ``expires`` is; evaluation must not raise TypeError."""
        ps = compile_policies(policy(), exemption(expires="2026-12-01T12:00:00Z"))
        assert ps.evaluate(res(), now=datetime(2026, 12, 1, 11, 0)).verdict == "allow"
        assert ps.evaluate(res(), now=datetime(2026, 12, 1, 13, 0)).verdict == "deny"

    def test_unknown_policy_is_a_policy_error(self, compile_policies: CompilePolicies) -> None:
        with pytest.raises(PolicyError) as info:
            compile_policies(policy("require-tags"), exemption(policies="[{policy: require-tag}]"))
        [diag] = info.value.diagnostics
        assert diag.code == "unknown-policy"
        assert "did you mean 'require-tags'?" in (diag.hint or "")

    def test_unknown_rule_is_a_policy_error(self, compile_policies: CompilePolicies) -> None:
        with pytest.raises(PolicyError) as info:
            compile_policies(policy(), exemption(policies="[{policy: p, rules: [teams]}]"))
        [diag] = info.value.diagnostics
        assert diag.code == "unknown-rule"
        assert "did you mean 'team'?" in (diag.hint or "")

    @pytest.mark.parametrize("match", ["{selector: {matchLabels: {exempt: 'true'}}}", "{when: 'true'}"])
    def test_exemption_cannot_match_on_the_subject_itself(self, compile_policies: CompilePolicies, match: str) -> None:
        with pytest.raises(PolicyError) as info:
            compile_policies(policy(), exemption(match=match))
        assert [d.code for d in info.value.diagnostics] == ["unknown-field"]

    def test_expires_is_required(self, compile_policies: CompilePolicies) -> None:
        text = exemption().replace("  expires: 2027-01-31T00:00:00Z\n", "")
        with pytest.raises(PolicyError):
            compile_policies(policy(), text)


class TestCandidates:
    @pytest.fixture
    def ps(self, compile_policies: CompilePolicies) -> PolicySet:
        return compile_policies(
            policy("jobs", spec="match: {kinds: [Job], namespaces: [ml]}"),
            policy("aws", spec="match: {providers: [aws]}"),
            policy("llm", subject="llm_call", rules="- name: u\n  requireTags: {keys: [user]}"),
        )

    def test_index_by_type_provider_kind(self, ps: PolicySet) -> None:
        assert [p.name for p in ps.candidates(res())] == ["jobs"]
        assert [p.name for p in ps.candidates(res(provider="aws", kind="ec2-instance"))] == ["aws"]
        assert [p.name for p in ps.candidates(res(kind="Pod"))] == []
        assert [p.name for p in ps.candidates(call())] == ["llm"]

    def test_candidates_are_memoised(self, ps: PolicySet) -> None:
        first = ps.candidates(res())
        assert ("resource", "kubernetes", "Job") in ps._candidates
        assert ps.candidates(res(name="other", namespace="x")) is first

    def test_cache_does_not_remember_namespace_or_tags(self, ps: PolicySet) -> None:
        assert len(ps.evaluate(res(namespace="ml"), now=NOW).results) == 1
        assert ps.evaluate(res(namespace="dev"), now=NOW).results == ()
        assert len(ps.evaluate(res(namespace="ml"), now=NOW).results) == 1
        assert ps.evaluate(res(namespace="ml", tags={"team": "a"}), now=NOW).verdict == "allow"

    def test_with_clock_starts_a_fresh_cache(self, ps: PolicySet) -> None:
        ps.candidates(res())
        other = ps.with_clock(lambda: NOW)
        assert other._candidates == {}
        assert [p.name for p in other.candidates(res())] == ["jobs"]

    def test_inspection(self, ps: PolicySet) -> None:
        assert len(ps) == 3
        assert ps.names == ["jobs", "aws", "llm"]
        assert [p.name for p in ps] == ps.names
        found = ps.get("aws")
        assert found is not None
        assert found.subject_type == "resource"
        assert ps.get("nope") is None


class TestDecisionJson:
    def test_round_trips_through_json(self, compile_policies: CompilePolicies) -> None:
        rules = (
            "- name: team\n  requireTags: {keys: [team], values: {env: '^p'}, defaults: {team: x, env: prod}}\n"
            "- name: spot\n  spotOnly: {fix: {platform: gke}}"
        )
        ps = compile_policies(policy(rules=rules))
        subject = res(
            namespace="ml",
            tags={"env": "dev"},
            workload={"class": "batch", "gpus": 8, "gpu_type": "H100"},
            raw={"metadata": {}, "spec": {"template": {"spec": {}}}},
            tags_pointer="/metadata/labels",
            pod_spec_pointers=["/spec/template/spec"],
            source={"file": "job.yaml", "line": 4, "pointer": "/0"},
        )
        d = ps.evaluate(subject, surface="admission", now=NOW)
        text = d.to_json()
        data = json.loads(text)
        assert data == d.to_dict()
        assert data["schema"] == DECISION_SCHEMA_VERSION
        assert (data["surface"], data["verdict"]) == ("admission", "deny")
        assert data["subject"] == {
            "type": "resource",
            "provider": "kubernetes",
            "kind": "Job",
            "name": "train",
            "namespace": "ml",
            "source": {"file": "job.yaml", "line": 4, "pointer": "/0"},
        }
        assert data["counts"]["fail"] == 2
        team, spot = data["results"]
        assert team["expected"] == {"keys": ["team"], "values": {"env": "^p"}}
        assert team["fix"]["target"] == "object"
        assert team["fix"]["patch"][0]["op"] == "add"
        assert spot["savings_usd_month"] > 0
        assert json.loads(d.to_json(indent=2, sort_keys=True)) == data

    def test_empty_decision(self, compile_policies: CompilePolicies) -> None:
        d = compile_policies(policy()).evaluate(call(), now=NOW)
        assert isinstance(d, Decision)
        data = json.loads(d.to_json())
        assert (data["verdict"], data["results"]) == ("allow", [])
        assert data["subject"]["namespace"] is None


class TestThreads:
    def test_same_results_from_eight_threads(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(
            policy("jobs", spec="match: {kinds: ['*Job']}\nexclude: {namespaces: [kube-system]}"),
            policy(
                "spot",
                rules="- name: s\n  spotOnly: {}\n- name: c\n  maxHourlyCost: {limitUsd: 20}",
                spec="enforcement: {default: deny, admission: warn}",
            ),
            policy("when", spec="match: {when: 'subject.workload.gpus > 1.0'}"),
            exemption(match="{names: ['exempt-*']}", policies="[{policy: jobs}]"),
        )
        subjects = [
            res(
                kind=kind,
                name=f"{prefix}{i}",
                namespace=ns,
                tags={"team": "ml"} if i % 3 == 0 else {},
                capacity=capacity,
                workload={"class": "batch", "gpus": i % 4, "gpu_type": "H100"},
            )
            for i, (kind, prefix, ns, capacity) in enumerate(
                (k, p, n, c)
                for k in ("Job", "CronJob", "Pod")
                for p in ("exempt-", "run-")
                for n in ("ml", "kube-system", None)
                for c in ("spot", "on-demand")
            )
        ]
        surfaces = ("ci", "admission")
        expected = {(i, s): ps.evaluate(x, surface=s, now=NOW) for i, x in enumerate(subjects) for s in surfaces}
        fresh = ps.with_clock(lambda: NOW)  # an empty candidate cache, filled by the threads at once
        barrier = threading.Barrier(8)

        def work(seed: int) -> dict[tuple[int, str], Decision]:
            barrier.wait()
            out = {}
            order = list(enumerate(subjects))
            order = order[seed:] + order[:seed]
            for _ in range(5):
                for i, subject in order:
                    for surface in surfaces:
                        out[(i, surface)] = fresh.evaluate(subject, surface=surface)  # type: ignore[arg-type]
            return out

        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(work, range(8)))
        assert any(d.verdict == "deny" for d in expected.values())
        assert any(d.verdict == "allow" for d in expected.values())
        for outcome in outcomes:
            assert outcome == expected
        assert len(fresh._candidates) == 3


def test_clock_defaults_to_utc_now(compile_policies: CompilePolicies) -> None:
    ps = compile_policies(policy(), exemption(expires=(datetime.now(UTC) + timedelta(days=1)).isoformat()))
    assert ps.evaluate(res()).verdict == "allow"
    expired = compile_policies(policy(), exemption(expires=(datetime.now(UTC) - timedelta(days=1)).isoformat()))
    assert expired.evaluate(res()).verdict == "deny"


def test_every_result_has_every_field_of_its_kind(builtin_policies: PolicySet) -> None:
    """Results are built as plain tuples on the hot path: each must still hold all of RuleResult's
    fields, in their order (a field added to RuleResult without its builder fails here)."""
    from costwarden.adapters.anthropic import subject_from_request
    from costwarden.engine.decision import RuleResult

    body = {"model": "claude-opus-4-1", "max_tokens": 64_000, "messages": [{"role": "user", "content": "hi"}]}
    decision = builtin_policies.evaluate(subject_from_request(body, feature="classify", user="u"), "runtime",
                                         ledger=MemoryLedger(), reserving=True)
    assert len(decision.results) >= 5
    for result in decision.results:
        assert len(result) == len(RuleResult._fields)
        policy = builtin_policies.get(result.policy)  # each field where its name says
        assert policy is not None and result.rule in [r.name for r in policy.rules]
        assert result.result in ("pass", "fail", "warn", "skip", "error") and result.effect in (
            "deny", "warn", "audit", "off")
        assert result.severity in ("info", "low", "medium", "high", "critical") and isinstance(result.message, str)
        assert isinstance(result.holds, tuple) and (result.fix is None or result.fix.patch)
        assert all(h.key.startswith("budget:") for h in result.holds)
