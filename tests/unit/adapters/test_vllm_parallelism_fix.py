"""The parallelism fix proposes only layouts vLLM starts with: vLLM refuses a tensor-parallel size
that does not divide the model's attention heads ("Total number of attention heads must be
divisible by tensor parallel size"). Real Deployments are detected, judged, fixed and judged again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import jsonpatch

from costwarden.adapters.kubernetes import subjects_from_object
from costwarden.adapters.vllm.detect import serving_configs_from_resource
from costwarden.engine.decision import RuleResult
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.subjects import ServingConfig

CompilePolicies = Callable[..., PolicySet]


def _policy(rule: str = "{}") -> str:
    return (
        "apiVersion: costwarden.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  subject: serving_config\n"
        f"  rules:\n    - name: r\n      servingConfig: {rule}\n"
    )


def _subject(model: str, args: list[str], gpus: int) -> ServingConfig:
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "llm"},
        "spec": {"template": {"spec": {"containers": [{
            "name": "vllm",
            "image": "vllm/vllm-openai:v0.11.0",
            "command": ["vllm", "serve", model, *args],
            "resources": {"limits": {"nvidia.com/gpu": gpus}},
        }]}}},
    }
    [subject] = serving_configs_from_resource(subjects_from_object(dep)[0])
    return subject


def _judge(ps: PolicySet, subject: ServingConfig) -> RuleResult:
    [result] = ps.evaluate(subject).results
    return result


def _fixed(subject: ServingConfig, result: RuleResult) -> ServingConfig:
    assert result.fix is not None, result.message
    args: dict[str, Any] = jsonpatch.apply_patch(dict(subject.args), [dict(op) for op in result.fix.patch])
    return replace(subject, args=args)


def test_fix_does_not_propose_a_tp_that_does_not_divide_the_heads(compile_policies: CompilePolicies) -> None:
    """Qwen2.5-7B has 28 attention heads: TP 8 would not start; TP 4 with 2 data-parallel ranks does."""
    ps = compile_policies(_policy())
    subject = _subject("Qwen/Qwen2.5-7B-Instruct", ["-tp", "4"], gpus=8)
    result = _judge(ps, subject)
    assert result.result == "fail" and result.fix is not None
    assert 28 % int(_fixed(subject, result).args["tensor_parallel_size"]) == 0
    assert result.fix.description == "set --data-parallel-size 2"
    assert _judge(ps, _fixed(subject, result)).result == "pass"


def test_a_tp_that_does_not_divide_the_heads_fails(compile_policies: CompilePolicies) -> None:
    ps = compile_policies(_policy())
    subject = _subject("Qwen/Qwen2.5-7B-Instruct", ["-tp", "8"], gpus=8)
    result = _judge(ps, subject)
    assert result.result == "fail" and "28 attention heads" in result.message and "will not start" in result.message
    assert result.fix is not None and result.fix.description == "set --tensor-parallel-size 4 --data-parallel-size 2"
    assert _judge(ps, _fixed(subject, result)).result == "pass"


def test_unknown_heads_get_a_power_of_two_and_the_reason(compile_policies: CompilePolicies) -> None:
    """6 GPUs, heads unknown: TP 6 fits few models; propose TP 2 x DP 3 and say why."""
    ps = compile_policies(_policy())
    subject = _subject("my-org/private-model", ["-tp", "1"], gpus=6)
    result = _judge(ps, subject)
    assert result.fix is not None
    fixed = _fixed(subject, result)
    assert (fixed.args["tensor_parallel_size"], fixed.args["data_parallel_size"]) == (2, 3)
    assert "attention heads" in result.fix.description and "divisible" in result.fix.description
    assert _judge(ps, fixed).result == "pass"


def test_unknown_heads_power_of_two_gpu_count_keeps_the_simple_fix(compile_policies: CompilePolicies) -> None:
    ps = compile_policies(_policy())
    subject = _subject("my-org/private-model", ["-tp", "2"], gpus=8)
    result = _judge(ps, subject)
    assert result.fix is not None and result.fix.patch == (
        {"op": "add", "path": "/tensor_parallel_size", "value": 8},
    )


def test_heads_from_hf_overrides(compile_policies: CompilePolicies) -> None:
    ps = compile_policies(_policy())
    subject = _subject("my-org/private-model", ["--hf-overrides", '{"num_attention_heads": 12}'], gpus=8)
    result = _judge(ps, subject)
    fixed = _fixed(subject, result)
    assert (fixed.args["tensor_parallel_size"], fixed.args["data_parallel_size"]) == (4, 2)
    bad = _subject("my-org/private-model", ["--hf-overrides", '{"num_attention_heads": 12}', "-tp", "8"], gpus=8)
    assert "12 attention heads" in _judge(ps, bad).message


def test_heads_given_in_the_policy(compile_policies: CompilePolicies) -> None:
    ps = compile_policies(_policy('{attentionHeads: {"my-org/*": 20}}'))
    subject = _subject("my-org/private-model", [], gpus=8)
    fixed = _fixed(subject, _judge(ps, subject))
    assert (fixed.args["tensor_parallel_size"], fixed.args["data_parallel_size"]) == (4, 2)
    assert _judge(ps, fixed).result == "pass"


def test_pipeline_parallel_layout_that_cannot_fill_the_gpus_has_no_fix(compile_policies: CompilePolicies) -> None:
    ps = compile_policies(_policy())
    subject = _subject("Qwen/Qwen3-8B", ["-pp", "3"], gpus=8)
    result = _judge(ps, subject)
    assert result.result == "fail" and result.fix is None
