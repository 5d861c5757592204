"""`costwarden check` reads a vLLM ``--config`` file mounted from a ConfigMap when the ConfigMap's
manifest is checked too: in the same file (a rendered chart, `kubectl get -o yaml`) or in another
file of the same run (``check k8s/`` with k8s/cm.yaml and k8s/deploy.yaml). Without it, the rule
says it cannot judge what the file may set, and names the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
POLICY = """\
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: vllm-memory}
spec:
  subject: serving_config
  rules:
    - name: memory
      servingConfig: {minGpuMemoryUtilization: 0.85}
"""
CONFIG_MAP = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: vllm-config}
data:
  config.yaml: |
    tensor-parallel-size: 4
    gpu-memory-utilization: 0.5
"""
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: llm}
spec:
  template:
    spec:
      volumes:
        - name: cfg
          configMap: {name: vllm-config}
      containers:
        - name: vllm
          image: vllm/vllm-openai:v0.11.0
          command: [vllm, serve, Qwen/Qwen3-8B, --config, /etc/vllm/config.yaml]
          volumeMounts:
            - {name: cfg, mountPath: /etc/vllm}
          resources:
            limits: {nvidia.com/gpu: 4}
"""


def check(tmp_path: Path, *paths: str) -> dict[str, Any]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    out = subprocess.run(
        [sys.executable, "-m", "costwarden.cli", "check", *paths, "--policies", str(policy), "--format", "json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "CI": "true", "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode in (0, 1), out.stderr
    report: dict[str, Any] = json.loads(out.stdout)
    assert report["summary"]["input_errors"] == 0, report
    return report


def memory_result(report: dict[str, Any]) -> dict[str, Any]:
    [result] = [r for r in report["results"] if r["policy"] == "vllm-memory"]
    return result


def test_config_map_in_the_same_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "all.yaml").write_text(CONFIG_MAP + "---\n" + DEPLOYMENT)
    result = memory_result(check(tmp_path, "all.yaml"))
    assert result["result"] == "fail", result
    assert "gpu_memory_utilization 0.5" in result["message"]


def test_config_map_in_another_file_of_the_run_is_read(tmp_path: Path) -> None:
    k8s = tmp_path / "k8s"
    k8s.mkdir()
    service = "apiVersion: v1\nkind: Service\nmetadata: {name: llm}\nspec: {ports: [{port: 80}]}\n"
    (k8s / "cm.yaml").write_text(service + "---\n" + CONFIG_MAP)  # the ConfigMap not first
    (k8s / "deploy.yaml").write_text(DEPLOYMENT)
    result = memory_result(check(tmp_path, "k8s"))
    assert result["result"] == "fail" and "gpu_memory_utilization 0.5" in result["message"], result
    # named one by one, in either order
    for paths in (("k8s/deploy.yaml", "k8s/cm.yaml"), ("k8s/cm.yaml", "k8s/deploy.yaml")):
        assert "gpu_memory_utilization 0.5" in memory_result(check(tmp_path, *paths))["message"]


def test_config_map_from_a_kubectl_list_is_read(tmp_path: Path) -> None:
    items = [yaml.safe_load(CONFIG_MAP), yaml.safe_load(DEPLOYMENT)]
    (tmp_path / "list.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    assert "gpu_memory_utilization 0.5" in memory_result(check(tmp_path, "list.json"))["message"]


def test_without_the_config_map_the_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "deploy.yaml").write_text(DEPLOYMENT)
    result = memory_result(check(tmp_path, "deploy.yaml"))
    assert result["result"] == "error"
    assert "/etc/vllm/config.yaml" in result["message"] and "cannot judge" in result["message"]


def test_a_good_config_map_passes(tmp_path: Path) -> None:
    (tmp_path / "cm.yaml").write_text(CONFIG_MAP.replace("0.5", "0.9"))
    (tmp_path / "deploy.yaml").write_text(DEPLOYMENT)
    report = check(tmp_path, ".")
    assert report["summary"]["pass"] == 1 and not report["results"], report
