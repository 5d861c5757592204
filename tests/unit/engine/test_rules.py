"""Each rule kind: pass / fail / skip / error, messages, expected and actual, fixes and savings.

Fixes are applied with the ``jsonpatch`` library (an independent RFC 6902 implementation); a fixed
object must then pass, and the fix recomputed on the fixed object must be empty (idempotent).
"""

from __future__ import annotations

import copy
import textwrap
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import jsonpatch
import pytest

from costwarden.adapters.ledger.memory import MemoryLedger
from costwarden.engine import patch
from costwarden.engine.catalog import HOURS_PER_MONTH
from costwarden.engine.decision import Fix, RuleResult
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.rules.budget import OUTPUT_TOKENS_CAP
from costwarden.engine.subjects import LlmCall, LlmRequest, Resource, ServingConfig, Subject, replace, subject_from_dict
from costwarden.errors import LedgerError, PolicyError

CompilePolicies = Callable[..., PolicySet]
NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def policy(rule: str, *, subject: str = "llm_call", name: str = "p", spec: str = "") -> str:
    """A Policy document with one rule named ``r`` whose body is ``rule`` (YAML)."""
    body = textwrap.indent(textwrap.dedent(rule).strip("\n"), " " * 6)
    extra = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    return (
        "apiVersion: costwarden.dev/v1\nkind: Policy\n"
        f"metadata: {{name: {name}}}\nspec:\n  subject: {subject}\n{extra}\n"
        f"  rules:\n    - name: r\n{body}\n"
    )


def results(ps: PolicySet, subject: Subject, **kwargs: Any) -> list[RuleResult]:
    kwargs.setdefault("now", NOW)
    return list(ps.evaluate(subject, **kwargs).results)


def one(ps: PolicySet, subject: Subject, **kwargs: Any) -> RuleResult:
    [result] = results(ps, subject, **kwargs)
    return result


def apply_fix(doc: Mapping[str, Any], fix: Fix) -> dict[str, Any]:
    """The fixed document; the original is left untouched."""
    original = copy.deepcopy(dict(doc))
    patched: dict[str, Any] = jsonpatch.apply_patch(original, [dict(op) for op in fix.patch], in_place=False)
    assert original == doc
    return patched


def call(**fields: Any) -> LlmCall:
    data: dict[str, Any] = {"type": "llm_call", "provider": "anthropic", "model": "claude-sonnet-4-5"}
    data.update(fields)
    s = subject_from_dict(data)
    assert isinstance(s, LlmCall)
    return s


def res(**fields: Any) -> Resource:
    data: dict[str, Any] = {"type": "resource", "provider": "kubernetes", "kind": "Job", "name": "train"}
    data.update(fields)
    s = subject_from_dict(data)
    assert isinstance(s, Resource)
    return s


def serving(**fields: Any) -> ServingConfig:
    data: dict[str, Any] = {"type": "serving_config", "model": "Qwen/Qwen3-8B", "gpus": 1, "gpu_type": "H100"}
    data.update(fields)
    s = subject_from_dict(data)
    assert isinstance(s, ServingConfig)
    return s


def error_codes(exc: pytest.ExceptionInfo[PolicyError]) -> list[str]:
    return [d.code for d in exc.value.diagnostics]


# --- requireTags --------------------------------------------------------------------------------

TAGS_RULE = """
requireTags:
  keys: [team, environment]
  values: {environment: "^(prod|staging|dev)$"}
"""


class TestRequireTags:
    @pytest.fixture
    def ps(self, compile_policies: CompilePolicies) -> PolicySet:
        return compile_policies(policy(TAGS_RULE, subject="resource"))

    def test_pass(self, ps: PolicySet) -> None:
        r = one(ps, res(tags={"team": "ml", "environment": "prod"}))
        assert r.result == "pass"
        assert r.message == "required tags present: team, environment"
        assert r.path == "tags"
        assert r.fix is None

    def test_missing_keys(self, ps: PolicySet) -> None:
        r = one(ps, res(tags={"environment": "dev"}))
        assert (r.result, r.effect) == ("fail", "deny")
        assert r.message == "missing required tag: team"
        assert r.expected == {"keys": ["team", "environment"], "values": {"environment": "^(prod|staging|dev)$"}}
        assert r.actual == {"team": None}
        r = one(ps, res())
        assert r.message == "missing required tags: team, environment"

    def test_empty_value_is_missing(self, ps: PolicySet) -> None:
        r = one(ps, res(tags={"team": "", "environment": "prod"}))
        assert r.result == "fail"
        assert r.actual == {"team": ""}

    def test_value_regex(self, ps: PolicySet) -> None:
        r = one(ps, res(tags={"team": "ml", "environment": "production"}))
        assert r.result == "fail"
        assert r.message == "tag 'environment'='production' does not match ^(prod|staging|dev)$"
        assert r.actual == {"environment": "production"}

    def test_regex_is_searched_not_full_matched(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy("requireTags: {values: {cost-center: '[0-9]{4}'}}", subject="resource"))
        assert one(ps, res(tags={"cost-center": "cc-1234-x"})).result == "pass"
        assert one(ps, res(tags={"cost-center": "cc-12"})).result == "fail"
        # a value regex alone does not require the key
        r = one(ps, res())
        assert (r.result, r.message) == ("pass", "tag values valid")

    def test_llm_call_uses_attribution(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy("requireTags: {keys: [feature, user]}"))
        assert one(ps, call(feature="search", user="alice")).result == "pass"
        assert one(ps, call(tags={"feature": "search", "user": "alice"})).result == "pass"
        r = one(ps, call(feature="search"))
        assert (r.result, r.message) == ("fail", "missing required tag: user")
        assert r.fix is None  # nothing on a request body to patch

    def test_custom_message_and_severity(self, compile_policies: CompilePolicies) -> None:
        rule = "requireTags: {keys: [team]}\nmessage: label your workload\nseverity: critical"
        text = policy(rule, subject="resource")
        r = one(compile_policies(text), res())
        assert r.message == "label your workload (missing required tag: team)"
        assert r.severity == "critical"

    def test_path_is_the_tags_pointer(self, ps: PolicySet) -> None:
        r = one(ps, res(tags_pointer="/metadata/labels"))
        assert r.path == "/metadata/labels"

    def test_invalid_regex_is_a_policy_error(self, compile_policies: CompilePolicies) -> None:
        with pytest.raises(PolicyError) as info:
            compile_policies(policy("requireTags: {values: {env: '(unclosed'}}", subject="resource"))
        assert error_codes(info) == ["invalid-regex"]

    @pytest.mark.parametrize(
        ("raw", "pointer"),
        [
            ({"metadata": {"name": "train", "labels": {"app": "x"}}}, "/metadata/labels"),
            ({"metadata": {"name": "train"}}, "/metadata/labels"),
            ({"kind": "Deployment"}, "/spec/template/metadata/labels"),
            ({"metadata": {"labels": {"team": "ml", "environment": "qa"}}}, "/metadata/labels"),
        ],
    )
    def test_fix_adds_defaults_then_passes(
        self, compile_policies: CompilePolicies, raw: dict[str, Any], pointer: str
    ) -> None:
        rule = TAGS_RULE + "  defaults: {team: unassigned, environment: dev}\n"
        ps = compile_policies(policy(rule, subject="resource"))
        tags = patch.resolve(raw, pointer) or {}
        subject = res(tags=tags, raw=raw, tags_pointer=pointer)
        r = one(ps, subject)
        assert r.result == "fail"
        assert r.fix is not None
        assert r.fix.target == "object"
        assert r.fix.description.startswith("add tags ")
        fixed = apply_fix(raw, r.fix)
        new_tags = patch.resolve(fixed, pointer)
        assert new_tags["team"] in ("unassigned", "ml")
        assert new_tags["environment"] == "dev"
        # other labels survive
        for key, value in tags.items():
            if key not in ("team", "environment"):
                assert new_tags[key] == value
        after = one(ps, replace(subject, tags=new_tags, raw=fixed))
        assert after.result == "pass"
        assert after.fix is None
        # the same fix computed on the fixed object changes nothing
        stale = one(ps, replace(subject, raw=fixed))
        assert stale.fix is not None
        assert stale.fix.patch == ()
        assert apply_fix(fixed, r.fix) == fixed  # and re-applying the original fix is a no-op

    def test_no_fix_without_a_default_for_every_problem(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy(TAGS_RULE + "  defaults: {team: unassigned}\n", subject="resource"))
        raw: dict[str, Any] = {"metadata": {}}
        assert one(ps, res(raw=raw, tags_pointer="/metadata/labels")).fix is None
        assert one(ps, res(tags={"environment": "dev"}, raw=raw, tags_pointer="/metadata/labels")).fix is not None

    def test_no_fix_without_raw_or_pointer(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy("requireTags: {keys: [team], defaults: {team: x}}", subject="resource"))
        assert one(ps, res()).fix is None
        assert one(ps, res(raw={"metadata": {}})).fix is None
        assert one(ps, res(raw={"metadata": {}}, tags_pointer="/metadata/labels")).fix is not None

    def test_serving_config_tags(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy("requireTags: {keys: [team]}", subject="serving_config"))
        assert one(ps, serving(tags={"team": "inference"})).result == "pass"
        assert one(ps, serving()).result == "fail"


