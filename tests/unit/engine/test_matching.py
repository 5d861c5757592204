"""Matching: providers, kind globs, namespaces, names, label selectors, CEL ``when``, exclude."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from costwarden.engine.cel import CelCompileError, CelEvalError
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.matching import ANY, Matcher, compile_selector, glob_pattern, subject_tags
from costwarden.engine.schema import ExemptionMatch, LabelSelector, Match
from costwarden.engine.subjects import Subject, UnknownTags, subject_from_dict

CompilePolicies = Callable[..., PolicySet]


def resource(**fields: Any) -> Subject:
    data: dict[str, Any] = {"type": "resource", "provider": "kubernetes", "kind": "Job", "name": "train"}
    data.update(fields)
    return subject_from_dict(data)


def llm_call(**fields: Any) -> Subject:
    data: dict[str, Any] = {"type": "llm_call", "provider": "anthropic", "model": "claude-haiku-4-5"}
    data.update(fields)
    return subject_from_dict(data)


def matcher(**match: Any) -> Matcher:
    built = Matcher.build(Match.model_validate(match))
    assert built is not None
    return built


class TestProviders:
    def test_listed_provider_matches(self) -> None:
        m = matcher(providers=["aws", "kubernetes"])
        assert m.matches(resource())
        assert m.matches(resource(provider="aws"))
        assert not m.matches(resource(provider="gcp"))

    def test_star_and_unset_match_every_provider(self) -> None:
        assert matcher(providers=["*"]).matches(resource(provider="anything"))
        assert matcher().matches(resource(provider="anything"))

    def test_provider_is_exact_not_glob_or_case_folded(self) -> None:
        m = matcher(providers=["aws"])
        assert not m.matches(resource(provider="AWS"))
        assert not m.matches(resource(provider="aws-gov"))

    def test_empty_provider_list_matches_nothing_like_other_lists(self) -> None:
        """An empty OR list admits nothing: ``kinds: []`` and ``namespaces: []`` already behave so."""
        assert not matcher(kinds=[]).matches(resource())
        assert not matcher(namespaces=[]).matches(resource(namespace="default"))
        assert not matcher(providers=[]).matches(resource())


class TestKinds:
    @pytest.mark.parametrize(
        ("globs", "provider", "kind", "expected"),
        [
            (["Job"], "kubernetes", "Job", True),
            (["Job"], "kubernetes", "CronJob", False),
            (["*Job"], "kubernetes", "CronJob", True),
            (["kubernetes/Job"], "kubernetes", "Job", True),
            (["kubernetes/Job"], "terraform", "Job", False),
            (["kubernetes/*"], "kubernetes", "Deployment", True),
            (["kubernetes/*"], "aws", "Deployment", False),
            (["aws/*"], "aws", "ec2-instance", True),
            (["terraform/aws_sagemaker_*"], "terraform", "aws_sagemaker_endpoint", True),
            (["terraform/aws_sagemaker_*"], "terraform", "aws_instance", False),
            (["job"], "kubernetes", "Job", False),
            (["Deployment", "Job"], "kubernetes", "Job", True),
            (["J?b"], "kubernetes", "Job", True),
            (["[JC]ob"], "kubernetes", "Cob", True),
            (["*"], "x", "anything", True),
        ],
    )
    def test_globs_on_kind_or_provider_kind(self, globs: list[str], provider: str, kind: str, expected: bool) -> None:
        m = matcher(kinds=globs)
        assert m.matches_kind(provider, kind) is expected
        assert m.matches(resource(provider=provider, kind=kind)) is expected

    def test_glob_is_anchored(self) -> None:
        m = matcher(kinds=["Job"])
        assert not m.matches_kind("kubernetes", "JobSet")
        assert not m.matches_kind("kubernetes", "MyJob")

    def test_llm_call_kind_is_its_api(self) -> None:
        m = matcher(kinds=["anthropic/messages"])
        assert m.matches(llm_call())
        assert not m.matches(llm_call(request={"api": "batches"}))

    def test_glob_pattern_none_means_unconstrained(self) -> None:
        assert glob_pattern(None) is None
        assert glob_pattern(["a", "*"]) is ANY  # "*" matches everything, subjects without a value too
        empty = glob_pattern([])
        assert empty is not None
        assert empty.match("") is None
        assert empty.match("anything") is None


class TestNamespaces:
    def test_listed_namespace(self) -> None:
        m = matcher(namespaces=["ml", "team-*"])
        assert m.matches(resource(namespace="ml"))
        assert m.matches(resource(namespace="team-search"))
        assert not m.matches(resource(namespace="default"))

    def test_subject_without_namespace_only_matches_star(self) -> None:
        assert not matcher(namespaces=["*-prod", "default"]).matches(resource())
        assert not matcher(namespaces=["?*"]).matches(resource())
        assert matcher(namespaces=["*"]).matches(resource())
        assert matcher().matches(resource())

    def test_llm_calls_have_no_namespace(self) -> None:
        assert not matcher(namespaces=["default"]).matches(llm_call())
        assert matcher(namespaces=["*"]).matches(llm_call())


class TestNames:
    def test_name_globs(self) -> None:
        m = matcher(names=["train-*", "eval"])
        assert m.matches(resource(name="train-7b"))
        assert m.matches(resource(name="eval"))
        assert not m.matches(resource(name="serve"))
        assert not m.matches(resource(name="eval-2"))

    def test_llm_call_name_is_its_feature(self) -> None:
        m = matcher(names=["search"])
        assert m.matches(llm_call(feature="search"))
        assert not m.matches(llm_call(feature="chat"))
        assert not m.matches(llm_call())


def selector(**spec: Any) -> Matcher:
    return matcher(selector=spec)


class TestSelector:
    def test_match_labels_all_pairs(self) -> None:
        m = selector(matchLabels={"team": "ml", "env": "prod"})
        assert m.matches(resource(tags={"team": "ml", "env": "prod", "x": "y"}))
        assert not m.matches(resource(tags={"team": "ml"}))
        assert not m.matches(resource(tags={"team": "ml", "env": "dev"}))

    @pytest.mark.parametrize(
        ("tags", "expected"),
        [({"env": "prod"}, True), ({"env": "staging"}, True), ({"env": "dev"}, False), ({}, False)],
    )
    def test_in(self, tags: dict[str, str], expected: bool) -> None:
        m = selector(matchExpressions=[{"key": "env", "operator": "In", "values": ["prod", "staging"]}])
        assert m.matches(resource(tags=tags)) is expected

    @pytest.mark.parametrize(
        ("tags", "expected"),
        [({"env": "prod"}, False), ({"env": "dev"}, True), ({}, True), ({"other": "prod"}, True)],
    )
    def test_not_in_matches_absent_key_like_kubernetes(self, tags: dict[str, str], expected: bool) -> None:
        m = selector(matchExpressions=[{"key": "env", "operator": "NotIn", "values": ["prod"]}])
        assert m.matches(resource(tags=tags)) is expected

    @pytest.mark.parametrize(("tags", "expected"), [({"gpu": ""}, True), ({"gpu": "a"}, True), ({}, False)])
    def test_exists(self, tags: dict[str, str], expected: bool) -> None:
        m = selector(matchExpressions=[{"key": "gpu", "operator": "Exists"}])
        assert m.matches(resource(tags=tags)) is expected

    @pytest.mark.parametrize(("tags", "expected"), [({"gpu": ""}, False), ({"gpu": "a"}, False), ({}, True)])
    def test_does_not_exist(self, tags: dict[str, str], expected: bool) -> None:
        m = selector(matchExpressions=[{"key": "gpu", "operator": "DoesNotExist"}])
        assert m.matches(resource(tags=tags)) is expected

    def test_labels_and_expressions_are_anded(self) -> None:
        m = selector(
            matchLabels={"team": "ml"},
            matchExpressions=[
                {"key": "env", "operator": "In", "values": ["prod"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        )
        assert m.matches(resource(tags={"team": "ml", "env": "prod"}))
        assert not m.matches(resource(tags={"team": "ml", "env": "prod", "legacy": "1"}))
        assert not m.matches(resource(tags={"team": "ds", "env": "prod"}))

    def test_empty_selector_matches_everything(self) -> None:
        everything = compile_selector(LabelSelector())
        assert everything is not None and everything({}, UnknownTags()) and everything({"a": "b"}, UnknownTags())
        assert compile_selector(None) is None
        assert selector().matches(resource())

    def test_a_tag_value_known_only_after_apply_satisfies_no_requirement(self) -> None:
        plan = resource(provider="terraform", tags={"env": "(known after apply)", "team": "ml"},
                        unknown_tags={"values": ["env"]})
        for spec in ({"matchLabels": {"env": "(known after apply)"}},
                     {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]},
                     {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}):
            assert not selector(**spec).matches(plan), spec
        assert selector(matchExpressions=[{"key": "env", "operator": "Exists"}]).matches(plan)  # the key is there
        assert selector(matchLabels={"team": "ml"}).matches(plan)  # known values judge as ever
        # the same text without the fact is an ordinary value
        assert selector(matchLabels={"env": "(known after apply)"}).matches(
            resource(provider="terraform", tags={"env": "(known after apply)"}))

    def test_a_key_default_tags_may_add_is_proven_neither_present_nor_absent(self) -> None:
        plan = resource(provider="terraform", tags={"team": "ml"},
                        unknown_tags={"incomplete": "default_tags = local.base", "incomplete_keys": ["owner"]})
        for op in ("Exists", "DoesNotExist", "NotIn"):
            spec = {"key": "owner", "operator": op, **({"values": ["x"]} if op == "NotIn" else {})}
            assert not selector(matchExpressions=[spec]).matches(plan), op
        assert selector(matchExpressions=[{"key": "legacy", "operator": "DoesNotExist"}]).matches(plan)

    def test_llm_call_selector_sees_attribution(self) -> None:
        m = selector(matchLabels={"feature": "search", "user": "alice"})
        call = llm_call(feature="search", user="alice")
        assert subject_tags(call) == {"feature": "search", "user": "alice"}
        assert m.matches(call)
        assert not m.matches(llm_call(feature="search"))


class TestWhen:
    def test_true_and_false(self) -> None:
        m = matcher(when="subject.workload.gpus > 0")
        assert m.matches(resource(workload={"gpus": 1}))
        assert not m.matches(resource(workload={"gpus": 0}))

    def test_sees_the_subject_dict(self) -> None:
        m = matcher(when='subject.tags.team == "ml" && subject.kind == "Job"')
        assert m.matches(resource(tags={"team": "ml"}))
        assert not m.matches(resource(tags={"team": "ml"}, kind="Pod"))

    def test_error_raises_cel_eval_error(self) -> None:
        m = matcher(when='subject.tags.team == "ml"')
        with pytest.raises(CelEvalError):
            m.matches(resource(tags={}))

    def test_non_boolean_is_an_error(self) -> None:
        m = matcher(when="subject.name")
        with pytest.raises(CelEvalError, match="expected a boolean"):
            m.matches(resource())

    def test_when_runs_only_after_cheaper_checks(self) -> None:
        m = matcher(namespaces=["ml"], when='subject.tags.team == "ml"')
        assert not m.matches(resource(namespace="other", tags={}))  # would raise if evaluated

    def test_invalid_when_fails_at_build(self) -> None:
        with pytest.raises(CelCompileError):
            matcher(when="subject.name ==")

    def test_is_empty(self) -> None:
        assert matcher().is_empty
        assert not matcher(when="true").is_empty
        assert not matcher(names=["x"]).is_empty


class TestExemptionMatch:
    def test_has_no_selector_or_when(self) -> None:
        built = Matcher.build(ExemptionMatch(names=["train"], namespaces=["ml"]))
        assert built is not None
        assert built.selector is None
        assert built.when is None
        assert built.matches(resource(namespace="ml"))
        assert not built.matches(resource(namespace="ml", name="other"))

    def test_none_builds_none(self) -> None:
        assert Matcher.build(None) is None


def _policy(match: str, exclude: str = "") -> str:
    return f"""
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {{name: tagged}}
spec:
  subject: resource
  match: {match}
  {exclude}
  rules:
    - name: team
      requireTags: {{keys: [team]}}
