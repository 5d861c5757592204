"""Evaluation properties: total and deterministic; monotone in added policies and in spend;
equal to a small, unoptimised reference evaluator."""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import json
import math
import re
import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costwarden.adapters.ledger.memory import MemoryLedger
from costwarden.api import builtin_library_path
from costwarden.engine.budget import window_keys, zone
from costwarden.engine.compile import compile_documents
from costwarden.engine.decision import EFFECTS, RESULTS, SURFACES, Decision
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.loader import SourceDocument, load_paths, load_text
from costwarden.engine.rules.budget import budget_key
from costwarden.engine.subjects import LlmCall, Subject, TokenUsage, subject_from_dict
from costwarden.engine.subjects import Resource as ResourceSubject
from costwarden.errors import PricingError, SubjectError

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BASE_NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


class FlatPricer:
    """Deterministic prices; models named ``mystery-*`` have none (PricingError, never $0)."""

    def cost(self, provider: str, model: str, usage: TokenUsage, *, batch: bool = False) -> float:
        if model.startswith("mystery"):
            raise PricingError(f"no price for {model}")
        total = (usage.total_input_tokens * 3 + usage.output_tokens * 15) / 1e6
        return total / 2 if batch else total


PRICER = FlatPricer()


# --- subject strategies -------------------------------------------------------------------------

_short = st.text(alphabet="abcxyz-/09 ", max_size=6)
_tag_keys = st.sampled_from(
    ["team", "feature", "environment", "user", "env", "costwarden.dev/cost-approved-by", "tier", "x"]
)
_tag_values = st.one_of(st.sampled_from(["", "ml", "prod", "staging", "dev", "qa", "alice", "1234"]), _short)
_tags = st.dictionaries(_tag_keys, _tag_values, max_size=5)
_maybe_int = st.one_of(st.none(), st.integers(min_value=0, max_value=2_000_000))
_money = st.one_of(
    st.none(),
    st.floats(min_value=0, max_value=1e4, allow_nan=False),
    st.sampled_from([float("nan"), float("inf"), -1.0]),
)


@st.composite
def resources(draw: st.DrawFn) -> Subject:
    data: dict[str, Any] = {
        "type": "resource",
        "provider": draw(st.sampled_from(["kubernetes", "aws", "gcp", "terraform", "azure"])),
        "kind": draw(
            st.sampled_from(["Job", "CronJob", "Deployment", "Pod", "RayJob", "ec2-instance", "aws_instance", "x"])
        ),
        "name": draw(st.sampled_from(["", "train", "serve-7b", "exempt-me"])),
        "namespace": draw(st.sampled_from([None, "default", "kube-system", "ml"])),
        "tags": draw(_tags),
        "capacity": draw(st.sampled_from(["spot", "on-demand", "reserved", "unknown"])),
        "workload": {
            "class": draw(st.sampled_from(["batch", "online", "training", "unknown"])),
            "gpus": draw(st.sampled_from([0, 0.5, 1, 2, 8, 64])),
            "gpu_type": draw(st.sampled_from([None, "H100", "nvidia-tesla-t4", "A100-80GB", "Z9000"])),
            "instance_type": draw(st.sampled_from([None, "p5.48xlarge", "g5.xlarge", "x9.nope"])),
            "replicas": draw(st.integers(min_value=0, max_value=50)),
        },
    }
    money = draw(_money)
    if draw(st.booleans()):
        data["raw"] = {"metadata": {}, "spec": {"template": {"spec": {}}}}
        data["tags_pointer"] = draw(st.sampled_from(["/metadata/labels", "/spec/template/metadata/labels"]))
        data["pod_spec_pointers"] = ["/spec/template/spec"]
    return _with_money(subject_from_dict(data), "hourly_usd", money)