# --- spotOnly -----------------------------------------------------------------------------------

JOB_RAW: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "train"},
    "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}},
}
RAY_RAW: dict[str, Any] = {
    "kind": "RayJob",
    "spec": {
        "rayClusterSpec": {
            "headGroupSpec": {"template": {"spec": {"nodeSelector": {"pool": "a"}}}},
            "workerGroupSpecs": [
                {"template": {"spec": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}}},
            ],
        }
    },
}
RAY_POINTERS = [
    "/spec/rayClusterSpec/headGroupSpec/template/spec",
    "/spec/rayClusterSpec/workerGroupSpecs/0/template/spec",
]


def _pinned(raw: Any, pointers: tuple[str, ...], key: str, value: str) -> bool:
    """What an adapter would conclude: every pod spec selects the spot label."""
    return all((patch.resolve(raw, p + "/nodeSelector") or {}).get(key) == value for p in pointers)


class TestSpotOnly:
    @pytest.fixture
    def ps(self, compile_policies: CompilePolicies) -> PolicySet:
        return compile_policies(policy("spotOnly: {fix: {platform: karpenter}}", subject="resource"))

    def test_pass_on_spot(self, ps: PolicySet) -> None:
        r = one(ps, res(capacity="spot", workload={"class": "batch"}))
        assert (r.result, r.path) == ("pass", "capacity")
        assert r.message == "batch workload is pinned to spot capacity"

    @pytest.mark.parametrize("capacity", ["on-demand", "reserved"])
    def test_fail_names_capacity(self, ps: PolicySet, capacity: str) -> None:
        r = one(ps, res(capacity=capacity, workload={"class": "batch"}))
        assert r.result == "fail"
        assert r.message == f"batch workload is not pinned to spot capacity ({capacity})"
        assert (r.expected, r.actual, r.path) == ("spot", capacity, "capacity")

    def test_unknown_capacity_fails(self, ps: PolicySet) -> None:
        r = one(ps, res(workload={"class": "batch"}))
        assert r.result == "fail"
        assert r.message == "batch workload is not pinned to spot capacity"
        assert r.actual == "unknown"

    @pytest.mark.parametrize("cls", ["online", "training", "unknown"])
    def test_skips_other_classes(self, ps: PolicySet, cls: str) -> None:
        r = one(ps, res(workload={"class": cls}))
        assert r.result == "skip"
        assert r.message == f"{cls} workload; rule covers batch"

    def test_workload_classes_and_min_gpus(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy("spotOnly: {workloadClasses: [batch, training], minGpus: 1}", subject="resource"))
        assert one(ps, res(workload={"class": "training", "gpus": 2})).result == "fail"
        r = one(ps, res(workload={"class": "training", "gpus": 0}))
        assert r.result == "skip"
        assert "0 GPUs" in r.message
        assert one(ps, res(workload={"class": "online", "gpus": 4})).result == "skip"

    def test_savings_from_gpu_prices(self, ps: PolicySet) -> None:
        r = one(ps, res(capacity="on-demand", workload={"class": "batch", "gpus": 8, "gpu_type": "nvidia-h100-80gb"}))
        # H100: $6.88 on demand, $3.10 spot per GPU-hour in the built-in catalog
        assert r.savings_usd_month == pytest.approx(round(8 * 6.88 * (1 - 3.10 / 6.88) * HOURS_PER_MONTH, 2))

    def test_savings_from_instance_price_and_observed_hourly(self, ps: PolicySet) -> None:
        work = {"class": "batch", "instance_type": "p5.48xlarge", "replicas": 2}
        r = one(ps, res(workload=work))
        assert r.savings_usd_month == pytest.approx(round((55.04 - 24.77) * 2 * HOURS_PER_MONTH, 2))
        # an adapter's own hourly estimate scales the saving by the list spot discount
        r = one(ps, res(workload=work, hourly_usd=100.0))
        assert r.savings_usd_month == pytest.approx(round(100.0 * (1 - 24.77 / 55.04) * HOURS_PER_MONTH, 2))

    def test_no_savings_without_a_price(self, ps: PolicySet) -> None:
        assert one(ps, res(workload={"class": "batch", "gpus": 1, "gpu_type": "Z9000"})).savings_usd_month is None
        assert one(ps, res(workload={"class": "batch"})).savings_usd_month is None

    @pytest.mark.parametrize(
        ("platform", "key", "value", "toleration"),
        [
            ("karpenter", "karpenter.sh/capacity-type", "spot", False),
            ("eks", "eks.amazonaws.com/capacityType", "SPOT", False),
            ("gke", "cloud.google.com/gke-spot", "true", True),
            ("aks", "kubernetes.azure.com/scalesetpriority", "spot", True),
        ],
    )
    @pytest.mark.parametrize(("raw", "pointers"), [(JOB_RAW, ["/spec/template/spec"]), (RAY_RAW, RAY_POINTERS)])
    def test_fix_pins_every_pod_spec(
        self,
        compile_policies: CompilePolicies,
        platform: str,
        key: str,
        value: str,
        toleration: bool,
        raw: dict[str, Any],
        pointers: list[str],
    ) -> None:
        ps = compile_policies(policy(f"spotOnly: {{fix: {{platform: {platform}}}}}", subject="resource"))
        subject = res(capacity="on-demand", workload={"class": "batch"}, raw=raw, pod_spec_pointers=pointers)
        r = one(ps, subject)
        assert r.fix is not None
        assert r.fix.target == "object"
        assert platform in r.fix.description
        assert key in r.fix.description
        fixed = apply_fix(raw, r.fix)
        for pointer in pointers:
            spec = patch.resolve(fixed, pointer)
            assert spec["nodeSelector"][key] == value
            tolerations = spec.get("tolerations", [])
            assert any(t.get("key") == key for t in tolerations) is toleration
            before = patch.resolve(raw, pointer)
            for name, v in (before.get("nodeSelector") or {}).items():
                assert spec["nodeSelector"][name] == v  # existing selectors survive
            for t in before.get("tolerations") or []:
                assert t in tolerations
        assert _pinned(fixed, subject.pod_spec_pointers, key, value)
        after = one(ps, replace(subject, capacity="spot", raw=fixed))
        assert (after.result, after.fix) == ("pass", None)
        recomputed = one(ps, replace(subject, raw=fixed))
        assert recomputed.fix is not None
        assert recomputed.fix.patch == ()

    def test_no_fix_without_platform_raw_or_pointers(self, compile_policies: CompilePolicies) -> None:
        plain = compile_policies(policy("spotOnly: {}", subject="resource"))
        work = {"class": "batch"}
        assert one(plain, res(workload=work, raw=JOB_RAW, pod_spec_pointers=["/spec/template/spec"])).fix is None
        ps = compile_policies(policy("spotOnly: {fix: {platform: gke}}", subject="resource"))
        assert one(ps, res(workload=work, pod_spec_pointers=["/spec/template/spec"])).fix is None
        assert one(ps, res(workload=work, raw=JOB_RAW)).fix is None

    def test_resource_only(self, compile_policies: CompilePolicies) -> None:
        with pytest.raises(PolicyError) as info:
            compile_policies(policy("spotOnly: {}", subject="llm_call"))
        assert error_codes(info) == ["wrong-subject"]