"""


class TestExcludeInPolicies:
    def test_exclude_namespace(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(_policy("{}", "exclude: {namespaces: [kube-system]}"))
        assert ps.evaluate(resource(namespace="kube-system")).results == ()
        assert ps.evaluate(resource(namespace="default")).verdict == "deny"
        # a subject without a namespace is not in kube-system
        assert ps.evaluate(resource()).verdict == "deny"

    def test_exclude_selector_and_when(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(
            _policy(
                "{kinds: [Job]}",
                'exclude: {selector: {matchLabels: {tier: free}}, when: "subject.workload.gpus == 0"}',
            )
        )
        assert ps.evaluate(resource(tags={"tier": "free"})).results == ()
        assert len(ps.evaluate(resource(tags={"tier": "free"}, workload={"gpus": 1})).results) == 1
        assert len(ps.evaluate(resource(tags={"tier": "paid"})).results) == 1

    def test_match_filters_before_rules(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(_policy("{providers: [aws], kinds: [ec2-*]}"))
        assert ps.evaluate(resource()).results == ()
        decision = ps.evaluate(resource(provider="aws", kind="ec2-instance"))
        assert [r.rule for r in decision.results] == ["team"]

    def test_when_error_is_an_error_result(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(_policy('{when: "subject.tags.team == \\"ml\\""}'))
        decision = ps.evaluate(resource(tags={}))
        [result] = decision.results
        assert result.result == "error"
        assert result.rule == "match"
        assert "match.when failed" in result.message
        assert decision.verdict == "deny"

    def test_exclude_when_error_is_an_error_result(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(_policy("{}", 'exclude: {when: "subject.tags.tier == \\"free\\""}'))
        [result] = ps.evaluate(resource(tags={"team": "ml"})).results
        assert result.result == "error"


class TestSelectorRequirementsAreValidated:
    """As in Kubernetes: In/NotIn need values (else the policy silently matches nothing), and
    Exists/DoesNotExist take none. A bad selector is a positioned load error, never skipped."""

    @pytest.mark.parametrize(
        ("expression", "message"),
        [
            ("{key: team, operator: In, values: []}", "operator In needs a non-empty 'values' list"),
            ("{key: team, operator: NotIn}", "operator NotIn needs a non-empty 'values' list"),
            ("{key: team, operator: Exists, values: [ml]}", "operator Exists takes no 'values'; remove them"),
            ("{key: team, operator: DoesNotExist, values: [ml]}", "operator DoesNotExist takes no 'values'"),
        ],
    )
    def test_values_must_fit_the_operator(
        self, compile_policies: CompilePolicies, expression: str, message: str
    ) -> None:
        from costwarden.errors import PolicyError

        text = (
            "apiVersion: costwarden.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  subject: resource\n"
            "  match:\n    selector:\n      matchExpressions:\n"
            "        - {key: env, operator: Exists}\n"
            f"        - {expression}\n"
            "  rules:\n    - name: r\n      requireTags: {keys: [team]}\n"
        )
        with pytest.raises(PolicyError) as info:
            compile_policies(text)
        [d] = info.value.diagnostics
        assert (d.code, d.line, d.column) == ("invalid-value", 10, 11)
        assert message in d.message