def _with_money(subject: Subject, field: str, money: float | None) -> Subject:
    """``subject_from_dict`` rejects NaN, infinite and negative amounts at the edge; build such
    subjects directly so evaluation is still shown to be total on them."""
    if money is not None and not (0 <= money < float("inf")):
        with pytest.raises(SubjectError):
            subject_from_dict({**subject.to_dict(), field: money})
    return dataclasses.replace(subject, **{field: money})


@st.composite
def llm_calls(draw: st.DrawFn) -> Subject:
    data: dict[str, Any] = {
        "type": "llm_call",
        "provider": draw(st.sampled_from(["anthropic", "openai", "bedrock", "google", "mistral"])),
        "model": draw(
            st.sampled_from(
                [
                    "claude-sonnet-4-5",
                    "claude-haiku-4-5",
                    "claude-opus-4-1",
                    "gpt-4.1",
                    "gpt-4.1-mini",
                    "o3",
                    "gemini-2.5-pro",
                    "mystery-model",
                ]
            )
        ),
        "feature": draw(st.sampled_from([None, "", "classify", "extract", "code", "reasoning", "chat"])),
        "user": draw(st.sampled_from([None, "alice", "bob"])),
        "team": draw(st.sampled_from([None, "growth"])),
        "tags": draw(_tags),
        "phase": draw(st.sampled_from(["pre", "post"])),
        "request": {
            "api": draw(st.sampled_from(["messages", "chat.completions", "responses"])),
            "max_tokens": draw(_maybe_int),
            "input_tokens": draw(st.integers(min_value=0, max_value=200_000)),
            "cacheable_prefix_tokens": draw(st.integers(min_value=0, max_value=200_000)),
            "prefix_pointer": draw(st.sampled_from([None, "/system", "/system/0", "/tools/0", "/nope"])),
            "cache_breakpoints": draw(st.integers(min_value=0, max_value=4)),
            "stream": draw(st.booleans()),
            "batch": draw(st.booleans()),
        },
    }
    money = draw(_money)
    if draw(st.booleans()):
        data["usage"] = {
            "input_tokens": draw(st.integers(min_value=0, max_value=100_000)),
            "output_tokens": draw(st.integers(min_value=0, max_value=100_000)),
            "cache_read_tokens": draw(st.integers(min_value=0, max_value=100_000)),
        }
    if draw(st.booleans()):
        data["body"] = {
            "model": data["model"],
            "max_tokens": 10,
            "system": draw(st.sampled_from(["be brief", [{"type": "text", "text": "x"}], None])),
            "tools": [{"name": "t"}],
        }
    return _with_money(subject_from_dict(data), "estimated_cost_usd", money)


_SERVED_MODELS = ["Qwen/Qwen3-8B", "meta-llama/Llama-3.1-70B-Instruct", "deepseek-ai/DeepSeek-V3"]


@st.composite
def serving_configs(draw: st.DrawFn) -> Subject:
    args = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "tensor_parallel_size": st.integers(min_value=1, max_value=16),
                "pipeline_parallel_size": st.integers(min_value=1, max_value=4),
                "enable_prefix_caching": st.booleans(),
                "gpu_memory_utilization": st.floats(min_value=0.05, max_value=1.0),
                "max_num_seqs": st.integers(min_value=1, max_value=1024),
                "max_model_len": st.integers(min_value=1, max_value=1_000_000),
                "quantization": st.sampled_from(["fp8", "awq"]),
            },
        )
    )
    return subject_from_dict(
        {
            "type": "serving_config",
            "model": draw(st.sampled_from(_SERVED_MODELS)),
            "args": args,
            "gpus": draw(st.sampled_from([0, 1, 2, 4, 8])),
            "gpu_type": draw(st.sampled_from([None, "H100", "A10G", "nvidia-l4"])),
            "replicas": draw(st.integers(min_value=1, max_value=4)),
            "tags": draw(st.dictionaries(st.just("costwarden.dev/max-context-tokens"), st.sampled_from(["8000", "x"]))),
            "deprecated_args": draw(st.lists(st.sampled_from(["disable_log_requests", "use_v2_block_manager"]))),
        }
    )


