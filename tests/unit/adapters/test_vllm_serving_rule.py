"""servingConfig on real vLLM detections: a Deployment is parsed, turned into its
``serving_config`` subject and judged by a compiled policy (no hand-made subjects)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import jsonpatch
import pytest

from costwarden.adapters.kubernetes import subjects_from_object
from costwarden.adapters.vllm.detect import serving_configs_from_resource
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.subjects import ServingConfig

CompilePolicies = Callable[..., PolicySet]


def _policy(rule: str) -> str:
    return (
        "apiVersion: costwarden.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  subject: serving_config\n"
        f"  rules:\n    - name: r\n      servingConfig: {rule}\n"
    )


def _deployment(image: str, args: list[str], gpus: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "llm"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "vllm",
                            "image": image,
                            "command": ["vllm", "serve"],
                            "args": args,
                            "resources": {"limits": {"nvidia.com/gpu": gpus}},
                        }
                    ]
                }
            }
        },
    }


def _subject(image: str, args: list[str]) -> ServingConfig:
    [subject] = serving_configs_from_resource(subjects_from_object(_deployment(image, args))[0])
    return subject


REMOVED = ("vllm/vllm-openai:v0.33.0", ["org/m", "--swap-space", "16"])  # vLLM 0.33 exits: unrecognized


def test_removed_argument_is_refused_under_the_default_policy(compile_policies: CompilePolicies) -> None:
    subject = _subject(*REMOVED)
    assert subject.engine_version == "0.33.0" and subject.deprecated_args == ("swap_space",)
    decision = compile_policies(_policy("{}")).evaluate(subject)
    [result] = decision.results
    assert result.result == "fail" and "--swap-space" in result.message and "refuse to start" in result.message


def test_removed_argument_is_reported_once_with_an_applicable_fix(compile_policies: CompilePolicies) -> None:
    subject = _subject(*REMOVED)
    decision = compile_policies(_policy("{forbidDeprecatedArgs: true}")).evaluate(subject)
    [result] = decision.results
    assert result.result == "fail" and result.fix is not None and "--swap-space" in result.fix.description
    original = copy.deepcopy(dict(subject.args))
    fixed = jsonpatch.apply_patch(original, [dict(op) for op in result.fix.patch])  # must not raise
    assert fixed == original  # an unknown argument never reached vLLM's namespace


def test_deprecated_argument_in_args_is_still_removed_by_the_fix(compile_policies: CompilePolicies) -> None:
    subject = _subject("vllm/vllm-openai:v0.11.0", ["org/m", "--disable-log-requests"])
    assert subject.deprecated_args == ("disable_log_requests",) and subject.arg_errors == ()
    [result] = compile_policies(_policy("{forbidDeprecatedArgs: true}")).evaluate(subject).results
    assert result.fix is not None
    assert result.fix.patch == ({"op": "remove", "path": "/disable_log_requests"},)
    [passing] = compile_policies(_policy("{}")).evaluate(subject).results  # deprecated still starts
    assert passing.result == "pass"


@pytest.mark.parametrize(
    "args",
    [
        ["sh", "-c", "vllm serve org/m --max-model-len 4096 2>&1 | tee /var/log/vllm.log"],
        ["sh", "-c", "exec vllm serve org/m > /proc/1/fd/1 2>/proc/1/fd/2"],
    ],
)
def test_logged_shell_command_is_not_refused(compile_policies: CompilePolicies, args: list[str]) -> None:
    dep = _deployment("vllm/vllm-openai:v0.33.0", [])
    container = dep["spec"]["template"]["spec"]["containers"][0]
    container["command"], container["args"] = args[:2], args[2:]
    [subject] = serving_configs_from_resource(subjects_from_object(dep)[0])
    assert subject.arg_errors == ()
    [result] = compile_policies(_policy("{}")).evaluate(subject).results
    assert result.result == "pass"


def test_one_node_of_a_multi_node_data_parallel_deployment(compile_policies: CompilePolicies) -> None:
    """vLLM's multi-node data parallelism: each node runs --data-parallel-size-local ranks, so one
    pod uses TP x PP x DP-local GPUs, not TP x PP x DP."""
    args = [
        "org/m",
        "-tp",
        "2",
        "--data-parallel-size",
        "4",
        "--data-parallel-size-local",
        "2",
        "--data-parallel-address",
        "10.0.0.1",
    ]
    dep = _deployment("vllm/vllm-openai:v0.11.0", args, gpus=4)
    [subject] = serving_configs_from_resource(subjects_from_object(dep)[0])
    assert (subject.args["data_parallel_size"], subject.args["data_parallel_size_local"]) == (4, 2)
    [result] = compile_policies(_policy("{}")).evaluate(subject).results
    assert result.result == "pass", result.message
    short = _deployment("vllm/vllm-openai:v0.11.0", args, gpus=2)  # this node's 2 ranks need 4
    [subject] = serving_configs_from_resource(subjects_from_object(short)[0])
    [result] = compile_policies(_policy("{}")).evaluate(subject).results
    assert result.result == "fail" and "will not start" in result.message


def test_memoised_verdicts_tell_data_parallel_size_local_apart(compile_policies: CompilePolicies) -> None:
    ps = compile_policies(_policy("{}"))
    base = ["org/m", "-tp", "2", "--data-parallel-size", "4"]
    verdicts = []
    for extra in ([], ["--data-parallel-size-local", "2"], []):
        [subject] = serving_configs_from_resource(
            subjects_from_object(_deployment("vllm/vllm-openai:v0.11.0", base + extra, gpus=4))[0]
        )
        [result] = ps.evaluate(subject).results
        verdicts.append(result.result)
    assert verdicts == ["fail", "pass", "fail"]