# --- allowedModels ------------------------------------------------------------------------------

MODELS_RULE = """
allowedModels:
  byFeature:
    classify: ["tier:simple"]
    code: ["tier:complex", "tier:standard"]
    legacy: ["gpt-4o-mini*", "claude-3-haiku-*"]
  default: ["tier:standard", "tier:simple"]
"""


class TestAllowedModels:
    @pytest.fixture
    def ps(self, compile_policies: CompilePolicies, fake_pricer: Any) -> PolicySet:
        return compile_policies(policy(MODELS_RULE), pricer=fake_pricer)

    @pytest.mark.parametrize(
        ("feature", "model"),
        [
            ("classify", "claude-haiku-4-5"),
            ("classify", "anthropic/Claude-Haiku-4-5-20251001"),
            ("code", "claude-opus-4-1"),
            ("code", "claude-sonnet-4-5"),
            ("legacy", "gpt-4o-mini-2024-07-18"),
            ("chat", "claude-sonnet-4-5"),
            (None, "gpt-4.1-mini"),
        ],
    )
    def test_pass(self, ps: PolicySet, feature: str | None, model: str) -> None:
        r = one(ps, call(feature=feature, model=model))
        assert r.result == "pass"
        assert r.path == "model"
        assert model in r.message

    def test_a_glob_naming_an_organisation_allows_only_its_models(
        self, compile_policies: CompilePolicies, fake_pricer: Any
    ) -> None:
        """``meta-llama/*`` once became ``*`` (the part after the '/'), allowing every model."""
        ps = compile_policies(policy('allowedModels: {default: ["meta-llama/*"]}'), pricer=fake_pricer)
        assert one(ps, call(model="meta-llama/Llama-3.1-8B-Instruct")).result == "pass"
        assert one(ps, call(model="claude-sonnet-4-5")).result == "fail"
        assert one(ps, call(model="mistralai/Mistral-7B")).result == "fail"

    def test_fail_downgrades_to_the_allowed_tier(self, ps: PolicySet) -> None:
        body = {"model": "claude-sonnet-4-5", "max_tokens": 500, "messages": []}
        subject = call(feature="classify", request={"input_tokens": 1000, "max_tokens": 500}, body=body)
        r = one(ps, subject)
        assert r.result == "fail"
        assert r.message == (
            "model claude-sonnet-4-5 (tier standard) is not allowed for feature 'classify'; allowed: tier:simple"
        )
        assert (r.expected, r.actual) == (["tier:simple"], "claude-sonnet-4-5")
        assert r.fix is not None
        assert (r.fix.target, r.fix.description) == ("request", "downgrade model to claude-haiku-4-5")
        # sonnet $3/$15, haiku $1/$5 per MTok in the fake pricer
        assert r.savings_usd_per_call == pytest.approx((1000 * 2 + 500 * 10) / 1e6)
        fixed = apply_fix(body, r.fix)
        assert fixed == {**body, "model": "claude-haiku-4-5"}
        assert one(ps, replace(subject, model=fixed["model"], body=fixed)).result == "pass"
        assert apply_fix(fixed, r.fix) == fixed

    def test_downgrade_picks_the_most_capable_allowed_tier_below(self, ps: PolicySet) -> None:
        r = one(ps, call(feature="chat", model="claude-opus-4-1"))
        assert r.fix is not None
        assert r.fix.patch == ({"op": "replace", "path": "/model", "value": "claude-sonnet-4-5"},)
        r = one(ps, call(feature="chat", provider="openai", model="o3"))
        assert r.fix is not None
        assert r.fix.patch[0]["value"] == "gpt-4.1"

    def test_model_in_no_tier_without_a_price_is_not_rewritten(self, ps: PolicySet) -> None:
        """A fine-tune or a self-hosted model in no tier is refused, not swapped for the tier's
        model: that model may not stand in for it, nor be served by the endpoint (before, an
        OpenAI-compatible server's model was rewritten to gpt-4.1)."""
        r = one(ps, call(feature="classify", model="some-finetune"))
        assert (r.result, r.fix) == ("fail", None)
        assert "(in no catalog tier)" in r.message
        assert "not downgraded to claude-haiku-4-5" in r.message
        assert "ModelCatalog" in r.message
        r = one(ps, call(feature="classify", provider="openai", model="ft:gpt-4o-mini:acme::abc123"))
        assert (r.result, r.fix) == ("fail", None)

    def test_model_in_no_tier_known_to_cost_more_is_downgraded(self, ps: PolicySet) -> None:
        priced_as_opus = call(feature="classify", model="legacy-opus-preview", request={"input_tokens": 1000})
        r = one(ps, priced_as_opus)
        assert r.result == "fail"
        assert "(in no catalog tier)" in r.message
        assert r.fix is not None
        assert r.fix.patch[0]["value"] == "claude-haiku-4-5"
        assert r.savings_usd_per_call is not None and r.savings_usd_per_call > 0

    def test_a_call_without_output_is_not_swapped_for_a_tier_model(self, ps: PolicySet) -> None:
        """An embeddings call (``choices == 0``) sent to a chat model would be a 400: it is refused
        with no fix, even when its model is known to cost more than the tier's."""
        embeddings = call(feature="classify", model="legacy-opus-preview",
                          request={"input_tokens": 1000, "api": "embeddings", "max_tokens": None, "choices": 0})
        r = one(ps, embeddings)
        assert (r.result, r.fix) == ("fail", None)
        legacy = call(feature="classify", model="legacy-opus-preview", provider="openai",
                      request={"input_tokens": 1000, "api": "completions", "max_tokens": 16})
        r = one(ps, legacy)
        assert (r.result, r.fix) == ("fail", None)  # /completions would refuse a chat model

    def test_no_lower_allowed_tier_means_no_fix(self, ps: PolicySet) -> None:
        r = one(ps, call(feature="legacy", model="claude-haiku-4-5"))
        assert (r.result, r.fix) == ("fail", None)
        r = one(ps, call(feature="classify", provider="mistral", model="claude-sonnet-4-5"))
        assert (r.result, r.fix) == ("fail", None)

    def test_on_violation_deny_has_no_fix(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy(MODELS_RULE + "  onViolation: deny\n"))
        r = one(ps, call(feature="classify"))
        assert (r.result, r.effect, r.fix) == ("fail", "deny", None)

    def test_without_a_price_source_there_is_no_saving(self, compile_policies: CompilePolicies) -> None:
        r = one(compile_policies(policy(MODELS_RULE)), call(feature="classify"))
        assert r.fix is not None
        assert r.savings_usd_per_call is None

    def test_saving_uses_actual_usage_after_the_call(self, ps: PolicySet) -> None:
        usage = {"input_tokens": 2000, "output_tokens": 100}
        r = one(ps, call(feature="classify", phase="post", usage=usage, request={"max_tokens": 4000}))
        assert r.savings_usd_per_call == pytest.approx((2000 * 2 + 100 * 10) / 1e6)

    def test_skip_when_no_list_applies(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy("allowedModels: {byFeature: {classify: ['tier:simple']}}"))
        r = one(ps, call(feature="chat"))
        assert (r.result, r.message) == ("skip", "no model list for feature 'chat'")

    def test_input_token_range(self, compile_policies: CompilePolicies) -> None:
        rule = "allowedModels: {default: ['tier:simple'], inputTokens: {below: 8000, atLeast: 100}}"
        ps = compile_policies(policy(rule))
        assert one(ps, call(request={"input_tokens": 500})).result == "fail"
        for tokens in (8000, 50, 0):
            r = one(ps, call(request={"input_tokens": tokens}))
            assert r.result == "skip"
            assert f"~{tokens} input tokens" in r.message

    def test_star_allows_everything(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy("allowedModels: {default: ['*']}"))
        assert one(ps, call(model="anything-at-all")).result == "pass"

    def test_unknown_tier_is_a_policy_error(self, compile_policies: CompilePolicies) -> None:
        with pytest.raises(PolicyError) as info:
            compile_policies(policy("allowedModels: {default: ['tier:premium']}"))
        assert error_codes(info) == ["unknown-tier"]
        assert "simple" in (info.value.diagnostics[0].hint or "")


