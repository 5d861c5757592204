"""Subjects: built from plain data with field-path errors, frozen, and back to plain data."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costwarden.engine.subjects import (
    LlmCall,
    LlmRequest,
    Resource,
    ServingConfig,
    SourceLocation,
    TokenUsage,
    Workload,
    replace,
    subject_from_dict,
)
from costwarden.errors import SubjectError

RESOURCE: dict[str, Any] = {
    "type": "resource",
    "provider": "kubernetes",
    "kind": "Job",
    "name": "train",
    "namespace": "ml",
    "region": "us-east-1",
    "tags": {"team": "ml", "feature": "search"},
    "capacity": "spot",
    "workload": {"class": "batch", "gpus": 8, "gpu_type": "H100", "instance_type": "p5.48xlarge", "replicas": 2},
    "hourly_usd": 110.08,
    "source": {"file": "job.yaml", "line": 3, "pointer": "/0"},
}

LLM_CALL: dict[str, Any] = {
    "type": "llm_call",
    "provider": "anthropic",
    "model": "claude-sonnet-4-5",
    "feature": "search",
    "user": "alice",
    "team": "growth",
    "tags": {"env": "prod"},
    "phase": "post",
    "request": {
        "api": "messages",
        "max_tokens": 1024,
        "input_tokens": 5000,
        "cacheable_prefix_tokens": 4000,
        "prefix_pointer": "/system",
        "cache_breakpoints": 1,
        "stream": True,
        "batch": False,
    },
    "usage": {
        "input_tokens": 100,
        "output_tokens": 200,
        "cache_read_tokens": 4000,
        "cache_write_5m_tokens": 10,
        "cache_write_1h_tokens": 5,
    },
    "estimated_cost_usd": 0.02,
    "actual_cost_usd": 0.0123,
    "latency_ms": 812.5,
}

SERVING: dict[str, Any] = {
    "type": "serving_config",
    "model": "meta-llama/Llama-3.1-70B-Instruct",
    "engine": "vllm",
    "engine_version": "0.10.1",
    "args": {"tensor_parallel_size": 4, "enable_prefix_caching": False},
    "gpus": 8,
    "gpu_type": "H100",
    "replicas": 3,
    "params_b": 70,
    "provider": "kubernetes",
    "kind": "Deployment",
    "name": "llama",
    "namespace": "serving",
    "tags": {"team": "inference"},
    "deprecated_args": ["disable_log_requests"],
}


class TestResource:
    def test_fields_from_dict(self) -> None:
        s = subject_from_dict(RESOURCE)
        assert isinstance(s, Resource)
        assert (s.type, s.provider, s.kind, s.name, s.namespace, s.region) == (
            "resource",
            "kubernetes",
            "Job",
            "train",
            "ml",
            "us-east-1",
        )
        assert dict(s.tags) == {"team": "ml", "feature": "search"}
        assert s.capacity == "spot"
        assert s.workload == Workload("batch", 8.0, "H100", "p5.48xlarge", 2)
        assert s.hourly_usd == pytest.approx(110.08)
        assert s.source == SourceLocation("job.yaml", 3, "/0")

    def test_defaults(self) -> None:
        s = subject_from_dict({"type": "resource", "provider": "aws", "kind": "ec2-instance"})
        assert isinstance(s, Resource)
        assert s.name == ""
        assert s.namespace is None
        assert dict(s.tags) == {}
        assert s.capacity == "unknown"
        assert s.workload == Workload()
        assert s.workload.workload_class == "unknown"
        assert s.hourly_usd is None
        assert s.raw is None
        assert s.pod_spec_pointers == ()
        assert dict(s.annotations) == {}

    def test_annotations_are_carried_apart_from_tags(self) -> None:
        data = {"type": "resource", "provider": "kubernetes", "kind": "Deployment", "tags": {"app": "d"},
                "annotations": {"costwarden.dev/cost-approved-by": "ana@example.com", "n": 3}}
        s = subject_from_dict(data)
        assert isinstance(s, Resource)
        assert dict(s.annotations) == {"costwarden.dev/cost-approved-by": "ana@example.com", "n": "3"}
        assert dict(s.tags) == {"app": "d"}
        assert s.as_cel["annotations"] == {"costwarden.dev/cost-approved-by": "ana@example.com", "n": "3"}
        assert subject_from_dict(s.to_dict()) == s
        with pytest.raises(TypeError):
            s.annotations["x"] = "y"  # type: ignore[index]

    def test_numbers_become_floats_and_tag_values_strings(self) -> None:
        s = subject_from_dict(
            {"type": "resource", "provider": "aws", "kind": "x", "tags": {"n": 3, "on": True, "empty": None}}
        )
        assert isinstance(s, Resource)
        assert dict(s.tags) == {"n": "3", "on": "true", "empty": ""}
        assert isinstance(s.workload.gpus, float)

    def test_raw_and_pointers_are_carried(self) -> None:
        raw = {"metadata": {"labels": {}}}
        s = subject_from_dict(
            {
                "type": "resource",
                "provider": "kubernetes",
                "kind": "Pod",
                "raw": raw,
                "tags_pointer": "/metadata/labels",
                "pod_spec_pointers": ["/spec"],
            }
        )
        assert isinstance(s, Resource)
        assert s.raw == raw
        assert s.tags_pointer == "/metadata/labels"
        assert s.pod_spec_pointers == ("/spec",)

    def test_label(self) -> None:
        assert subject_from_dict(RESOURCE).label() == "kubernetes/Job ml/train"
        bare = subject_from_dict({"type": "resource", "provider": "aws", "kind": "ec2-instance"})
        assert bare.label() == "aws/ec2-instance -"


class TestLlmCall:
    def test_fields_from_dict(self) -> None:
        s = subject_from_dict(LLM_CALL)
        assert isinstance(s, LlmCall)
        assert (s.provider, s.model, s.feature, s.user, s.team, s.phase) == (
            "anthropic",
            "claude-sonnet-4-5",
            "search",
            "alice",
            "growth",
            "post",
        )
        assert s.request == LlmRequest("messages", 1024, "max_tokens", 5000, 4000, "/system", 1, True, False)
        assert s.usage == TokenUsage(100, 200, 4000, 10, 5)
        assert s.usage.cache_write_tokens == 15
        assert s.usage.total_input_tokens == 100 + 4000 + 15
        assert s.actual_cost_usd == pytest.approx(0.0123)
        assert s.latency_ms == pytest.approx(812.5)

    def test_web_searches_and_audio_round_trip_and_reach_cel(self) -> None:
        from costwarden.engine.cel import compile_cel

        data = {**LLM_CALL, "request": {**LLM_CALL["request"], "max_web_searches": 5, "output_audio": True},
                "usage": {**LLM_CALL["usage"], "web_search_requests": 3, "input_audio_tokens": 40,
                          "output_audio_tokens": 50}}
        s = subject_from_dict(data)
        assert isinstance(s, LlmCall) and s.usage is not None
        assert (s.usage.web_search_requests, s.usage.input_audio_tokens, s.usage.output_audio_tokens) == (3, 40, 50)
        assert s.request.max_web_searches == 5 and s.request.output_audio
        assert subject_from_dict(s.to_dict()) == s
        program = compile_cel("subject.usage.web_search_requests > 2 && subject.request.max_web_searches == 5 "
                              "&& subject.usage.output_audio_tokens == 50")
        assert program.evaluate_bool(s.as_cel)

    def test_image_tokens_and_image_output_round_trip_and_reach_cel(self) -> None:
        from costwarden.engine.cel import compile_cel

        data = {**LLM_CALL, "request": {**LLM_CALL["request"], "output_image": True},
                "usage": {**LLM_CALL["usage"], "input_image_tokens": 60, "output_image_tokens": 150}}
        s = subject_from_dict(data)
        assert isinstance(s, LlmCall) and s.usage is not None
        assert (s.usage.input_image_tokens, s.usage.output_image_tokens) == (60, 150)
        assert s.request.output_image and not s.request.output_audio
        assert s.to_dict()["usage"]["output_image_tokens"] == 150 and s.to_dict()["request"]["output_image"]
        assert subject_from_dict(s.to_dict()) == s
        assert not subject_from_dict(LLM_CALL).request.output_image  # absent: text output
        program = compile_cel("subject.usage.output_image_tokens == 150 && subject.request.output_image")
        assert program.evaluate_bool(s.as_cel)

    def test_kind_name_namespace_are_derived(self) -> None:
        s = subject_from_dict(LLM_CALL)
        assert s.kind == "messages"
        assert s.name == "search"
        assert s.namespace is None

    def test_defaults(self) -> None:
        s = subject_from_dict({"type": "llm_call", "provider": "openai", "model": "gpt-4.1"})
        assert isinstance(s, LlmCall)
        assert s.phase == "pre"
        assert s.request == LlmRequest()
        assert s.usage is None
        assert s.name == ""
        assert s.body is None

    def test_attribution_adds_feature_user_team_to_tags(self) -> None:
        s = subject_from_dict(LLM_CALL)
        assert isinstance(s, LlmCall)
        assert s.attribution == {"env": "prod", "feature": "search", "user": "alice", "team": "growth"}

    def test_attribution_fields_override_tags_and_skip_empty(self) -> None:
        s = subject_from_dict(
            {
                "type": "llm_call",
                "provider": "openai",
                "model": "gpt-4.1",
                "user": "bob",
                "feature": "",
                "tags": {"user": "spoofed", "feature": "from-tag"},
            }
        )
        assert isinstance(s, LlmCall)
        assert s.attribution == {"user": "bob", "feature": "from-tag"}

    def test_attribution_cannot_change_the_subject(self) -> None:
        s = subject_from_dict(LLM_CALL)
        assert isinstance(s, LlmCall)
        with contextlib.suppress(TypeError):  # a read-only view or a fresh copy are both fine
            s.attribution["user"] = "mallory"  # type: ignore[index]
        assert s.attribution["user"] == "alice"
        assert s.user == "alice"

    def test_label(self) -> None:
        assert subject_from_dict(LLM_CALL).label() == "anthropic/messages search"


class TestServingConfig:
    def test_fields_from_dict(self) -> None:
        s = subject_from_dict(SERVING)
        assert isinstance(s, ServingConfig)
        assert s.model == "meta-llama/Llama-3.1-70B-Instruct"
        assert dict(s.args) == {"tensor_parallel_size": 4, "enable_prefix_caching": False}
        assert (s.gpus, s.gpu_type, s.replicas, s.params_b) == (8.0, "H100", 3, 70.0)
        assert (s.provider, s.kind, s.name, s.namespace) == ("kubernetes", "Deployment", "llama", "serving")
        assert s.deprecated_args == ("disable_log_requests",)

    def test_defaults(self) -> None:
        s = subject_from_dict({"type": "serving_config", "model": "m"})
        assert isinstance(s, ServingConfig)
        assert (s.engine, s.provider, s.kind, s.gpus, s.replicas) == ("vllm", "kubernetes", "vllm", 0.0, 1)
        assert dict(s.args) == {}


RES: dict[str, Any] = {"type": "resource", "provider": "k", "kind": "J"}
CALL: dict[str, Any] = {"type": "llm_call", "provider": "a", "model": "m"}


@pytest.mark.parametrize(
    ("data", "path", "text"),
    [
        ({"type": "pod"}, "type", "must be one of resource, llm_call, serving_config"),
        ({}, "type", "must be one of"),
        ({"type": "resource", "kind": "Job"}, "provider", "is required"),
        ({"type": "resource", "provider": "", "kind": "Job"}, "provider", "is required"),
        ({"type": "resource", "provider": "aws"}, "kind", "is required"),
        ({"type": "resource", "provider": 5, "kind": "Job"}, "provider", "must be a string, got int"),
        ({**RES, "workload": {"gpus": "2"}}, "workload.gpus", "number"),
        ({**RES, "workload": {"gpus": True}}, "workload.gpus", "boolean"),
        ({**RES, "workload": {"replicas": 1.5}}, "workload.replicas", "integer"),
        ({**RES, "workload": {"class": "web"}}, "workload.class", "one of"),
        ({**RES, "workload": []}, "workload", "an object"),
        ({**RES, "capacity": "cheap"}, "capacity", "spot, on-demand"),
        ({**RES, "tags": {"a": [1]}}, "tags.a", "strings"),
        ({**RES, "tags": ["a"]}, "tags", "an object"),
        ({**RES, "annotations": {"a": {"b": 1}}}, "annotations.a", "annotation values must be strings"),
        ({**RES, "annotations": "a=b"}, "annotations", "an object"),
        ({**RES, "hourly_usd": "1"}, "hourly_usd", "number"),
        ({**RES, "source": {"line": "3"}}, "source.line", "integer"),
        ({**RES, "raw": "x"}, "raw", "an object"),
        ({**RES, "pod_spec_pointers": [1]}, "pod_spec_pointers", "list"),
        ({"type": "llm_call", "model": "m"}, "provider", "is required"),
        ({"type": "llm_call", "provider": "openai"}, "model", "is required"),
        ({**CALL, "phase": "mid"}, "phase", "one of pre, post"),
        ({**CALL, "request": {"max_tokens": True}}, "request.max_tokens", "boolean"),
        ({**CALL, "request": {"stream": "yes"}}, "request.stream", "boolean"),
        ({**CALL, "request": 3}, "request", "an object"),
        ({**CALL, "request": {"choices": -1}}, "request.choices", ">= 0"),
        ({**CALL, "request": {"choices": "2"}}, "request.choices", "integer"),
        ({**CALL, "usage": {"input_tokens": 1.5}}, "usage.input_tokens", "integer"),
        ({**CALL, "user": 7}, "user", "string"),
        ({**CALL, "body": []}, "body", "an object"),
        ({"type": "serving_config"}, "model", "is required"),
        ({"type": "serving_config", "model": "m", "args": [1]}, "args", "an object"),
        ({"type": "serving_config", "model": "m", "deprecated_args": "x"}, "deprecated_args", "list"),
        ({"type": "serving_config", "model": "m", "gpus": "8"}, "gpus", "number"),
    ],
)
def test_errors_name_the_field(data: dict[str, Any], path: str, text: str) -> None:
    with pytest.raises(SubjectError) as info:
        subject_from_dict(data)
    assert info.value.path == path
    assert text in str(info.value)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize("data", [[1], "resource", None, 3])
def test_non_object_is_a_subject_error(data: Any) -> None:
    with pytest.raises(SubjectError, match="JSON object"):
        subject_from_dict(data)


class TestFrozen:
    @pytest.mark.parametrize("data", [RESOURCE, LLM_CALL, SERVING])
    def test_fields_cannot_be_assigned(self, data: dict[str, Any]) -> None:
        s = subject_from_dict(data)
        with pytest.raises(dataclasses.FrozenInstanceError):
            s.name = "other"  # type: ignore[misc]

    @pytest.mark.parametrize("data", [RESOURCE, LLM_CALL, SERVING])
    def test_tags_cannot_be_mutated(self, data: dict[str, Any]) -> None:
        s = subject_from_dict(data)
        with pytest.raises(TypeError):
            s.tags["team"] = "x"  # type: ignore[index]

    def test_args_cannot_be_mutated(self) -> None:
        s = subject_from_dict(SERVING)
        assert isinstance(s, ServingConfig)
        with pytest.raises(TypeError):
            s.args["max_num_seqs"] = 1  # type: ignore[index]

    def test_input_dict_is_copied(self) -> None:
        tags = {"team": "ml"}
        s = Resource(provider="aws", kind="x", tags=tags)
        tags["team"] = "changed"
        assert s.tags["team"] == "ml"

    def test_nested_records_are_frozen(self) -> None:
        s = subject_from_dict(LLM_CALL)
        assert isinstance(s, LlmCall)
        with pytest.raises(dataclasses.FrozenInstanceError):
            s.request.max_tokens = 1  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            s.usage.output_tokens = 1  # type: ignore[misc, union-attr]

    @pytest.mark.parametrize("data", [RESOURCE, LLM_CALL, SERVING])
    def test_to_dict_result_does_not_alias_the_subject(self, data: dict[str, Any]) -> None:
        """Mutating what to_dict() returned must not change the subject (nor what CEL sees)."""
        s = subject_from_dict(data)
        before = s.to_dict()
        out = s.to_dict()
        out["tags"]["injected"] = "yes"
        out["source"]["file"] = "elsewhere"
        assert s.to_dict() == before
        assert "injected" not in s.as_cel["tags"]

    def test_replace_keeps_type_and_original(self) -> None:
        s = subject_from_dict(RESOURCE)
        t = replace(s, capacity="on-demand")
        assert isinstance(t, Resource)
        assert t.capacity == "on-demand"
        assert s.capacity == "spot"


class TestToDict:
    @pytest.mark.parametrize("data", [RESOURCE, LLM_CALL, SERVING])
    def test_round_trip(self, data: dict[str, Any]) -> None:
        s = subject_from_dict(data)
        again = subject_from_dict(s.to_dict())
        assert again == s
        assert again.to_dict() == s.to_dict()

    def test_round_trip_keeps_patch_pointers(self) -> None:
        """to_dict() is documented as the inverse of subject_from_dict: fixes need the pointers."""
        s = subject_from_dict(
            {**RESOURCE, "tags_pointer": "/metadata/labels", "pod_spec_pointers": ["/spec/template/spec"]}
        )
        again = subject_from_dict(s.to_dict())
        assert isinstance(again, Resource)
        assert again.tags_pointer == "/metadata/labels"
        assert again.pod_spec_pointers == ("/spec/template/spec",)
        assert again == s

    def test_shape_is_json_data(self) -> None:
        d = subject_from_dict(LLM_CALL).to_dict()
        assert d["type"] == "llm_call"
        assert d["kind"] == "messages"
        assert d["request"]["max_tokens"] == 1024
        assert d["usage"]["cache_read_tokens"] == 4000
        assert isinstance(d["tags"], dict)
        r = subject_from_dict(RESOURCE).to_dict()
        assert r["workload"] == {
            "class": "batch",
            "gpus": 8.0,
            "gpu_type": "H100",
            "instance_type": "p5.48xlarge",
            "replicas": 2,
        }
        assert "raw" not in r

    def test_cel_view_is_to_dict(self) -> None:
        s = subject_from_dict(SERVING)
        assert s.to_dict() == s.as_cel
        assert s.to_dict()["deprecated_args"] == ["disable_log_requests"]

    def test_raw_is_not_compared(self) -> None:
        a = subject_from_dict({**RESOURCE, "raw": {"a": 1}})
        b = subject_from_dict({**RESOURCE, "raw": {"b": 2}})
        assert a == b


# --- the from-dict fast path ------------------------------------------------------------------

_odd_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 3),
    st.sampled_from([0.0, 1.0, 2.5, -1.0, float("nan"), float("inf")]),
    st.sampled_from(["", "batch", "online", "spot", "on-demand", "H100", "x"]),
)
_text = st.sampled_from(["a", "ml", "prod"])


def _mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a valid value (so the fast path runs), sometimes an odd one (so it must step aside)."""
    return st.integers(0, 9).flatmap(lambda i: valid if i else _odd_scalars)