subjects = st.one_of(resources(), llm_calls(), serving_configs())
surfaces = st.sampled_from(SURFACES)


@st.composite
def ledgers(draw: st.DrawFn) -> MemoryLedger | None:
    if draw(st.booleans()):
        return None
    ledger = MemoryLedger()
    for user in draw(st.lists(st.sampled_from(["alice", "bob"]), max_size=2)):
        spend = draw(st.floats(min_value=0, max_value=100))
        ledger.add_spend(f"budget:user-daily-budget/daily-user-cap:user={user}:2026-11-30", spend)
    return ledger


def _check_decision(decision: Decision, surface: str) -> None:
    assert isinstance(decision, Decision)
    assert decision.surface == surface
    for r in decision.results:
        assert r.result in RESULTS
        assert r.effect in EFFECTS
        assert r.effect != "off"
        assert isinstance(r.message, str)
    assert decision.verdict == ("deny" if any(r.is_blocking for r in decision.results) else "allow")
    json.loads(decision.to_json())


# --- (1) total and deterministic ----------------------------------------------------------------


@functools.cache
def library() -> PolicySet:
    """The built-in library with the default (genai-prices) pricer, compiled once."""
    import costwarden

    return costwarden.load_policies()


@PROPERTY
@given(subject=subjects, surface=surfaces, ledger=ledgers(), minutes=st.integers(min_value=-3000, max_value=3000))
def test_evaluation_is_total_and_deterministic(
    subject: Subject, surface: str, ledger: MemoryLedger | None, minutes: int
) -> None:
    now = BASE_NOW + timedelta(minutes=minutes)
    first = library().evaluate(subject, surface=surface, now=now, ledger=ledger)  # type: ignore[arg-type]
    second = library().evaluate(subject, surface=surface, now=now, ledger=ledger)  # type: ignore[arg-type]
    _check_decision(first, surface)
    assert first.to_json() == second.to_json()
    # the policy set's clock gives the same decision as an explicit ``now``
    clocked = library().with_clock(lambda: now)
    assert clocked.evaluate(subject, surface=surface, ledger=ledger).to_json() == first.to_json()  # type: ignore[arg-type]


# --- (2) adding a policy never turns deny into allow --------------------------------------------


@functools.cache
def library_documents() -> tuple[SourceDocument, ...]:
    result = load_paths(builtin_library_path())
    assert result.diagnostics == []
    return tuple(result.documents)


@functools.cache
def library_with(pricer: FlatPricer) -> PolicySet:
    return compile_documents(library_documents(), pricer=pricer)


_CEL = [
    'subject.type == "resource"',
    "size(subject.tags) > 0",
    'subject.tags.team == "ml"',  # an error where the tag is missing
    "subject.type",  # never a boolean: always an error
    "true",
    "false",
]
_EFFECT = st.sampled_from(["deny", "warn", "audit", "off"])


@st.composite
def extra_policies(draw: st.DrawFn) -> str:
    subject = draw(st.sampled_from(["resource", "llm_call", "serving_config"]))
    if draw(st.booleans()):
        keys = draw(st.lists(_tag_keys, min_size=1, max_size=3, unique=True))
        rule = f"requireTags: {{keys: {json.dumps(keys)}}}"
    else:
        rule = f"expr: {{cel: {json.dumps(draw(st.sampled_from(_CEL)))}, message: extra}}"
    match = draw(
        st.sampled_from(
            ["{}", "{kinds: [Job, '*Job']}", "{namespaces: [ml]}", "{providers: [aws, anthropic]}", "{names: [train]}"]
        )
    )
    enforcement = {"default": draw(_EFFECT), **{s: draw(_EFFECT) for s in draw(st.sets(st.sampled_from(SURFACES)))}}
    return textwrap.dedent(
        f"""\
        apiVersion: costwarden.dev/v1
        kind: Policy
        metadata: {{name: extra-policy}}
        spec:
          subject: {subject}
          match: {match}
          enforcement: {json.dumps(enforcement)}
          onError: {draw(st.sampled_from(["deny", "allow"]))}
          rules:
            - name: extra
              {rule}
        """
    )