# --- requirePromptCaching -----------------------------------------------------------------------

SYSTEM_TEXT = "You are a careful assistant. " * 200


def _count_breakpoints(node: Any) -> int:
    if isinstance(node, dict):
        return ("cache_control" in node) + sum(_count_breakpoints(v) for v in node.values())
    if isinstance(node, list):
        return sum(_count_breakpoints(v) for v in node)
    return 0


class TestRequirePromptCaching:
    @pytest.fixture
    def ps(self, compile_policies: CompilePolicies, fake_pricer: Any) -> PolicySet:
        return compile_policies(policy("requirePromptCaching: {minTokens: 1000}"), pricer=fake_pricer)

    def test_other_providers_are_skipped(self, ps: PolicySet) -> None:
        r = one(ps, call(provider="openai", model="gpt-4.1", request={"cacheable_prefix_tokens": 90000}))
        assert (r.result, r.message) == ("skip", "openai caches prompts automatically")

    def test_threshold_is_the_larger_of_min_tokens_and_the_model_minimum(self, ps: PolicySet) -> None:
        r = one(ps, call(request={"cacheable_prefix_tokens": 1020}))  # sonnet caches from 1024
        assert r.result == "pass"
        assert (r.expected, r.actual) == (1024, 1020)
        assert r.message == "stable prefix ~1020 tokens is below the 1024-token threshold"
        r = one(ps, call(model="claude-haiku-4-5", request={"cacheable_prefix_tokens": 4000}))
        assert (r.result, r.expected) == ("pass", 4096)
        assert one(ps, call(model="claude-haiku-4-5", request={"cacheable_prefix_tokens": 4096})).result == "fail"
        assert one(ps, call(model="unknown-model", request={"cacheable_prefix_tokens": 1000})).result == "fail"

    def test_breakpoint_passes(self, ps: PolicySet) -> None:
        r = one(ps, call(request={"cacheable_prefix_tokens": 5000, "cache_breakpoints": 2}))
        assert r.result == "pass"
        assert r.path == "request.cache_breakpoints"
        assert "2 cache breakpoint(s)" in r.message

    def test_fail_message_expected_actual_and_saving(self, ps: PolicySet) -> None:
        r = one(ps, call(request={"cacheable_prefix_tokens": 5000, "prefix_pointer": "/system"}))
        assert r.result == "fail"
        assert r.message == "~5000-token stable prefix has no cache breakpoint (threshold 1024)"
        assert (r.path, r.expected, r.actual) == ("/system", "cache_control", None)
        # 5000 tokens billed as cache reads (0.1x) instead of fresh input at $3/MTok
        assert r.savings_usd_per_call == pytest.approx(5000 * 3 * 0.9 / 1e6)
        assert r.fix is None  # no body to patch

    def test_no_saving_for_an_unpriced_model(self, ps: PolicySet) -> None:
        r = one(ps, call(model="mystery", request={"cacheable_prefix_tokens": 5000}))
        assert (r.result, r.savings_usd_per_call, r.path) == ("fail", None, "request")

    @pytest.mark.parametrize(
        ("body", "pointer"),
        [
            ({"model": "claude-sonnet-4-5", "system": SYSTEM_TEXT, "messages": []}, "/system"),
            (
                {"model": "claude-sonnet-4-5", "system": [{"type": "text", "text": SYSTEM_TEXT}], "messages": []},
                "/system/0",
            ),
            (
                {"model": "claude-sonnet-4-5", "tools": [{"name": "a/b", "input_schema": {}}], "messages": []},
                "/tools/0",
            ),
        ],
    )
    @pytest.mark.parametrize("ttl", ["5m", "1h"])
    def test_fix_adds_a_cache_breakpoint(
        self, compile_policies: CompilePolicies, body: dict[str, Any], pointer: str, ttl: str
    ) -> None:
        ps = compile_policies(policy(f"requirePromptCaching: {{ttl: '{ttl}'}}"))
        subject = call(request={"cacheable_prefix_tokens": 3000, "prefix_pointer": pointer}, body=body)
        r = one(ps, subject)
        assert r.fix is not None
        assert r.fix.target == "request"
        assert r.fix.description == f"add cache_control ({ttl}) at {pointer}"
        fixed = apply_fix(body, r.fix)
        assert _count_breakpoints(fixed) == 1
        marker = {"type": "ephemeral"} if ttl == "5m" else {"type": "ephemeral", "ttl": "1h"}
        assert marker in _markers(fixed)
        if isinstance(body.get("system"), str):
            assert fixed["system"] == [{"type": "text", "text": SYSTEM_TEXT, "cache_control": marker}]
        request = LlmRequest(cacheable_prefix_tokens=3000, prefix_pointer=pointer, cache_breakpoints=1)
        after = one(ps, replace(subject, body=fixed, request=request))
        assert (after.result, after.fix) == ("pass", None)

    def test_fix_can_be_turned_off(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy("requirePromptCaching: {fix: false}"))
        body = {"system": SYSTEM_TEXT}
        r = one(ps, call(request={"cacheable_prefix_tokens": 3000, "prefix_pointer": "/system"}, body=body))
        assert (r.result, r.fix) == ("fail", None)

    def test_no_fix_when_pointer_does_not_resolve_to_a_block(self, ps: PolicySet) -> None:
        r = one(ps, call(request={"cacheable_prefix_tokens": 3000, "prefix_pointer": "/nope"}, body={"system": "x"}))
        assert (r.result, r.fix) == ("fail", None)

    @pytest.mark.parametrize(
        ("usage", "result"),
        [
            ({"input_tokens": 5000}, "fail"),
            ({"input_tokens": 100, "cache_read_tokens": 4900}, "pass"),
            ({"input_tokens": 100, "cache_write_1h_tokens": 4900}, "pass"),
            ({"input_tokens": 900}, "pass"),
        ],
    )
    @pytest.mark.parametrize(
        "request_",
        [{"cacheable_prefix_tokens": 0, "cache_breakpoints": 1}, {"cacheable_prefix_tokens": 3000}],
        ids=["breakpoint", "long-stable-prefix"],
    )
    def test_after_the_call_checks_usage(
        self, ps: PolicySet, usage: dict[str, int], result: str, request_: dict[str, int]
    ) -> None:
        r = one(ps, call(phase="post", usage=usage, request=request_))
        assert r.result == result
        assert r.path == "usage"
        if result == "fail":
            assert r.message == "5000-token prompt (threshold 1024) was neither written to nor read from the cache"
            assert r.actual == {"cache_read_tokens": 0, "cache_write_tokens": 0}

    def test_a_long_conversation_without_a_stable_prefix_or_breakpoint_has_nothing_to_cache(
        self, ps: PolicySet
    ) -> None:
        r = one(ps, call(phase="post", usage={"input_tokens": 50_000}, request={"cacheable_prefix_tokens": 40}))
        assert (r.result, r.path) == ("pass", "request.cacheable_prefix_tokens")
        assert "no breakpoint" in r.message

    def test_outcome_check_can_be_disabled(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy("requirePromptCaching: {checkOutcome: false}"))
        r = one(ps, call(phase="post", usage={"input_tokens": 5000}))
        assert (r.result, r.message) == ("skip", "outcome check disabled")


def _markers(node: Any) -> list[Any]:
    if isinstance(node, dict):
        own = [node["cache_control"]] if "cache_control" in node else []
        return own + [m for v in node.values() for m in _markers(v)]
    if isinstance(node, list):
        return [m for v in node for m in _markers(v)]
    return []