_fields_of_resource = {
    "provider": _mostly(st.just("kubernetes")),
    "kind": _mostly(st.just("Job")),
    "name": _mostly(_text),
    "namespace": _mostly(_text),
    "region": _mostly(_text),
    "capacity": _mostly(st.sampled_from(["spot", "on-demand", "reserved", "unknown"])),
    "hourly_usd": _mostly(st.none()),
    "tags": _mostly(
        st.dictionaries(st.one_of(st.sampled_from(["team", "env"]), st.integers(0, 2)), _mostly(_text), max_size=3)
    ),
    "workload": _mostly(
        st.fixed_dictionaries(
            {},
            optional={
                "class": _mostly(st.sampled_from(["batch", "online", "training", "unknown"])),
                "gpus": _mostly(st.sampled_from([0, 1, 2.0, 8])),
                "gpu_type": _mostly(st.sampled_from(["H100", "L4"])),
                "instance_type": _mostly(st.none()),
                "replicas": _mostly(st.sampled_from([0, 1, 3])),
                "extra": _odd_scalars,
            },
        )
    ),
}


@settings(max_examples=400, deadline=None)
@given(
    data=st.fixed_dictionaries(
        {"type": st.just("resource"), "provider": _fields_of_resource["provider"], "kind": _fields_of_resource["kind"]},
        optional={k: v for k, v in _fields_of_resource.items() if k not in ("provider", "kind")},
    )
)
def test_fast_resource_path_equals_the_validating_reader(data: dict[str, Any]) -> None:
    """Whatever the input, the fast path gives the validating reader's subject or its error."""
    from costwarden.engine.subjects import _resource_checked

    for _ in range(2):  # the second round sees the workloads the first one interned
        try:
            expected: Any = _resource_checked(data)
        except SubjectError as exc:
            with pytest.raises(SubjectError) as caught:
                subject_from_dict(data)
            assert (caught.value.path, str(caught.value)) == (exc.path, str(exc))
            continue
        got = subject_from_dict(data)
        assert got == expected
        assert dict(got.tags) == dict(expected.tags) and type(got.workload.gpus) is float