@PROPERTY
@given(extra=extra_policies(), subject=subjects, surface=surfaces)
def test_adding_a_policy_never_turns_deny_into_allow(extra: str, subject: Subject, surface: str) -> None:
    added = load_text(extra, file="extra.yaml")
    assert added.diagnostics == []
    base = library_with(PRICER)
    more = compile_documents([*library_documents(), *added.documents], pricer=PRICER)
    ledger = MemoryLedger()
    before = base.evaluate(subject, surface=surface, now=BASE_NOW, ledger=ledger)  # type: ignore[arg-type]
    after = more.evaluate(subject, surface=surface, now=BASE_NOW, ledger=ledger)  # type: ignore[arg-type]
    if before.verdict == "deny":
        assert after.verdict == "deny"
    # the library's own results do not change; the new policy only adds results
    kept = [json.dumps(r.to_dict()) for r in after.results if r.policy != "extra-policy"]
    assert kept == [json.dumps(r.to_dict()) for r in before.results]


# --- (3) more spend never turns deny into allow -------------------------------------------------


_BUDGETS = [
    ("user-day", "per: [user], limitUsd: 25, window: day"),
    ("user-day-tokyo", "per: [user], limitUsd: 5, window: day, timezone: Asia/Tokyo"),
    ("feature-month", "per: [feature], limitUsd: 100, window: month, onExceed: downgrade"),
    ("team-week", "per: [team, user], limitUsd: 10, window: week, timezone: America/Los_Angeles"),
    ("tag-rolling", "per: ['tag:env'], limitUsd: 3, window: 'rolling:3h'"),
    ("user-warn", "per: [user], limitUsd: 1, window: day, onExceed: warn"),
]


