"""vLLM parser quirks, checked without the oracle (the values were confirmed against vLLM's own
parser by tests/conformance/test_vllm_parity.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from costwarden.adapters.kubernetes import subjects_from_object
from costwarden.adapters.vllm.command import find_invocation
from costwarden.adapters.vllm.detect import (
    is_vllm_config_file,
    serving_config_from_config_file,
    serving_configs_from_helm_values,
    serving_configs_from_resource,
)
from costwarden.adapters.vllm.parser import parse_argv, parse_command, parse_config_file
from costwarden.adapters.vllm.resolve_cmd import resolve
from costwarden.adapters.vllm.table import LATEST, available_versions, human_readable_int, pick_version

OLD = "0.11.0"


def codes(r: object) -> list[str]:
    return [d.code for d in r.diagnostics]  # type: ignore[attr-defined]


def test_tables_shipped() -> None:
    assert LATEST == "0.33.0"
    assert {"0.8.5.post1", "0.10.2", "0.11.0", "0.33.0"} <= set(available_versions())


@pytest.mark.parametrize(("text", "value"), [("32k", 32000), ("32K", 32768), ("1.5k", 1500), ("2M", 2 * 2**20),
                                             ("4096", 4096), ("1t", 10**12)])
def test_human_readable_int(text: str, value: int) -> None:
    assert human_readable_int(text) == value


def test_binary_suffix_refuses_decimals_and_old_versions_have_no_t() -> None:
    r = parse_argv(["m", "--max-model-len", "1.5K"])
    assert r.args["max_model_len"] is None and "invalid-value" in codes(r)
    assert parse_argv(["m", "--max-num-batched-tokens", "1t"]).args["max_num_batched_tokens"] == 10**12
    assert "invalid-value" in codes(parse_argv(["m", "--max-num-batched-tokens", "1t"], OLD))
    assert parse_argv(["m", "--max-model-len", "auto"]).args["max_model_len"] == -1


def test_dashes_underscores_equals_and_prefixes() -> None:
    r = parse_argv(["m", "--max_num_seqs=64", "--gpu-memory-util", "0.8", "-tp", "2"])
    assert (r.args["max_num_seqs"], r.args["gpu_memory_utilization"], r.args["tensor_parallel_size"]) == (64, 0.8, 2)
    assert {"max_num_seqs", "gpu_memory_utilization", "tensor_parallel_size", "model"} <= r.explicit
    assert r.ok and r.model == "m"


def test_ambiguous_prefix_is_an_error() -> None:
    r = parse_argv(["m", "--max", "64", "--max-num-seqs", "8"])
    assert "ambiguous-option" in codes(r) and not r.ok
    assert r.args["max_num_seqs"] == 8 and r.unrecognized == []


def test_boolean_spellings() -> None:
    assert parse_argv(["m", "--no-enable-prefix-caching"]).args["enable_prefix_caching"] is False
    assert parse_argv(["m", "--disable-prefix-caching"]).args["enable_prefix_caching"] is False
    assert parse_argv(["m", "--no-enable-prefix"]).args["enable_prefix_caching"] is False
    assert parse_argv(["m", "--enable-prefix-caching"]).args["enable_prefix_caching"] is True
    assert parse_argv(["m"]).args["enable_prefix_caching"] is None  # vLLM decides (on in V1)
    r = parse_argv(["m", "--enable-prefix-caching=false"])
    assert "invalid-value" in codes(r)
    assert "--disable-prefix-caching" in str(parse_argv(["m", "--disable-prefix-caching"], OLD).unrecognized)


def test_type_and_choice_errors_keep_the_default() -> None:
    r = parse_argv(["m", "--tensor-parallel-size", "four", "--dtype", "float17"])
    assert r.args["tensor_parallel_size"] == 1 and r.args["dtype"] == "auto"
    assert {"invalid-value", "invalid-choice"} <= set(codes(r))


def test_unknown_and_removed_arguments() -> None:
    r = parse_argv(["m", "--max-num-seqz", "8", "--swap-space", "16"])
    unknown = next(d for d in r.diagnostics if d.code == "unknown-argument")
    assert unknown.hint and "--max-num-seqs" in unknown.hint
    removed = next(d for d in r.diagnostics if d.code == "removed-argument")
    assert "0.18" in removed.message and r.deprecated_args == ("swap_space",)
    assert r.unrecognized == ["--max-num-seqz", "8", "--swap-space", "16"]
    assert parse_argv(["m", "--swap-space", "16"], OLD).args["swap_space"] == 16.0


def test_deprecated_argument_in_target_version() -> None:
    r = parse_argv(["m", "--disable-log-requests"], OLD)
    assert r.deprecated_args == ("disable_log_requests",)


def test_duplicates_override() -> None:
    r = parse_argv(["m", "--max-num-seqs", "8", "--max-num-seq", "64"])
    assert r.args["max_num_seqs"] == 64 and "duplicate-argument" in codes(r)


def test_dotted_json_arguments() -> None:
    r = parse_argv(["m", "--compilation-config.mode", "3", "--compilation-config.cudagraph_capture_sizes+", "1,2"])
    assert r.args["compilation_config"] == {"mode": 3, "cudagraph_capture_sizes": ["1", "2"]}
    assert parse_argv(["m", "-O3"]).args["optimization_level"] == "3"
    assert parse_argv(["m", "-O3"], OLD).args["compilation_config"] == {"level": 3}
    assert parse_argv(["m", "--kv-transfer-config", '{"kv_port": 14k}']).args[
        "kv_transfer_config"] == {"kv_port": 14_000}


def test_model_option_with_serve() -> None:
    r = parse_argv(["--model", "m", "--max-num-seqs", "8"])
    assert r.model == "m" and r.ok and "deprecated-argument" in codes(r)
    assert not parse_argv(["--model", "m"], OLD).ok  # 0.11 refuses --model with `vllm serve`
    api = parse_argv(["m", "--max-num-seqs", "8"], mode="api_server")
    assert api.model == "Qwen/Qwen3-0.6B" and "invalid-command" in codes(api)  # positional ignored


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_config_file_false_depends_on_version_and_entry_point(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "enable-prefix-caching: false\nmax-num-seqs: 7\n")
    serve = parse_argv(["m", "--config", path])
    assert serve.args["enable_prefix_caching"] is None and serve.args["max_num_seqs"] == 7
    ignored = next(d for d in serve.diagnostics if d.code == "ignored-false")
    assert ignored.file == path and ignored.line == 1
    api = parse_argv(["--model", "m", "--config", path], mode="api_server")
    assert api.args["enable_prefix_caching"] is False
    old_api = parse_argv(["--model", "m", "--config", path], OLD, mode="api_server")
    assert old_api.args["enable_prefix_caching"] is None and "ignored-false" in codes(old_api)


def test_config_file_lists_dicts_and_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "tensor_parallel_size: 2\nmax_model_len: 32K\nserved-model-name: [a, b]\n"
                 "compilation-config: {mode: 3}\nenforce-eager: true\n")
    r = parse_argv(["m", "--config", path, "--tensor-parallel-size", "4"])
    assert r.args["tensor_parallel_size"] == 4 and r.args["max_model_len"] == 32768
    assert r.args["served_model_name"] == ["a", "b"] and r.args["enforce_eager"] is True
    assert r.args["compilation_config"] == {"mode": 3}
    dup = next(d for d in r.diagnostics if d.code == "duplicate-argument")
    assert dup.severity == "info" and "c.yaml:1" in dup.message
    old = parse_argv(["m", "--config", path], OLD)  # 0.11 passes str(dict), not JSON
    assert "invalid-value" in codes(old)


def test_config_equals_form_is_not_loaded(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "max-num-seqs: 7\n")
    r = parse_argv(["m", f"--config={path}"])
    assert r.args["max_num_seqs"] is None and "config-not-loaded" in codes(r)


def test_config_errors_point_at_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "port: 8000\nmax-num-seqs: lots\n")
    bad = next(d for d in parse_argv(["m", "--config", path]).diagnostics if d.code == "invalid-value")
    assert (bad.file, bad.line, bad.argument) == (path, 2, "max_num_seqs")


def test_parse_config_file_and_detection(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "model: org/llama-70b\ntensor-parallel-size: 4\nno-enable-prefix-caching: true\n")
    r = parse_config_file(path)
    assert r.model == "org/llama-70b" and r.args["enable_prefix_caching"] is False
    subject = serving_config_from_config_file(path)
    assert subject.model == "org/llama-70b" and subject.args["tensor_parallel_size"] == 4
    assert is_vllm_config_file({"tensor-parallel-size": 2, "port": 1})
    assert not is_vllm_config_file({"meta": {}, "model": {}, "features": {}})
    assert not is_vllm_config_file({"apiVersion": "v1", "kind": "Pod"})


@pytest.mark.parametrize(("command", "mode", "argv"), [
    ("vllm serve m --port 8000", "serve", ["m", "--port", "8000"]),
    (["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "m"], "api_server", ["--model", "m"]),
    ('sh -c "pip install x && exec vllm serve $M --port 8000"', "serve", ["qwen", "--port", "8000"]),
    (["/bin/bash", "-lc", "--", "ulimit -n 1; ray start --head; vllm serve m -tp 2"], "serve", ["m", "-tp", "2"]),
    ("A=1 B=2 /usr/local/bin/vllm serve m \\\n  --max-num-seqs 8", "serve", ["m", "--max-num-seqs", "8"]),
])
def test_commands(command: str | list[str], mode: str, argv: list[str]) -> None:
    found = find_invocation(command, {"M": "qwen"})
    assert found is not None and (found.mode, found.argv) == (mode, argv)


@pytest.mark.parametrize(("command", "argv"), [
    ("bash -c 'vllm serve m --port 8000 2>&1 | tee /var/log/vllm.log'", ["m", "--port", "8000"]),
    ("sh -c 'exec vllm serve m -tp 2 >>/proc/1/fd/1 2>&1'", ["m", "-tp", "2"]),
    ("sh -c 'vllm serve m --max-model-len 4096 > /tmp/log 2> /tmp/err < /dev/null'", ["m", "--max-model-len", "4096"]),
    ("sh -c 'vllm serve m --chat-template \"a>b 2>c\"'", ["m", "--chat-template", "a>b 2>c"]),
    ("bash -c 'while true; do vllm serve m -tp 2; sleep 5; done'", ["m", "-tp", "2"]),
    ("bash -c 'if [ -n \"$X\" ]; then vllm serve m; fi'", ["m"]),
])
def test_shell_redirections_and_keywords_are_not_arguments(command: str, argv: list[str]) -> None:
    found = find_invocation(command)
    assert found is not None and found.argv == argv
    r = parse_command(command)
    assert r is not None and r.ok and r.unrecognized == []


def test_parse_command_and_no_vllm() -> None:
    r = parse_command("vllm serve m --max-num-seqs 8")
    assert r is not None and r.args["max_num_seqs"] == 8
    assert parse_command("python app.py --port 8000") is None


def test_version_pick() -> None:
    assert pick_version("vllm/vllm-openai:v0.11.0")[0] == "0.11.0"
    assert pick_version("vllm/vllm-openai:v0.10.1.1")[0] == "0.10.2"
    assert pick_version("vllm/vllm-openai:latest")[0] == LATEST
    assert pick_version("0.40.0")[0] == LATEST and pick_version("0.5.0")[0] == "0.8.5.post1"


DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "llm", "namespace": "ai"},
    "spec": {"replicas": 2, "template": {"metadata": {"labels": {"team": "ml", "costwarden.dev/params-b": "70"}},
             "spec": {"nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}, "containers": [
                 {"name": "vllm", "image": "vllm/vllm-openai:v0.11.0",
                  "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
                  "args": ["--model=$(MODEL)", "--tensor-parallel-size=4", "--swap-space=16"],
                  "env": [{"name": "MODEL", "value": "meta-llama/Llama-3.1-70B"}],
                  "resources": {"limits": {"nvidia.com/gpu": 8}}}]}}},
}


def test_deployment_to_serving_config() -> None:
    [subject] = serving_configs_from_resource(subjects_from_object(DEPLOYMENT, file="d.yaml", line=1)[0])
    assert (subject.model, subject.gpus, subject.replicas, subject.gpu_type) == (
        "meta-llama/Llama-3.1-70B", 8.0, 2, "nvidia-h100-80gb")
    assert subject.args["tensor_parallel_size"] == 4 and subject.engine_version == "0.11.0"
    assert subject.params_b == 70.0 and subject.tags["team"] == "ml" and subject.namespace == "ai"
    assert subject.source.pointer == "/spec/template/spec/containers/0" and subject.deprecated_args == ()


def test_image_entrypoint_and_doubled_serve() -> None:
    dep = {**DEPLOYMENT, "spec": {"template": {"spec": {"containers": [
        {"name": "vllm", "image": "vllm/vllm-openai:latest", "args": ["serve", "org/m", "--max-num-seqs", "8"]}]}}}}
    [subject] = serving_configs_from_resource(subjects_from_object(dep)[0])
    assert subject.model == "serve"  # vLLM would refuse: the image already runs `vllm serve`


def test_helm_values_turn_prefix_caching_off_unless_enabled() -> None:
    doc = {"servingEngineSpec": {"modelSpec": [
        {"name": "a", "repository": "vllm/vllm-openai", "tag": "latest", "modelURL": "org/a", "replicaCount": 2,
         "requestGPU": 2, "vllmConfig": {"tensorParallelSize": 1, "gpuMemoryUtilization": 0.6}},
        {"name": "b", "repository": "vllm/vllm-openai", "tag": "v0.11.0", "modelURL": "org/b", "requestGPU": 1,
         "vllmConfig": {"enablePrefixCaching": True}}]}}
    a, b = serving_configs_from_helm_values(doc, "values.yaml")
    assert a.args["enable_prefix_caching"] is False and a.args["gpu_memory_utilization"] == 0.6
    assert (a.gpus, a.replicas, a.model) == (2.0, 2, "org/a")
    assert b.args["enable_prefix_caching"] is True and b.engine_version == "0.11.0"


def test_resolve_command_output(tmp_path: Path) -> None:
    out = resolve(argv=["vllm", "serve", "m", "--max-num-seq", "64"])
    [result] = out["results"]
    assert out["ok"] and result["args"]["max_num_seqs"] == 64 and result["vllm_version"] == LATEST
    assert "max_num_seqs" in result["explicit"] and len(result["args"]) > 200
    path = write(tmp_path, "c.yaml", "max-num-seqs: 7\nenable_prefix_caching: false\n")
    out = resolve(config=path, model="m")
    assert out["results"][0]["args"]["max_num_seqs"] == 7
    assert out["results"][0]["diagnostics"][0]["code"] == "ignored-false"


def test_config_keys_the_version_does_not_have() -> None:
    """vLLM 0.33's config classes refuse unknown keys (`level` became `mode`); 0.11 drops them."""
    stale = ["m", "--compilation-config", '{"level": 3, "cudagraph_capture_sizes": [1, 2]}']
    r = parse_argv(stale, "0.33.0")
    assert not r.ok and r.args["compilation_config"] == {}
    [d] = [d for d in r.diagnostics if d.code == "invalid-value"]
    assert d.argument == "compilation_config" and "'level'" in d.message
    assert not parse_argv(["m", "--compilation-config.level", "3"], "0.33.0").ok
    assert parse_argv(stale, OLD).ok and parse_argv(stale, OLD).args["compilation_config"]["level"] == 3
    good = parse_argv(["m", "--compilation-config", '{"mode": 3, "cudagraph_capture_sizes": [1, 2]}',
                       "--kv-transfer-config", '{"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}'])
    assert good.ok and good.args["compilation_config"]["mode"] == 3


@pytest.mark.parametrize("argv", [["m", "-O.mode", "3"], ["m", "--compilation-config", '{"level": 3'],
                                  ["m", "--compilation-config", "level=3"]])
def test_old_compilation_config_literal_errors_are_reported_not_raised(argv: list[str]) -> None:
    r = parse_argv(argv, "0.8.5.post1")  # vLLM 0.8.5 reads it with ast.literal_eval and exits
    assert not r.ok and "invalid-value" in codes(r)
