"""`helm template ... | costwarden check -`: findings name the chart template each object was
rendered from (Helm's ``# Source:`` comments), in text, JSON, SARIF and GitHub annotations, for
stdin and for a saved file. Helm renders whole documents, so the template's line is not known:
only the rendered stream's line is, and the reports keep it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema

ROOT = Path(__file__).resolve().parents[2]
SARIF_SCHEMA = ROOT / "tests" / "data" / "sarif-2.1.0.json"

CHART = "apiVersion: v2\nname: llm-stack\nversion: 0.1.0\n"
DEPLOYMENT_TEMPLATE = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-server
spec:
  template:
    spec:
      containers:
        - name: server
          image: {{ .Values.image }}
"""
# What `helm template demo charts/llm-stack` prints: each document after `---` and its `# Source:`.
PADDING = "".join(f"  key{i}: value{i}\n" for i in range(40))
RENDERED = f"""---
# Source: llm-stack/templates/configmap.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: demo-config
data:
{PADDING}---
# Source: llm-stack/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: demo-server
  labels: {{app: demo}}
spec:
  template:
    metadata:
      labels: {{app: demo}}
    spec:
      containers:
        - name: server
          image: vllm/vllm-openai:v0.11.0
          resources:
            limits: {{nvidia.com/gpu: 1}}
"""
DEPLOYMENT_LINE = RENDERED.splitlines().index("apiVersion: apps/v1") + 1
TEMPLATE = "llm-stack/templates/deployment.yaml"


def check(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "costwarden.cli", "check", *args],
        capture_output=True, text=True, input=stdin, cwd=cwd, timeout=300,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "CI": "true", "PYTHONPATH": str(ROOT)},
    )


def repo(tmp_path: Path) -> Path:
    """A repository with the chart under deploy/charts/llm-stack and the rendered output saved."""
    chart = tmp_path / "deploy" / "charts" / "llm-stack"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(CHART)
    (chart / "templates" / "deployment.yaml").write_text(DEPLOYMENT_TEMPLATE)
    (tmp_path / "rendered.yaml").write_text(RENDERED)
    return tmp_path


def cost_tags(report: dict[str, object]) -> dict[str, object]:
    results = report["results"]
    assert isinstance(results, list)
    return next(r for r in results if r["policy"] == "require-cost-tags")


def test_json_names_the_template_and_keeps_the_rendered_line_for_stdin(tmp_path: Path) -> None:
    out = check("-", "--format", "json", cwd=tmp_path, stdin=RENDERED)
    assert out.returncode == 1, out.stderr
    result = cost_tags(json.loads(out.stdout))
    assert result["source"]["file"] == "<stdin>" and result["source"]["line"] == DEPLOYMENT_LINE
    assert result["source"]["template"] == TEMPLATE
    assert result["source"]["template_file"] is None  # no chart named llm-stack below the working directory


def test_text_shows_the_template_for_a_saved_stream(tmp_path: Path) -> None:
    root = repo(tmp_path)
    out = check("rendered.yaml", cwd=root)
    assert out.returncode == 1, out.stderr
    assert f"deploy/charts/llm-stack/templates/deployment.yaml (rendered.yaml line {DEPLOYMENT_LINE})" in out.stdout


def test_sarif_locates_the_chart_template_and_relates_the_rendered_line(tmp_path: Path) -> None:
    root = repo(tmp_path)
    out = check("-", "--format", "sarif", cwd=root, stdin=RENDERED)
    assert out.returncode == 1, out.stderr
    document = json.loads(out.stdout)
    jsonschema.Draft7Validator(json.loads(SARIF_SCHEMA.read_text())).validate(document)
    result = next(r for r in document["runs"][0]["results"] if r["ruleId"].startswith("require-cost-tags/"))
    physical = result["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"] == {"uri": "deploy/charts/llm-stack/templates/deployment.yaml",
                                            "uriBaseId": "%SRCROOT%"}
    assert physical["region"] == {"startLine": 2}  # the template's `kind: Deployment`, its document's only one
    assert TEMPLATE in result["message"]["text"]


def test_sarif_for_a_saved_stream_without_the_chart_points_at_the_stream(tmp_path: Path) -> None:
    (tmp_path / "rendered.yaml").write_text(RENDERED)
    out = check("rendered.yaml", "--format", "sarif", cwd=tmp_path)
    result = next(r for r in json.loads(out.stdout)["runs"][0]["results"]
                  if r["ruleId"].startswith("require-cost-tags/"))
    physical = result["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"]["uri"] == "rendered.yaml"
    assert physical["region"] == {"startLine": DEPLOYMENT_LINE}
    assert TEMPLATE in result["message"]["text"]


def test_github_annotates_the_chart_template(tmp_path: Path) -> None:
    root = repo(tmp_path)
    out = check("rendered.yaml", "--format", "github", cwd=root)
    line = next(x for x in out.stdout.splitlines() if "require-cost-tags" in x)
    assert line.startswith("::error file=deploy/charts/llm-stack/templates/deployment.yaml,line=2,")
    assert f"rendered.yaml line {DEPLOYMENT_LINE}" in line


def test_documents_without_a_source_comment_are_unchanged(tmp_path: Path) -> None:
    plain = RENDERED.replace("# Source: llm-stack/templates/deployment.yaml\n", "")
    out = check("-", "--format", "json", cwd=tmp_path, stdin=plain)
    result = cost_tags(json.loads(out.stdout))
    assert "template" not in result["source"]