# --- maxOutputTokens ----------------------------------------------------------------------------


class TestMaxOutputTokens:
    @pytest.fixture
    def ps(self, compile_policies: CompilePolicies) -> PolicySet:
        return compile_policies(policy("maxOutputTokens: {limit: 4096, byFeature: {classify: 256}}"))

    def test_pass(self, ps: PolicySet) -> None:
        r = one(ps, call(request={"max_tokens": 4096}))
        assert (r.result, r.message) == ("pass", "max_tokens 4096 is within 4096")
        assert (r.path, r.expected, r.actual) == ("max_tokens", 4096, 4096)

    def test_per_feature_cap(self, ps: PolicySet) -> None:
        assert one(ps, call(feature="classify", request={"max_tokens": 256})).result == "pass"
        r = one(ps, call(feature="classify", request={"max_tokens": 1000}))
        assert r.result == "fail"
        assert r.message == "max_tokens 1000 exceeds the cap of 256 for feature 'classify'"
        assert (r.expected, r.actual) == (256, 1000)

    @pytest.mark.parametrize(
        ("field", "requested", "body"),
        [
            ("max_tokens", 8000, {"model": "m", "max_tokens": 8000, "messages": []}),
            ("max_completion_tokens", 9000, {"model": "m", "max_completion_tokens": 9000}),
            ("max_output_tokens", None, {"model": "m", "input": "hi"}),
        ],
    )
    def test_fix_clamps_then_passes(
        self, ps: PolicySet, field: str, requested: int | None, body: dict[str, Any]
    ) -> None:
        subject = call(request={"max_tokens": requested, "max_tokens_field": field}, body=body)
        r = one(ps, subject)
        assert r.result == "fail"
        assert r.path == field
        assert r.fix is not None
        assert (r.fix.target, r.fix.description) == ("request", f"clamp {field} to 4096")
        if requested is None:
            assert r.message == f"{field} is unset; it must be set to at most the cap of 4096 for feature ''"
        fixed = apply_fix(body, r.fix)
        assert fixed[field] == 4096
        after = one(ps, replace(subject, body=fixed, request=replace_request(subject, max_tokens=fixed[field])))
        assert (after.result, after.fix) == ("pass", None)
        assert apply_fix(fixed, Fix("again", ({"op": "replace", "path": f"/{field}", "value": 4096},))) == fixed

    def test_an_implied_cap_the_body_does_not_set_is_added(self, compile_policies: CompilePolicies) -> None:
        """Legacy Completions on OpenAI imply ``max_tokens: 16`` without the body saying so: a
        lower cap adds the field (a ``replace`` of a missing key fails, and the call was refused)."""
        ps = compile_policies(policy("maxOutputTokens: {limit: 8}"))
        body = {"model": "gpt-3.5-turbo-instruct", "prompt": "hi"}
        subject = call(feature="classify", provider="openai", body=body,
                       request={"api": "completions", "max_tokens": 16})
        r = one(ps, subject)
        assert r.result == "fail" and r.fix is not None
        assert r.fix.patch == ({"op": "add", "path": "/max_tokens", "value": 8},)
        assert apply_fix(body, r.fix) == {**body, "max_tokens": 8}
        present = one(ps, call(feature="classify", request={"max_tokens": 16}, body={**body, "max_tokens": 16}))
        assert present.fix is not None and present.fix.patch[0]["op"] == "replace"

    def test_a_call_whose_api_has_no_cap_field_is_skipped(self, ps: PolicySet) -> None:
        """Image generation has no field that caps output (size and quality set it): adding
        ``max_tokens`` would make ``/images/generations`` answer 400."""
        r = one(ps, call(request={"api": "images", "max_tokens": 4160, "max_tokens_field": ""},
                         body={"model": "gpt-image-1", "prompt": "a cat"}))
        assert (r.result, r.fix) == ("skip", None)
        assert "no field that caps output" in r.message

    def test_a_call_that_generates_no_output_is_skipped_not_clamped(self, ps: PolicySet) -> None:
        """An embeddings call (``choices == 0``) has no output to cap: ``max_tokens`` added to it
        would break the request, so the rule skips it rather than proposing that fix."""
        r = one(ps, call(request={"api": "embeddings", "max_tokens": None, "choices": 0},
                         body={"model": "text-embedding-3-small", "input": "hi"}))
        assert (r.result, r.fix) == ("skip", None)
        assert "generates no output" in r.message


def replace_request(subject: LlmCall, **changes: Any) -> LlmRequest:
    import dataclasses

    return dataclasses.replace(subject.request, **changes)


# --- budget -------------------------------------------------------------------------------------

DAILY = "budget: {per: [user], limitUsd: 25, window: day}"
KEY = "budget:p/r:user=alice"


class RaisingLedger(MemoryLedger):
    def spent(self, keys: Any, *, now: datetime) -> list[float]:
        raise LedgerError("ledger unreachable: connection refused")


