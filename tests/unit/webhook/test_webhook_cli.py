"""The ``costwarden webhook`` command bodies (the sub-app the main command mounts as ``webhook``)."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner
from webhook_support import write_policies

from costwarden.webhook.cli import webhook_app

runner = CliRunner()


def test_certs_then_manifests_with_them(tmp_path: Path) -> None:
    out = runner.invoke(webhook_app, ["certs", "--service", "cw-webhook", "--namespace", "cw", "--out",
                                      str(tmp_path / "certs"), "--days", "30"])
    assert out.exit_code == 0, out.output
    assert out.output.split() == [str(tmp_path / "certs" / n) for n in ("ca.crt", "tls.crt", "tls.key")]
    policies = write_policies(tmp_path / "policies")
    out = runner.invoke(webhook_app, ["manifests", "--namespace", "cw", "--image", "example.com/cw:1",
                                      "--policies", str(policies), "--certs", str(tmp_path / "certs")])
    assert out.exit_code == 0, out.output
    objects = list(yaml.safe_load_all(out.stdout))
    kinds = [o["kind"] for o in objects]
    # these policies cap hourly cost: the webhook may read a scaled workload (RBAC before the pod)
    assert kinds == ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Secret",
                     "Deployment", "PodDisruptionBudget", "Service", "MutatingWebhookConfiguration",
                     "ValidatingWebhookConfiguration"]
    assert list(objects[4]["data"]) == ["policies.yaml"]
    assert objects[6]["spec"]["template"]["spec"]["containers"][0]["image"] == "example.com/cw:1"
    assert objects[-1]["webhooks"][0]["clientConfig"]["caBundle"]


def test_bad_policies_print_every_diagnostic_and_exit_2(tmp_path: Path) -> None:
    policies = write_policies(tmp_path / "p", "apiVersion: costwarden.dev/v1\nkind: Policy\nmetadata: {name: x}\n"
                                              "spec: {subject: resource, rules: [{name: r, requireTagz: {}}]}\n")
    out = runner.invoke(webhook_app, ["manifests", "--policies", str(policies)])
    assert out.exit_code == 2 and "error[" in out.output


def test_serve_refuses_missing_files(tmp_path: Path) -> None:
    out = runner.invoke(webhook_app, ["serve", "--policies", str(tmp_path), "--tls-cert", str(tmp_path / "no.crt"),
                                      "--tls-key", str(tmp_path / "no.key")])
    assert out.exit_code == 2 and "TLS certificate" in out.output and "does not exist" in out.output


def test_policies_too_large_for_a_configmap_exit_2_with_a_message(tmp_path: Path) -> None:
    from webhook_support import POLICIES

    padding = "# " + "x" * 1000 + "\n"
    policies = write_policies(tmp_path / "p", POLICIES + padding * 1100)
    out = runner.invoke(webhook_app, ["manifests", "--policies", str(policies)])
    assert out.exit_code == 2, out.output
    assert "error: the policy files pass the 1 MB ConfigMap limit" in out.output
    assert out.exception is None or isinstance(out.exception, SystemExit)
