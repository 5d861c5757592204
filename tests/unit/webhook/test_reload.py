"""Policy hot reload from a folder that changes the way a mounted ConfigMap does."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from webhook_support import POLICIES, ConfigMapDir

from costwarden.webhook.reload import PolicyReloader, ReloadResult, fingerprint

BROKEN = POLICIES.replace("requireTags:", "requireTagz:", 1)


def test_configmap_swaps_reload_and_broken_files_keep_the_last_good_set(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = ConfigMapDir(tmp_path / "policies")
    folder.publish({"policies.yaml": POLICIES})
    seen: list[ReloadResult] = []
    reloader = PolicyReloader(folder.root, on_result=seen.append)
    assert reloader.current is None
    assert reloader.poll() is True and reloader.current is not None
    first = reloader.current
    assert len(first) == 4 and reloader.poll() is False

    folder.publish({"policies.yaml": POLICIES.split("---")[0]})
    assert reloader.poll() is True and reloader.current is not first and len(reloader.current) == 1
    good = reloader.current

    with caplog.at_level(logging.ERROR, logger="costwarden.webhook.reload"):
        folder.publish({"policies.yaml": BROKEN})
        assert reloader.poll() is False
    assert reloader.current is good
    assert seen[-1].ok is False and seen[-1].diagnostics >= 1 and seen[-1].policies == 1
    assert "requireTagz" in (reloader.last_error or "")
    assert any("error[" in r.getMessage() for r in caplog.records)  # every diagnostic is logged
    assert reloader.poll() is False and len(seen) == 3  # a broken version is reported once

    folder.publish({"policies.yaml": POLICIES, "more.yaml": POLICIES.split("---")[0].replace("cost-labels", "more")})
    assert reloader.poll() is True and len(reloader.current) == 5 and reloader.last_error is None
    assert [r.ok for r in seen] == [True, True, False, True]


def test_fingerprint_follows_links_and_ignores_hidden_entries(tmp_path: Path) -> None:
    folder = ConfigMapDir(tmp_path / "p")
    folder.publish({"a.yaml": "x"})
    before = fingerprint(folder.root)
    (folder.root / ".hidden.yaml").write_text("y")
    assert fingerprint(folder.root) == before
    folder.publish({"a.yaml": "z"})
    assert fingerprint(folder.root) != before


def test_unexpected_loader_failure_keeps_serving(tmp_path: Path) -> None:
    folder = ConfigMapDir(tmp_path / "p")
    folder.publish({"policies.yaml": POLICIES})
    calls = []

    def flaky(directory: str):  # type: ignore[no-untyped-def]
        calls.append(directory)
        if len(calls) > 1:
            raise OSError("disk gone")
        from costwarden.api import load_policies

        return load_policies(directory, pricer=None)

    reloader = PolicyReloader(folder.root, loader=flaky)
    assert reloader.poll() and reloader.current is not None
    folder.publish({"policies.yaml": POLICIES + "\n"})
    assert reloader.poll() is False and reloader.current is not None
    assert "OSError: disk gone" in (reloader.last_error or "")


def test_background_thread_starts_and_stops(tmp_path: Path) -> None:
    folder = ConfigMapDir(tmp_path / "p")
    folder.publish({"policies.yaml": POLICIES})
    reloader = PolicyReloader(folder.root, interval_s=0.05)
    reloader.start()
    try:
        assert reloader.wait_ready(30)
    finally:
        reloader.stop()