def _budget_policy(name: str, params: str) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: costwarden.dev/v1
        kind: Policy
        metadata: {{name: {name}}}
        spec:
          subject: llm_call
          rules:
            - name: cap
              budget: {{{params}}}
        """
    )


@functools.cache
def budget_set(name: str) -> PolicySet:
    params = dict(_BUDGETS)[name]
    loaded = load_text(_budget_policy(name, params))
    assert loaded.diagnostics == []
    return compile_documents(loaded.documents, pricer=PRICER)


def _budget_keys(ps: PolicySet, subject: LlmCall, now: datetime) -> list[str]:
    [policy] = ps.policies
    params = policy.document.spec.rules[0].budget
    base = budget_key(policy.name, "cap", subject, list(params.per))
    if base is None:
        return []
    return [f"{base}:{w}" for w in window_keys(params.window, now, zone(params.timezone))]


_spend = st.floats(min_value=0, max_value=50, allow_nan=False)


@PROPERTY
@given(
    which=st.sampled_from([name for name, _ in _BUDGETS]),
    subject=llm_calls(),
    surface=surfaces,
    minutes=st.integers(min_value=-2000, max_value=2000),
    spend=st.lists(_spend, min_size=1, max_size=4),
    more=st.lists(_spend, min_size=1, max_size=4),
)
def test_more_spend_never_turns_deny_into_allow(
    which: str,
    subject: Subject,
    surface: str,
    minutes: int,
    spend: list[float],
    more: list[float],
) -> None:
    assert isinstance(subject, LlmCall)
    ps = budget_set(which)
    now = BASE_NOW + timedelta(minutes=minutes)
    keys = _budget_keys(ps, subject, now)
    low, high = MemoryLedger(), MemoryLedger()
    for i, key in enumerate(keys):
        amount = spend[i % len(spend)]
        low.add_spend(key, amount)
        high.add_spend(key, amount + more[i % len(more)])
    before = ps.evaluate(subject, surface=surface, now=now, ledger=low)  # type: ignore[arg-type]
    after = ps.evaluate(subject, surface=surface, now=now, ledger=high)  # type: ignore[arg-type]
    if before.verdict == "deny":
        assert after.verdict == "deny"
    rank = {"skip": 0, "pass": 0, "warn": 1, "fail": 1, "error": 2}
    for b, a in zip(before.results, after.results, strict=True):
        assert rank[a.result] >= rank[b.result]
        if isinstance(b.actual, float) and isinstance(a.actual, float) and not math.isnan(b.actual):
            assert a.actual >= b.actual - 1e-9


# --- (4) compiled evaluation equals a reference evaluator ---------------------------------------

_GLOBS = {
    "providers": ["kubernetes", "aws", "anthropic", "openai", "*"],
    "kinds": ["Job", "*Job", "kubernetes/*", "aws/ec2-*", "messages", "anthropic/*", "Pod", "*"],
    "namespaces": ["ml", "default", "kube-*", "*"],
    "names": ["train", "serve-*", "", "*"],
}
_REGEXES = ["^(prod|staging|dev)$", "[0-9]", "a", "^$"]


def _block(draw: st.DrawFn, *, wildcards: bool) -> dict[str, Any]:
    block: dict[str, Any] = {}
    for key, options in _GLOBS.items():
        if draw(st.booleans()):
            choices = options if wildcards else [o for o in options if "*" not in o]
            block[key] = draw(st.lists(st.sampled_from(choices), min_size=1, max_size=2, unique=True))
    if draw(st.booleans()):
        selector: dict[str, Any] = {}
        labels = draw(st.dictionaries(_tag_keys, st.sampled_from(["ml", "prod", "alice", ""]), max_size=2))
        if labels:
            selector["matchLabels"] = labels
        expressions = draw(
            st.lists(
                st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]).flatmap(
                    lambda op: st.fixed_dictionaries(  # values as Kubernetes requires them for the operator
                        {
                            "key": _tag_keys,
                            "operator": st.just(op),
                            "values": st.lists(st.sampled_from(["ml", "prod", "dev", ""]), min_size=1, max_size=2)
                            if op in ("In", "NotIn")
                            else st.just([]),
                        }
                    )
                ),
                max_size=2,
            )
        )
        if expressions:
            selector["matchExpressions"] = expressions
        if selector or wildcards:
            block["selector"] = selector
    return block


@st.composite
def policy_specs(draw: st.DrawFn, index: int) -> dict[str, Any]:
    subject = draw(st.sampled_from(["resource", "llm_call"]))
    rules = []
    for i in range(draw(st.integers(min_value=1, max_value=2))):
        if subject == "resource" and draw(st.booleans()):
            rule: dict[str, Any] = {
                "name": f"spot-{i}",
                "spotOnly": {
                    "workloadClasses": draw(
                        st.lists(st.sampled_from(["batch", "online", "training", "unknown"]), min_size=1, unique=True)
                    ),
                    "minGpus": draw(st.sampled_from([0, 1, 4])),
                },
            }
        else:
            rule = {
                "name": f"tags-{i}",
                "requireTags": {
                    "keys": draw(st.lists(_tag_keys, max_size=3, unique=True)),
                    "values": draw(st.dictionaries(_tag_keys, st.sampled_from(_REGEXES), max_size=2)),
                },
            }
        rules.append(rule)
    enforcement = {"default": draw(_EFFECT), **{s: draw(_EFFECT) for s in draw(st.sets(st.sampled_from(SURFACES)))}}
    spec: dict[str, Any] = {
        "subject": subject,
        "match": _block(draw, wildcards=True),
        "enforcement": enforcement,
        "rules": rules,
    }
    if draw(st.booleans()):
        # exclude blocks whose every constraint admits anything ("*", an empty selector) are left
        # out: the engine reads them as no exclude at all, a choice this reference does not model
        spec["exclude"] = _block(draw, wildcards=False)
    return {"apiVersion": "costwarden.dev/v1", "kind": "Policy", "metadata": {"name": f"p{index}"}, "spec": spec}


@st.composite
def policy_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    return [draw(policy_specs(i)) for i in range(draw(st.integers(min_value=1, max_value=4)))]


def _globs_match(globs: list[str] | None, value: str | None) -> bool:
    if globs is None or "*" in globs:
        return True
    return value is not None and any(fnmatch.fnmatchcase(value, g) for g in globs)


def _selector_matches(selector: Mapping[str, Any] | None, tags: Mapping[str, str]) -> bool:
    if not selector:
        return True
    if any(tags.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {
            "In": key in tags and tags[key] in values,
            "NotIn": key not in tags or tags[key] not in values,
            "Exists": key in tags,
            "DoesNotExist": key not in tags,
        }[op]
        if not ok:
            return False
    return True


def _tags_of(subject: Subject) -> dict[str, str]:
    if isinstance(subject, LlmCall):
        tags = dict(subject.tags)
        for key in ("feature", "user", "team"):
            if getattr(subject, key):
                tags[key] = getattr(subject, key)
        return tags
    return dict(subject.tags)


def _block_matches(block: Mapping[str, Any], subject: Subject) -> bool:
    provider, kind = subject.provider, subject.kind
    providers = block.get("providers")
    if providers is not None and "*" not in providers and provider not in providers:
        return False
    kinds = block.get("kinds")
    if not (_globs_match(kinds, kind) or _globs_match(kinds, f"{provider}/{kind}")):
        return False
    return (
        _globs_match(block.get("namespaces"), subject.namespace)
        and _globs_match(block.get("names"), subject.name)
        and _selector_matches(block.get("selector"), _tags_of(subject))
    )


def _require_tags(params: Mapping[str, Any], subject: Subject) -> str:
    tags = _tags_of(subject)
    missing = [k for k in params["keys"] if not tags.get(k)]
    bad = [k for k, rx in params["values"].items() if tags.get(k) and not re.search(rx, tags[k])]
    return "fail" if missing or bad else "pass"


def _spot_only(params: Mapping[str, Any], subject: Subject) -> str:
    assert isinstance(subject, ResourceSubject)
    if subject.workload.workload_class not in params["workloadClasses"]:
        return "skip"
    if subject.workload.gpus < params["minGpus"]:
        return "skip"
    return "pass" if subject.capacity == "spot" else "fail"


def reference(docs: list[dict[str, Any]], subject: Subject, surface: str) -> tuple[list[tuple[str, ...]], str]:
    """Every policy, in order, judged the plain way; then the verdict."""
    out = []
    for doc in docs:
        spec = doc["spec"]
        if spec["subject"] != subject.type:
            continue
        effect = spec["enforcement"].get(surface, spec["enforcement"]["default"])
        if effect == "off" or not _block_matches(spec["match"], subject):
            continue
        exclude = spec.get("exclude")
        if exclude and _block_matches(exclude, subject):
            continue
        for rule in spec["rules"]:
            if "spotOnly" in rule:
                result = _spot_only(rule["spotOnly"], subject)
            else:
                result = _require_tags(rule["requireTags"], subject)
            if result == "fail" and effect == "warn":
                result = "warn"
            out.append((doc["metadata"]["name"], rule["name"], result, effect))
    deny = any(result == "fail" and effect == "deny" for _, _, result, effect in out)
    return out, "deny" if deny else "allow"


@settings(PROPERTY, max_examples=100)
@given(docs=policy_sets(), subject=st.one_of(resources(), llm_calls()), surface=surfaces)
def test_compiled_evaluation_equals_the_reference(docs: list[dict[str, Any]], subject: Subject, surface: str) -> None:
    text = "\n---\n".join(json.dumps(d) for d in docs)  # JSON is YAML
    loaded = load_text(text, file="random.yaml")
    assert loaded.diagnostics == []
    ps = compile_documents(loaded.documents)
    decision = ps.evaluate(subject, surface=surface, now=BASE_NOW)  # type: ignore[arg-type]
    got = [(r.policy, r.rule, r.result, r.effect) for r in decision.results]
    expected, verdict = reference(docs, subject, surface)
    assert got == expected
    assert decision.verdict == verdict


def test_reference_evaluator_can_deny() -> None:
    """The reference is not vacuous: it denies a plain failing case and allows a passing one."""
    doc = {
        "apiVersion": "costwarden.dev/v1",
        "kind": "Policy",
        "metadata": {"name": "p0"},
        "spec": {
            "subject": "resource",
            "match": {"kinds": ["Job"]},
            "enforcement": {"default": "deny"},
            "rules": [{"name": "tags-0", "requireTags": {"keys": ["team"], "values": {}}}],
        },
    }
    job = subject_from_dict({"type": "resource", "provider": "kubernetes", "kind": "Job"})
    labelled = subject_from_dict({"type": "resource", "provider": "kubernetes", "kind": "Job", "tags": {"team": "a"}})
    assert reference([doc], job, "ci") == ([("p0", "tags-0", "fail", "deny")], "deny")
    assert reference([doc], labelled, "ci")[1] == "allow"


# --- generated plans --------------------------------------------------------------------------


def _same(a: Decision, b: Decision) -> bool:
    """Equal decisions; NaN (from subjects built with NaN prices) is unequal to itself, so
    decisions that differ only there are compared by their text."""
    return a == b or repr(a) == repr(b)


def _without_shortcuts(ps: PolicySet) -> PolicySet:
    """The same policies with every rule's shortcuts and outcome keys removed: the plans then call
    every check."""
    policies = tuple(
        dataclasses.replace(p, rules=tuple(dataclasses.replace(r, shortcuts=(), outcome_key=None) for r in p.rules))
        for p in ps.policies
    )
    return PolicySet(policies, ps.exemptions, ps.catalog, ps.pricer, ps.files, ps.clock)


@PROPERTY
@given(docs=policy_sets(), subject=st.one_of(resources(), llm_calls()), surface=surfaces)
def test_shortcuts_never_change_a_decision(docs: list[dict[str, Any]], subject: Subject, surface: str) -> None:
    loaded = load_text("\n---\n".join(json.dumps(d) for d in docs), "generated.yaml")
    ps = compile_documents(loaded.documents, diagnostics=loaded.diagnostics)
    plain = _without_shortcuts(ps)
    assert _same(ps.evaluate(subject, surface), plain.evaluate(subject, surface))  # type: ignore[arg-type]
    assert _same(ps.evaluator(surface)(subject), plain.evaluate(subject, surface))  # type: ignore[arg-type]


def _neighbours(subject: Subject) -> list[Subject]:
    """Subjects that differ from ``subject`` in one field a rule reads: an outcome key that left
    the field out would serve one of them another's result."""
    if not isinstance(subject, ResourceSubject):
        return [dataclasses.replace(subject, feature=None), dataclasses.replace(subject, tags={})]
    replace = dataclasses.replace
    out: list[Subject] = [replace(subject, capacity=c) for c in ("spot", "on-demand", "reserved", "unknown")]
    out += [replace(subject, tags={k: v for k, v in subject.tags.items() if k != key}) for key in subject.tags]
    out += [dataclasses.replace(subject, tags={**subject.tags, key: ""}) for key in subject.tags]
    out.append(dataclasses.replace(subject, tags_pointer="/metadata/labels"))
    out.append(dataclasses.replace(subject, hourly_usd=12.5))
    out.append(dataclasses.replace(subject, workload=subject.workload._replace(gpus=subject.workload.gpus + 1)))
    return out