class TestBudget:
    @pytest.fixture
    def ledger(self) -> MemoryLedger:
        return MemoryLedger()

    @pytest.fixture
    def ps(self, compile_policies: CompilePolicies, fake_pricer: Any) -> PolicySet:
        return compile_policies(policy(DAILY), pricer=fake_pricer)

    def test_skip_without_attribution(self, ps: PolicySet, ledger: MemoryLedger) -> None:
        r = one(ps, call(feature="search"), ledger=ledger)
        assert (r.result, r.message) == ("skip", "call has no user attribution to budget against")

    def test_skip_without_ledger(self, ps: PolicySet) -> None:
        r = one(ps, call(user="alice"))
        assert (r.result, r.message) == ("skip", "no budget ledger configured")

    def test_pass_under_the_limit(self, ps: PolicySet, ledger: MemoryLedger) -> None:
        ledger.add_spend(f"{KEY}:2026-11-30", 10.0)
        ledger.add_spend(f"{KEY}:2026-11-29", 100.0)  # yesterday does not count
        r = one(ps, call(user="alice", estimated_cost_usd=1.5), ledger=ledger)
        assert r.result == "pass"
        assert r.message == "$11.5000 of $25.00 per day"
        assert (r.path, r.expected, r.actual) == (f"budget[{KEY}]", 25.0, 11.5)

    def test_attribution_values_cannot_make_two_callers_share_a_key(
        self, compile_policies: CompilePolicies, fake_pricer: Any, ledger: MemoryLedger
    ) -> None:
        ps = compile_policies(policy("budget: {per: [user, team], limitUsd: 25, window: day}"), pricer=fake_pricer)
        one_way = one(ps, call(user="a,team=b", team="c", estimated_cost_usd=1.0), ledger=ledger).holds[0].key
        other = one(ps, call(user="a", team="b,team=c", estimated_cost_usd=1.0), ledger=ledger).holds[0].key
        assert one_way != other
        assert one_way == "budget:p/r:user=a%2Cteam%3Db,team=c:2026-11-30"
        plain = one(ps, call(user="u-1", team="growth", estimated_cost_usd=1.0), ledger=ledger).holds[0].key
        assert plain == "budget:p/r:user=u-1,team=growth:2026-11-30"  # keys without those characters are unchanged

    def test_pass_asks_to_hold_the_worst_case(self, ps: PolicySet, ledger: MemoryLedger) -> None:
        r = one(ps, call(user="alice", estimated_cost_usd=1.5), ledger=ledger)
        [hold] = r.holds
        assert hold.key == f"{KEY}:2026-11-30"
        assert (hold.amount_usd, hold.limit_usd) == (1.5, 25.0)

    def test_fail_before_the_call(self, ps: PolicySet, ledger: MemoryLedger) -> None:
        ledger.add_spend(f"{KEY}:2026-11-30", 24.0)
        r = one(ps, call(user="alice", estimated_cost_usd=2.0), ledger=ledger)
        assert (r.result, r.effect) == ("fail", "deny")
        assert r.message == "spend $26.0000 would exceed the $25.00 day budget for user=alice"
        assert (r.expected, r.actual) == (25.0, 26.0)
        assert r.fix is None
        assert r.holds == ()

    def test_fail_after_the_call_counts_only_settled_spend(self, ps: PolicySet, ledger: MemoryLedger) -> None:
        ledger.add_spend(f"{KEY}:2026-11-30", 25.5)
        r = one(ps, call(user="alice", phase="post", estimated_cost_usd=99.0), ledger=ledger)
        assert r.message == "spend $25.5000 exceeds the $25.00 day budget for user=alice"
        ledger2 = MemoryLedger()
        ledger2.add_spend(f"{KEY}:2026-11-30", 24.0)
        assert one(ps, call(user="alice", phase="post", estimated_cost_usd=99.0), ledger=ledger2).result == "pass"

    def test_worst_case_is_priced_from_input_and_max_tokens(self, ps: PolicySet, ledger: MemoryLedger) -> None:
        ledger.add_spend(f"{KEY}:2026-11-30", 24.9)
        subject = call(user="alice", request={"input_tokens": 10_000, "max_tokens": 4000})
        r = one(ps, subject, ledger=ledger)
        assert r.actual == pytest.approx(24.9 + (10_000 * 3 + 4000 * 15) / 1e6)
        assert r.result == "pass"
        unset = one(ps, call(user="alice", request={"input_tokens": 0}), ledger=ledger)
        assert unset.actual == pytest.approx(24.9 + OUTPUT_TOKENS_CAP * 15 / 1e6)
        huge = one(ps, call(user="alice", request={"max_tokens": 10**7}), ledger=ledger)
        assert huge.actual == pytest.approx(unset.actual)
        batch = one(ps, call(user="alice", request={"max_tokens": 1000, "batch": True}), ledger=ledger)
        assert batch.actual == pytest.approx(24.9 + 1000 * 15 / 1e6 / 2)

    def test_worst_case_counts_every_completion_asked_for(self, ps: PolicySet, ledger: MemoryLedger) -> None:
        # Chat Completions' n: each of the n choices may use max_tokens; the input is billed once
        one_choice = one(ps, call(user="alice", request={"input_tokens": 1000, "max_tokens": 4000}), ledger=ledger)
        eight = one(ps, call(user="alice", request={"input_tokens": 1000, "max_tokens": 4000, "choices": 8}),
                    ledger=ledger)
        assert one_choice.actual == pytest.approx((1000 * 3 + 4000 * 15) / 1e6)
        assert eight.actual == pytest.approx((1000 * 3 + 8 * 4000 * 15) / 1e6)
        capped = one(ps, call(user="alice", request={"max_tokens": 10**7, "choices": 2}), ledger=ledger)
        assert capped.actual == pytest.approx(2 * OUTPUT_TOKENS_CAP * 15 / 1e6)  # clamped per choice
        # max_tokens 0 (scoring a prompt with echo + logprobs) generates nothing: no output is held
        scoring = one(ps, call(user="alice", request={"input_tokens": 1000, "max_tokens": 0}), ledger=ledger)
        assert scoring.actual == pytest.approx(1000 * 3 / 1e6)

    def test_the_worst_case_is_priced_once_per_call_however_many_budgets_judge_it(
        self, compile_policies: CompilePolicies, fake_pricer: Any, ledger: MemoryLedger
    ) -> None:
        ps = compile_policies(
            policy(DAILY, name="daily") + "---\n" + policy(
                "budget: {per: [team], limitUsd: 100, window: month}", name="monthly"
            ),
            pricer=fake_pricer,
        )
        subject = call(user="alice", team="growth", request={"input_tokens": 10_000, "max_tokens": 4000})
        fake_pricer.calls = 0
        decision = ps.evaluate(subject, "runtime", now=NOW, ledger=ledger)
        amounts = [h.amount_usd for r in decision.results for h in r.holds]
        assert amounts == [pytest.approx((10_000 * 3 + 4000 * 15) / 1e6)] * 2
        assert fake_pricer.calls == 1
        other = call(user="alice", team="growth", request={"input_tokens": 20_000, "max_tokens": 4000})
        again = ps.evaluate(other, "runtime", now=NOW, ledger=ledger)
        assert [h.amount_usd for r in again.results for h in r.holds] == [
            pytest.approx((20_000 * 3 + 4000 * 15) / 1e6)
        ] * 2  # a new subject is priced anew
        assert fake_pricer.calls == 2

    def test_unpriced_model_is_an_error(self, ps: PolicySet, ledger: MemoryLedger) -> None:
        r = one(ps, call(user="alice", model="mystery-model"), ledger=ledger)
        assert (r.result, r.effect) == ("error", "deny")
        assert "mystery-model" in r.message

    def test_ledger_failure_is_an_error(self, ps: PolicySet) -> None:
        r = one(ps, call(user="alice", estimated_cost_usd=0.1), ledger=RaisingLedger())
        assert r.result == "error"
        assert r.message == "ledger unreachable: connection refused"

    def test_several_dimensions_and_tags(self, compile_policies: CompilePolicies, ledger: MemoryLedger) -> None:
        ps = compile_policies(policy("budget: {per: [team, 'tag:env'], limitUsd: 5, window: month}"))
        ledger.add_spend("budget:p/r:team=growth,env=prod:2026-11", 6.0)
        r = one(ps, call(team="growth", tags={"env": "prod"}, phase="post"), ledger=ledger)
        assert r.result == "fail"
        assert r.path == "budget[budget:p/r:team=growth,env=prod]"
        assert one(ps, call(team="growth", phase="post"), ledger=ledger).result == "skip"

    def test_calendar_window_in_a_time_zone(self, compile_policies: CompilePolicies, ledger: MemoryLedger) -> None:
        ps = compile_policies(policy("budget: {per: [user], limitUsd: 1, window: day, timezone: Asia/Tokyo}"))
        ledger.add_spend(f"{KEY}:2026-12-01", 2.0)  # 23:30 UTC on Nov 30 is Dec 1 in Tokyo
        late = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
        assert one(ps, call(user="alice", phase="post"), ledger=ledger, now=late).result == "fail"
        before_midnight_tokyo = datetime(2026, 11, 30, 14, 59, tzinfo=UTC)
        assert one(ps, call(user="alice", phase="post"), ledger=ledger, now=before_midnight_tokyo).result == "pass"
        assert one(ps, call(user="alice", phase="post"), ledger=ledger, now=NOW).result == "fail"

    def test_rolling_window_sums_hourly_buckets(self, compile_policies: CompilePolicies, ledger: MemoryLedger) -> None:
        ps = compile_policies(policy("budget: {per: [user], limitUsd: 10, window: 'rolling:3h'}"))
        ledger.add_spend(f"{KEY}:h2026-11-30T12", 4.0)  # the hour that began 3h before the current one
        ledger.add_spend(f"{KEY}:h2026-11-30T15", 4.0)
        ledger.add_spend(f"{KEY}:h2026-11-30T11", 50.0)  # outside the three hours
        r = one(ps, call(user="alice", phase="post"), ledger=ledger)
        assert (r.result, r.actual) == ("pass", 8.0)
        ledger.add_spend(f"{KEY}:h2026-11-30T14", 2.5)
        assert one(ps, call(user="alice", phase="post"), ledger=ledger).result == "fail"

    def test_on_exceed_warn_never_denies(self, compile_policies: CompilePolicies, ledger: MemoryLedger) -> None:
        ps = compile_policies(policy("budget: {per: [user], limitUsd: 1, window: day, onExceed: warn}"))
        ledger.add_spend(f"{KEY}:2026-11-30", 2.0)
        decision = ps.evaluate(call(user="alice", phase="post"), ledger=ledger, now=NOW)
        [r] = decision.results
        assert (r.result, r.effect) == ("warn", "warn")
        assert decision.verdict == "allow"

    def test_on_exceed_downgrade_offers_the_cheapest_tier(
        self, compile_policies: CompilePolicies, ledger: MemoryLedger
    ) -> None:
        ps = compile_policies(policy("budget: {per: [user], limitUsd: 1, window: day, onExceed: downgrade}"))
        ledger.add_spend(f"{KEY}:2026-11-30", 2.0)
        body = {"model": "claude-opus-4-1", "max_tokens": 10}
        r = one(ps, call(user="alice", model="claude-opus-4-1", phase="post", body=body), ledger=ledger)
        assert r.fix is not None
        assert r.fix.target == "request"
        assert apply_fix(body, r.fix) == {"model": "claude-haiku-4-5", "max_tokens": 10}
        already = one(ps, call(user="alice", model="claude-haiku-4-5", phase="post"), ledger=ledger)
        assert (already.result, already.fix) == ("fail", None)
        unknown = one(ps, call(user="alice", provider="mistral", model="m", phase="post"), ledger=ledger)
        assert unknown.fix is None

    def test_on_exceed_downgrade_leaves_a_call_without_output_alone(
        self, compile_policies: CompilePolicies, ledger: MemoryLedger
    ) -> None:
        """An embeddings call over budget is refused, never rewritten to a chat model (a 400)."""
        ps = compile_policies(policy("budget: {per: [user], limitUsd: 1, window: day, onExceed: downgrade}"))
        ledger.add_spend(f"{KEY}:2026-11-30", 2.0)
        body = {"model": "claude-opus-4-1", "input": "hi"}
        embeddings = call(user="alice", model="claude-opus-4-1", phase="post", body=body,
                          request={"api": "embeddings", "max_tokens": None, "choices": 0})
        r = one(ps, embeddings, ledger=ledger)
        assert (r.result, r.fix) == ("fail", None)
        legacy = call(user="alice", model="claude-opus-4-1", phase="post", body={"model": "m", "prompt": "hi"},
                      request={"api": "completions", "max_tokens": 16})
        assert one(ps, legacy, ledger=ledger).fix is None

    def test_invalid_time_zone_is_a_policy_error(self, compile_policies: CompilePolicies) -> None:
        with pytest.raises(PolicyError) as info:
            compile_policies(policy("budget: {per: [user], limitUsd: 1, window: day, timezone: Mars/Olympus}"))
        assert error_codes(info) == ["invalid-value"]


