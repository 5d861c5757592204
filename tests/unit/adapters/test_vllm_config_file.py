"""``vllm serve --config FILE`` where FILE is not given to costwarden (a path inside the container,
a ConfigMap mount): the values the file may set are not judged as vLLM's defaults. The rule says
it cannot judge them, names the file and how to give it; with the ConfigMap given, the file is read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from costwarden.adapters.kubernetes import subjects_from_object
from costwarden.adapters.vllm.detect import detect_in_resource, serving_configs_from_resource
from costwarden.adapters.vllm.mounts import ConfigMaps
from costwarden.adapters.vllm.resolve_cmd import resolve
from costwarden.engine.decision import RuleResult
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.subjects import ServingConfig

CompilePolicies = Callable[..., PolicySet]
POLICY = (
    "apiVersion: costwarden.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  subject: serving_config\n"
    "  rules:\n    - name: r\n      servingConfig: {minGpuMemoryUtilization: 0.85}\n"
)
CONFIG = "tensor-parallel-size: 4\ngpu-memory-utilization: 0.95\n"
CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "vllm-config"},
              "data": {"config.yaml": CONFIG}}


def _deployment(args: list[str], gpus: int = 4, **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "llm"},
        "spec": {"template": {"spec": {
            "volumes": [{"name": "cfg", "configMap": {"name": "vllm-config"}}],
            "containers": [{
                "name": "vllm",
                "image": "vllm/vllm-openai:v0.11.0",
                "command": ["vllm", "serve", "Qwen/Qwen3-8B", *args],
                "volumeMounts": [{"name": "cfg", "mountPath": "/etc/vllm"}],
                "resources": {"limits": {"nvidia.com/gpu": gpus}},
                **container,
            }],
        }}},
    }


def _subject(dep: dict[str, Any], config_maps: ConfigMaps | None = None) -> ServingConfig:
    [subject] = serving_configs_from_resource(subjects_from_object(dep)[0], config_maps)
    return subject


def _results(compile_policies: CompilePolicies, subject: ServingConfig) -> list[RuleResult]:
    return list(compile_policies(POLICY).evaluate(subject).results)


def test_unread_config_is_not_judged_as_defaults(compile_policies: CompilePolicies) -> None:
    """Before: TP 1 on 4 GPUs was reported idle, though the file sets TP 4."""
    subject = _subject(_deployment(["--config", "/etc/vllm/config.yaml"]))
    [result] = _results(compile_policies, subject)
    assert result.result == "error", result.message
    assert "/etc/vllm/config.yaml" in result.message
    assert "--tensor-parallel-size" in result.message and "--gpu-memory-utilization" in result.message
    assert "ConfigMap" in result.message and "command line" in result.message
    assert subject.args["config"] == "/etc/vllm/config.yaml" and subject.args["tensor_parallel_size"] is None


def test_command_line_values_are_still_judged(compile_policies: CompilePolicies) -> None:
    """The command line wins over the file: what it sets is known, and judged."""
    subject = _subject(_deployment(["--config", "/etc/vllm/config.yaml", "-tp", "2", "--no-enable-prefix-caching",
                                    "--gpu-memory-utilization", "0.95"]))
    found = {r.path: r for r in _results(compile_policies, subject)}
    assert found["args.enable_prefix_caching"].result == "fail"
    unknown = found["args.config"]
    assert unknown.result == "error" and "--pipeline-parallel-size" in unknown.message
    assert "--gpu-memory-utilization" not in unknown.message and "prefix" not in unknown.message


def test_fully_explicit_command_line_needs_nothing_from_the_file(compile_policies: CompilePolicies) -> None:
    args = ["--config", "/etc/vllm/config.yaml", "-tp", "4", "-pp", "1", "-dp", "1", "--enable-prefix-caching",
            "--gpu-memory-utilization", "0.9"]
    [result] = _results(compile_policies, _subject(_deployment(args)))
    assert result.result == "pass", result.message


def test_config_map_given_alongside_is_read(compile_policies: CompilePolicies) -> None:
    subject = _subject(_deployment(["--config", "/etc/vllm/config.yaml"]), ConfigMaps.from_objects([CONFIG_MAP]))
    assert subject.args["tensor_parallel_size"] == 4 and subject.args.get("config") is None
    [result] = _results(compile_policies, subject)
    assert result.result == "pass", result.message


@pytest.mark.parametrize(
    ("volume", "mount", "path"),
    [
        ({"configMap": {"name": "vllm-config", "items": [{"key": "config.yaml", "path": "serve.yaml"}]}},
         {"mountPath": "/etc/vllm"}, "/etc/vllm/serve.yaml"),
        ({"projected": {"sources": [{"configMap": {"name": "vllm-config"}}]}},
         {"mountPath": "/etc/vllm/"}, "/etc/vllm//config.yaml"),
        ({"configMap": {"name": "vllm-config"}}, {"mountPath": "/app/serve.yaml", "subPath": "config.yaml"},
         "/app/serve.yaml"),
    ],
)
def test_config_map_volume_shapes(volume: dict[str, Any], mount: dict[str, Any], path: str) -> None:
    dep = _deployment(["--config", path])
    pod = dep["spec"]["template"]["spec"]
    pod["volumes"] = [{"name": "cfg", **volume}]
    pod["containers"][0]["volumeMounts"] = [{"name": "cfg", **mount}]
    subject = _subject(dep, ConfigMaps.from_objects([CONFIG_MAP]))
    assert subject.args["tensor_parallel_size"] == 4


def test_relative_config_path_uses_the_working_dir() -> None:
    subject = _subject(_deployment(["--config", "config.yaml"], workingDir="/etc/vllm"),
                       ConfigMaps.from_objects([CONFIG_MAP]))
    assert subject.args["tensor_parallel_size"] == 4


def test_config_map_in_another_namespace_is_not_used() -> None:
    dep = _deployment(["--config", "/etc/vllm/config.yaml"])
    dep["metadata"]["namespace"] = "serving"
    other = {**CONFIG_MAP, "metadata": {"name": "vllm-config", "namespace": "default"}}
    assert _subject(dep, ConfigMaps.from_objects([other])).args["config"] == "/etc/vllm/config.yaml"


def test_diagnostic_names_the_config_map_or_the_image() -> None:
    [found] = detect_in_resource(subjects_from_object(_deployment(["--config", "/etc/vllm/config.yaml"]))[0])
    notes = [d.message for d in found.resolution.diagnostics if d.code == "config-not-loaded"]
    assert any("ConfigMap 'vllm-config' (key 'config.yaml')" in n for n in notes), notes
    [baked] = detect_in_resource(subjects_from_object(_deployment(["--config", "/opt/serve.yaml"]))[0])
    assert any("inside the container image" in d.message for d in baked.resolution.diagnostics)


def test_vllm_resolve_reads_the_config_map_from_the_same_file(tmp_path: Path) -> None:
    manifest = tmp_path / "llm.yaml"
    manifest.write_text(yaml.safe_dump_all([CONFIG_MAP, _deployment(["--config", "/etc/vllm/config.yaml"])]))
    [entry] = resolve([manifest])["results"]
    assert entry["args"]["tensor_parallel_size"] == 4 and entry["args"]["gpu_memory_utilization"] == 0.95
    assert not [d for d in entry["diagnostics"] if d["code"] == "config-not-loaded"]


def test_vllm_resolve_reads_the_config_map_from_another_file(tmp_path: Path) -> None:
    (tmp_path / "cm.yaml").write_text(yaml.safe_dump(CONFIG_MAP))
    (tmp_path / "dep.yaml").write_text(yaml.safe_dump(_deployment(["--config", "/etc/vllm/config.yaml"])))
    [entry] = resolve([tmp_path / "dep.yaml", tmp_path / "cm.yaml"])["results"]
    assert entry["args"]["tensor_parallel_size"] == 4