@PROPERTY
@given(
    docs=policy_sets(),
    batch=st.lists(st.one_of(resources(), llm_calls()), min_size=1, max_size=4),
    surface=surfaces,
)
def test_outcome_tables_never_change_a_decision(docs: list[dict[str, Any]], batch: list[Subject], surface: str) -> None:
    """Plans fill their outcome tables from the subjects they judge (a key's result is kept the
    second time its outcome is seen): judging the same and similar subjects again, in any order,
    is served from the tables and must give the decisions the plain checks give."""
    loaded = load_text("\n---\n".join(json.dumps(d) for d in docs), "generated.yaml")
    ps = compile_documents(loaded.documents, diagnostics=loaded.diagnostics)
    plain = _without_shortcuts(ps)
    judge = ps.evaluator(surface)  # type: ignore[arg-type]
    batch = [*batch, *(near for subject in batch for near in _neighbours(subject))]
    for subjects in (batch, batch, list(reversed(batch)), batch):
        for subject in subjects:
            expected = plain.evaluate(subject, surface)  # type: ignore[arg-type]
            assert _same(judge(subject), expected)
            assert _same(ps.evaluate(subject, surface), expected)  # type: ignore[arg-type]
            rebuilt = dataclasses.replace(subject)  # a new, equal object: nothing cached on it
            assert _same(judge(rebuilt), expected)