# --- servingConfig ------------------------------------------------------------------------------

SERVING_RULE = """
servingConfig:
  minGpuMemoryUtilization: 0.85
  minMaxNumSeqs: 32
  maxModelLenFactor: 2
  quantizeAboveParamsB: 30
  allowedGpuTypes: [H100, H200, L40S]
  forbidDeprecatedArgs: true
"""


class TestServingConfig:
    @pytest.fixture
    def ps(self, compile_policies: CompilePolicies) -> PolicySet:
        return compile_policies(policy(SERVING_RULE, subject="serving_config"))

    def by_path(self, ps: PolicySet, subject: Subject) -> dict[str | None, RuleResult]:
        out = {r.path: r for r in results(ps, subject)}
        assert all(r.rule == "r" for r in out.values())
        return out

    def test_efficient_config_passes(self, ps: PolicySet) -> None:
        r = one(ps, serving(gpus=4, args={"tensor_parallel_size": 4, "max_num_seqs": 256}))
        assert (r.result, r.message) == ("pass", "vllm configuration uses its GPUs efficiently")

    def test_idle_gpus(self, ps: PolicySet) -> None:
        subject = serving(gpus=8, replicas=2, args={"tensor_parallel_size": 4})
        r = one(ps, subject)
        assert r.result == "fail"
        assert r.message == "TP 4 x PP 1 x DP 1 = 4 GPUs but each replica requests 8: 4 GPU(s) idle"
        assert (r.path, r.expected, r.actual) == ("args.tensor_parallel_size", 8.0, 4)
        assert r.savings_usd_month == pytest.approx(round(4 * 6.88 * HOURS_PER_MONTH * 2, 2))
        assert r.fix is not None
        assert (r.fix.target, r.fix.description) == ("args", "set --tensor-parallel-size 8")
        fixed = apply_fix(subject.args, r.fix)
        assert one(ps, replace(subject, args=fixed)).result == "pass"
        assert apply_fix(fixed, r.fix) == fixed

    def test_oversubscribed_parallelism_has_no_fix(self, ps: PolicySet) -> None:
        r = one(ps, serving(gpus=4, args={"tensor_parallel_size": 4, "pipeline_parallel_size": 2}))
        assert r.result == "fail"
        assert "vLLM will not start" in r.message
        assert r.fix is None

    def test_fix_keeps_pipeline_and_data_parallelism(self, ps: PolicySet) -> None:
        r = one(ps, serving(gpus=8, args={"pipeline_parallel_size": 2}))
        assert r.fix is not None
        assert r.fix.patch == ({"op": "add", "path": "/tensor_parallel_size", "value": 4},)

    def test_no_gpus_requested_skips_parallelism(self, ps: PolicySet) -> None:
        assert one(ps, serving(gpus=0, args={"tensor_parallel_size": 8})).result == "pass"

    def test_each_problem_is_its_own_result(self, ps: PolicySet) -> None:
        subject = serving(
            model="meta-llama/Llama-3.1-70B-Instruct",
            gpus=8,
            gpu_type="A10G",
            tags={"costwarden.dev/max-context-tokens": "8000"},
            deprecated_args=["disable_log_requests"],
            args={
                "tensor_parallel_size": 8,
                "enable_prefix_caching": False,
                "gpu_memory_utilization": 0.5,
                "max_num_seqs": 8,
                "max_model_len": 131072,
                "disable_log_requests": True,
            },
        )
        found = self.by_path(ps, subject)
        assert set(found) == {
            "args.enable_prefix_caching",
            "args.gpu_memory_utilization",
            "args.max_model_len",
            "args.quantization",
            "gpu_type",
            "args",
        }  # max_num_seqs only matters on large GPUs
        assert found["args.enable_prefix_caching"].fix is not None
        assert found["args.gpu_memory_utilization"].expected == 0.85
        assert found["args.max_model_len"].expected == 16000
        assert found["gpu_type"].fix is None
        assert found["gpu_type"].message == "GPU type A10G is not allowed; allowed: H100, H200, L40S"
        quantization = found["args.quantization"]
        assert (quantization.result, quantization.effect) == ("warn", "warn")  # advisory: never denies
        fixed = dict(subject.args)
        for r in found.values():
            if r.fix is not None:
                fixed = apply_fix(fixed, r.fix)
        assert fixed == {
            "tensor_parallel_size": 8,
            "enable_prefix_caching": True,
            "gpu_memory_utilization": 0.85,
            "max_num_seqs": 8,
            "max_model_len": 8000,
        }
        after = self.by_path(ps, replace(subject, args=fixed, deprecated_args=(), gpu_type="H100"))
        assert set(after) == {"args.max_num_seqs", "args.quantization"}
        fixed = apply_fix(fixed, after["args.max_num_seqs"].fix)  # type: ignore[arg-type]
        final = self.by_path(ps, replace(subject, args=fixed, deprecated_args=(), gpu_type="H100"))
        assert set(final) == {"args.quantization"}
        assert final["args.quantization"].fix is None

    def test_max_num_seqs_on_large_gpu(self, ps: PolicySet) -> None:
        r = one(ps, serving(gpu_type="nvidia-h100-80gb", args={"max_num_seqs": 8}))
        assert r.message == "max_num_seqs 8 caps batching on a nvidia-h100-80gb (minimum 32)"
        assert r.fix is not None
        assert r.fix.description == "set --max-num-seqs 32"

    def test_prefix_caching_fix(self, ps: PolicySet) -> None:
        r = one(ps, serving(args={"enable_prefix_caching": False}))
        assert r.fix is not None
        assert r.fix.description == "set --enable-prefix-caching"
        assert r.fix.patch == ({"op": "add", "path": "/enable_prefix_caching", "value": True},)

    @pytest.mark.parametrize(
        ("model", "args", "params_b", "flagged"),
        [
            ("meta-llama/Llama-3.1-70B-Instruct", {}, None, True),
            ("meta-llama/Llama-3.1-70B-Instruct-AWQ", {}, None, False),
            ("meta-llama/Llama-3.1-70B-Instruct", {"quantization": "fp8"}, None, False),
            ("Qwen/Qwen3-8B", {}, None, False),
            ("my-org/big-model", {}, 120.0, True),
            ("deepseek-ai/DeepSeek-V3", {}, None, True),
        ],
    )
    def test_quantisation_advice(
        self, ps: PolicySet, model: str, args: dict[str, Any], params_b: float | None, flagged: bool
    ) -> None:
        found = self.by_path(ps, serving(model=model, args=args, params_b=params_b))
        assert ("args.quantization" in found) is flagged

    def test_deprecated_args_fix(self, ps: PolicySet) -> None:
        subject = serving(deprecated_args=["disable_log_requests"], args={"disable_log_requests": True})
        r = one(ps, subject)
        assert r.message == "deprecated or removed arguments for vLLM (default): --disable-log-requests"
        assert r.actual == ["disable_log_requests"]
        assert r.fix is not None
        fixed = apply_fix(subject.args, r.fix)
        assert fixed == {}
        assert one(ps, replace(subject, args=fixed, deprecated_args=())).result == "pass"

    def test_serving_config_only(self, compile_policies: CompilePolicies) -> None:
        with pytest.raises(PolicyError) as info:
            compile_policies(policy("servingConfig: {}", subject="resource"))
        assert error_codes(info) == ["wrong-subject"]


