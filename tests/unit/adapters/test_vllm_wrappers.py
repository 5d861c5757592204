"""Launch wrappers in front of ``vllm serve`` (``timeout``, ``nice``, ``numactl``, ``uv run``...):
the server behind them is found with its own arguments, the wrapper's options are not taken for
vLLM's, and wrappers that do not run the command (``command -v``, ``taskset -p``) find nothing."""

from __future__ import annotations

import pytest

from costwarden.adapters.kubernetes import subjects_from_object
from costwarden.adapters.vllm.command import find_invocation
from costwarden.adapters.vllm.detect import serving_configs_from_resource
from costwarden.adapters.vllm.resolve_cmd import resolve

SERVE = ["vllm", "serve", "org/m", "-tp", "2"]


@pytest.mark.parametrize(
    "prefix",
    [
        ["timeout", "100"],
        ["timeout", "-s", "KILL", "-k", "5", "1h"],
        ["timeout", "--signal=TERM", "--preserve-status", "100"],
        ["nice", "-n", "5"],
        ["nice", "-n5"],
        ["nice", "--adjustment=5"],
        ["nice"],
        ["env", "A=B"],
        ["env", "-u", "HOME", "A=B"],
        ["env", "-i", "--unset=HOME", "--", "A=B"],
        ["exec"],
        ["exec", "-a", "server"],
        ["numactl", "--cpunodebind=0", "--membind=0", "--"],
        ["numactl", "-N", "0", "-m", "0"],
        ["numactl", "--interleave", "all"],
        ["stdbuf", "-oL", "-eL"],
        ["stdbuf", "-o", "L"],
        ["taskset", "-c", "0-7"],
        ["taskset", "0xff"],
        ["nohup"],
        ["setsid"],
        ["tini", "--"],
        ["tini", "-s", "-g", "--"],
        ["dumb-init", "--single-child"],
        ["dumb-init", "-r", "15:2"],
        ["gosu", "vllm"],
        ["sudo", "-E", "-u", "vllm"],
        ["ionice", "-c", "2", "-n", "0"],
        ["chrt", "-f", "10"],
        ["uv", "run"],
        ["uv", "run", "--with", "vllm==0.11.0", "--python", "3.12"],
        ["uv", "run", "--frozen", "--"],
        ["conda", "run", "-n", "serve", "--no-capture-output"],
        ["poetry", "run"],
        ["timeout", "1d", "nice", "-n", "5", "env", "X=1", "numactl", "-N", "0", "--"],
    ],
)
def test_wrapped_vllm_serve_is_found_with_its_own_arguments(prefix: list[str]) -> None:
    found = find_invocation([*prefix, *SERVE])
    assert found is not None, prefix
    assert (found.mode, found.argv) == ("serve", ["org/m", "-tp", "2"])


@pytest.mark.parametrize(
    "script",
    [
        "timeout 100 vllm serve org/m -tp 2",
        "cd /app && exec nice -n 5 numactl --cpunodebind=0 -- vllm serve org/m -tp 2 2>&1 | tee log",
        "env -S 'vllm serve org/m -tp 2'",
        "eval vllm serve org/m -tp 2",
        "exec stdbuf -oL -eL vllm serve org/m -tp 2",
    ],
)
def test_wrappers_inside_shell_scripts(script: str) -> None:
    found = find_invocation(["sh", "-c", script])
    assert found is not None and found.argv == ["org/m", "-tp", "2"]


@pytest.mark.parametrize(
    ("command", "mode", "argv"),
    [
        (["python3", "-u", "-m", "vllm.entrypoints.openai.api_server", "--model", "m"], "api_server",
         ["--model", "m"]),
        (["python3", "-X", "importtime", "-W", "ignore", "-m", "vllm.entrypoints.openai.api_server", "--port", "1"],
         "api_server", ["--port", "1"]),
        (["timeout", "9", "python", "-m", "vllm.entrypoints.cli.main", "serve", "m"], "serve", ["m"]),
        (["uv", "run", "-m", "vllm.entrypoints.openai.api_server", "--model", "m"], "api_server", ["--model", "m"]),
        (["uv", "run", "python", "-m", "vllm.entrypoints.openai.api_server", "--model", "m"], "api_server",
         ["--model", "m"]),
        (["uvx", "vllm", "serve", "m"], "serve", ["m"]),
        (["uvx", "vllm@0.11.0", "serve", "m"], "serve", ["m"]),
        (["uvx", "--from", "vllm==0.11.0", "vllm", "serve", "m"], "serve", ["m"]),
        (["uv", "tool", "run", "vllm", "serve", "m"], "serve", ["m"]),
    ],
)
def test_python_and_tool_runners(command: list[str], mode: str, argv: list[str]) -> None:
    found = find_invocation(command)
    assert found is not None and (found.mode, found.argv) == (mode, argv)


@pytest.mark.parametrize(
    "command",
    [
        ["command", "-v", "vllm", "serve", "m"],  # prints where vllm is; runs nothing
        ["taskset", "-p", "0x3", "1"],  # changes the affinity of pid 1
        ["numactl", "--show", "vllm", "serve", "m"],
        ["timeout", "--help", "vllm", "serve", "m"],
        ["env", "--version", "vllm", "serve", "m"],
        ["timeout", "100"],  # nothing to run
        ["python", "-c", "import vllm", "-m", "vllm.entrypoints.openai.api_server"],
        ["python", "-m", "vllm", "serve", "m"],  # vllm has no __main__
        ["echo", "vllm", "serve", "m"],
    ],
)
def test_wrappers_that_do_not_run_the_command(command: list[str]) -> None:
    assert find_invocation(command) is None


def test_a_wrapper_option_is_not_taken_for_a_vllm_argument() -> None:
    """``nice -n 5`` must not leave ``5`` as vLLM's model, nor ``timeout -k 5`` make ``5`` the command."""
    found = find_invocation(["timeout", "-k", "5", "100", "nice", "-n", "5", "vllm", "serve", "org/m"])
    assert found is not None and found.argv == ["org/m"]


def test_wrapped_container_becomes_a_serving_config() -> None:
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "llm"},
        "spec": {"template": {"spec": {"containers": [{
            "name": "vllm",
            "image": "vllm/vllm-openai:v0.11.0",
            "command": ["timeout", "100"],
            "args": ["vllm", "serve", "Qwen/Qwen3-8B", "-tp", "2"],
            "resources": {"limits": {"nvidia.com/gpu": 2}},
        }]}}},
    }
    [subject] = serving_configs_from_resource(subjects_from_object(dep)[0])
    assert (subject.model, subject.args["tensor_parallel_size"]) == ("Qwen/Qwen3-8B", 2)


def test_vllm_resolve_reads_a_wrapped_command_line() -> None:
    out = resolve(argv=["timeout", "100", "vllm", "serve", "org/m", "--max-num-seqs", "64"])
    [entry] = out["results"]
    assert entry["args"]["model"] == "org/m" and entry["args"]["max_num_seqs"] == 64 and entry["ok"]