@PROPERTY
@given(docs=policy_sets(), batch=st.lists(resources(), min_size=1, max_size=4), surface=surfaces)
def test_keys_that_read_a_shortcut_are_left_out_without_it(
    docs: list[dict[str, Any]], batch: list[Subject], surface: str
) -> None:
    """Outcome keys may read what their rule's first shortcut bound; a plan whose rules have
    keys but no shortcuts must not use those keys (a NameError would escape the engine)."""
    loaded = load_text("\n---\n".join(json.dumps(d) for d in docs), "generated.yaml")
    ps = compile_documents(loaded.documents, diagnostics=loaded.diagnostics)
    policies = tuple(
        dataclasses.replace(p, rules=tuple(dataclasses.replace(r, shortcuts=()) for r in p.rules)) for p in ps.policies
    )
    keys_only = PolicySet(policies, ps.exemptions, ps.catalog, ps.pricer, ps.files, ps.clock)
    plain = _without_shortcuts(ps)
    for subject in [*batch, *batch, *batch]:
        assert _same(keys_only.evaluate(subject, surface), plain.evaluate(subject, surface))  # type: ignore[arg-type]


@PROPERTY
@given(subject=subjects, surface=surfaces)
def test_library_plans_equal_plain_checks(subject: Subject, surface: str) -> None:
    ps = library()
    assert _same(ps.evaluate(subject, surface), _without_shortcuts(ps).evaluate(subject, surface))  # type: ignore[arg-type]