# --- maxHourlyCost ------------------------------------------------------------------------------


class TestMaxHourlyCost:
    @pytest.fixture
    def ps(self, compile_policies: CompilePolicies) -> PolicySet:
        rule = "maxHourlyCost: {limitUsd: 40, approvalTag: costwarden.dev/cost-approved-by}"
        return compile_policies(policy(rule, subject="resource"))

    def test_pass_within_the_cap(self, ps: PolicySet) -> None:
        r = one(ps, res(workload={"gpus": 1, "gpu_type": "H100"}))
        assert r.result == "pass"
        assert r.message == "estimated $6.88/h is within $40.00/h"
        assert (r.path, r.expected, r.actual) == ("hourly_usd", 40.0, 6.88)

    def test_fail_over_the_cap(self, ps: PolicySet) -> None:
        r = one(ps, res(workload={"instance_type": "p5.48xlarge"}))
        assert r.result == "fail"
        assert r.message == (
            "estimated $55.04/h exceeds the $40.00/h cap; approve with the tag or annotation "
            "costwarden.dev/cost-approved-by=<approver>"
        )
        assert r.actual == 55.04
        assert r.fix is None

    def test_replicas_and_spot_prices(self, ps: PolicySet) -> None:
        assert one(ps, res(workload={"gpus": 1, "gpu_type": "H100", "replicas": 6})).result == "fail"
        r = one(ps, res(capacity="spot", workload={"instance_type": "p5.48xlarge"}))
        assert (r.result, r.actual) == ("pass", 24.77)

    def test_adapter_estimate_wins(self, ps: PolicySet) -> None:
        r = one(ps, res(hourly_usd=41.0, workload={"gpus": 1, "gpu_type": "T4"}))
        assert (r.result, r.actual) == ("fail", 41.0)

    def test_approval_tag(self, ps: PolicySet) -> None:
        work = {"gpus": 8, "gpu_type": "H100"}
        r = one(ps, res(workload=work, tags={"costwarden.dev/cost-approved-by": "cfo"}))
        assert r.result == "pass"
        assert r.message == "estimated $55.04/h above $40.00/h, approved by cfo"
        assert one(ps, res(workload=work, tags={"costwarden.dev/cost-approved-by": ""})).result == "fail"

    def test_approval_annotation(self, ps: PolicySet) -> None:
        work = {"gpus": 8, "gpu_type": "H100"}
        key = "costwarden.dev/cost-approved-by"
        r = one(ps, res(workload=work, annotations={key: "ana@example.com"}))
        assert (r.result, r.message) == ("pass", "estimated $55.04/h above $40.00/h, approved by ana@example.com")
        assert one(ps, res(workload=work, annotations={key: ""})).result == "fail"
        assert one(ps, res(workload=work, annotations={"other": "ana"})).result == "fail"
        both = one(ps, res(workload=work, tags={key: "cfo"}, annotations={key: "ana@example.com"}))
        assert both.message.endswith("approved by cfo")

    def test_without_approval_tag_there_is_no_hint(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy("maxHourlyCost: {limitUsd: 1}", subject="resource"))
        r = one(ps, res(hourly_usd=2.0))
        assert r.message == "estimated $2.00/h exceeds the $1.00/h cap"

    @pytest.mark.parametrize(
        ("workload", "message"),
        [
            ({"gpus": 2, "gpu_type": "Z9000"}, "no price known for 2x Z9000"),
            ({"gpus": 2}, "no price known for 2x unknown GPU type"),
            ({"instance_type": "x9.huge"}, "no price known for x9.huge"),
            ({}, "no priced accelerators or instance type"),
        ],
    )
    def test_skip_without_a_price(self, ps: PolicySet, workload: dict[str, Any], message: str) -> None:
        r = one(ps, res(workload=workload))
        assert (r.result, r.message) == ("skip", message)


# --- expr ---------------------------------------------------------------------------------------


class TestExpr:
    def test_pass_and_fail(self, compile_policies: CompilePolicies) -> None:
        rule = "expr: {cel: 'subject.request.max_tokens <= 8192', message: max_tokens above 8192}"
        ps = compile_policies(policy(rule))
        r = one(ps, call(request={"max_tokens": 100}))
        assert (r.result, r.message, r.path) == ("pass", "subject.request.max_tokens <= 8192 holds", "subject")
        r = one(ps, call(request={"max_tokens": 10000}))
        assert (r.result, r.message) == ("fail", "max_tokens above 8192")
        assert (r.expected, r.actual, r.fix) == ("subject.request.max_tokens <= 8192",
                                                 {"subject.request.max_tokens": 10000}, None)

    def test_evaluation_error_is_an_error_result(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy("expr: {cel: 'subject.tags.team == \"ml\"', message: m}", subject="resource"))
        r = one(ps, res())
        assert r.result == "error"
        assert r.message
        assert one(ps, res(tags={"team": "ml"})).result == "pass"

    def test_annotations_are_visible(self, compile_policies: CompilePolicies) -> None:
        cel = "'example.com/owner' in subject.annotations && subject.annotations['example.com/owner'] != ''"
        ps = compile_policies(policy(f'expr: {{cel: "{cel}", message: needs an owner}}', subject="resource"))
        assert one(ps, res(annotations={"example.com/owner": "ana@example.com"})).result == "pass"
        assert one(ps, res(annotations={"example.com/owner": ""})).result == "fail"
        assert one(ps, res(tags={"example.com/owner": "ana"})).result == "fail"

    def test_non_boolean_is_an_error_result(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(policy("expr: {cel: 'subject.name', message: m}", subject="resource"))
        r = one(ps, res())
        assert r.result == "error"
        assert "expected a boolean" in r.message

    @pytest.mark.parametrize(
        ("subject_type", "subject", "cel"),
        [
            ("resource", res(workload={"gpus": 2}), "subject.workload.gpus > 1.0"),
            ("llm_call", call(user="alice"), 'subject.user == "alice"'),
            ("serving_config", serving(args={"max_num_seqs": 64}), "subject.args.max_num_seqs >= 32"),
        ],
    )
    def test_every_subject_type(
        self, compile_policies: CompilePolicies, subject_type: str, subject: Subject, cel: str
    ) -> None:
        ps = compile_policies(policy(f"expr: {{cel: '{cel}', message: m}}", subject=subject_type))
        assert one(ps, subject).result == "pass"

    def test_invalid_cel_is_a_policy_error(self, compile_policies: CompilePolicies) -> None:
        with pytest.raises(PolicyError) as info:
            compile_policies(policy("expr: {cel: 'subject.name ==', message: m}"))
        assert error_codes(info) == ["invalid-cel"]