def test_neuron_cores_round_trip_and_bad_ones_name_the_field() -> None:
    data = {"type": "serving_config", "model": "meta-llama/Llama-3.1-8B", "gpus": 2, "neuron_cores": [4, 8]}
    s = subject_from_dict(data)
    assert isinstance(s, ServingConfig) and s.neuron_cores == (4.0, 8.0)
    assert subject_from_dict(s.to_dict()) == s  # a Neuron subject written out keeps its cores
    for bad in ([0], ["4"], [True], [float("nan")], 4):
        with pytest.raises(SubjectError, match="neuron_cores"):
            subject_from_dict({**data, "neuron_cores": bad})


def test_a_call_that_generates_no_output_loads_with_zero_choices() -> None:
    """An embeddings call logged as a dict (``choices: 0``) loads: its worst case is its input alone."""
    call = subject_from_dict({**CALL, "request": {"api": "embeddings", "choices": 0}})
    assert isinstance(call, LlmCall)
    assert call.request.choices == 0


def test_usages_sum_field_by_field_every_modality_included() -> None:
    a = TokenUsage(1, 2, 3, 4, 5, 6, 7, 8, input_image_tokens=9, output_image_tokens=10)
    b = TokenUsage(10, 20, 30, 40, 50, 60, 70, 80, input_image_tokens=90, output_image_tokens=100)
    total = a.plus(b)
    assert total.to_dict() == {k: a.to_dict()[k] + b.to_dict()[k] for k in a.to_dict()}
    assert total.output_image_tokens == 110 and total.input_audio_tokens == 77