def test_plans_inline_the_shortcuts_of_tag_and_spot_rules() -> None:
    loaded = load_text(
        textwrap.dedent(
            """
            apiVersion: costwarden.dev/v1
            kind: Policy
            metadata: {name: tags-and-spot}
            spec:
              subject: resource
              rules:
                - {name: tags, requireTags: {keys: [team, "it's"]}}
                - {name: spot, spotOnly: {workloadClasses: [batch], minGpus: 1}}
            """
        ),
        "p.yaml",
    )
    ps = compile_documents(loaded.documents, diagnostics=loaded.diagnostics)
    job = subject_from_dict(
        {
            "type": "resource",
            "provider": "kubernetes",
            "kind": "Job",
            "tags": {"team": "ml", "it's": "x"},
            "capacity": "spot",
            "workload": {"class": "batch", "gpus": 2},
        }
    )
    source = ps.plan_source(job)
    assert "(_v0 := _t['team'] if 'team' in (_t := subject.tags) else None)" in source
    assert "(_v1 := _t[\"it's\"] if \"it's\" in _t else None),) and _v0 and _v1" in source
    assert "_w.gpus >= 1.0" in source
    decision = ps.evaluate(job)
    assert [r.result for r in decision.results] == ["pass", "pass"] and decision.allowed
    fewer = subject_from_dict({**job.to_dict(), "workload": {"class": "batch", "gpus": 0.5}})
    assert ps.evaluate(fewer).results[1].result == "skip"  # below minGpus: not a shortcut, the check says skip
