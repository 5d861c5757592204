"""Policy hot reload: watch a policy folder and swap in each new valid policy set atomically.

A ConfigMap mounted as a volume updates through symlink swaps (``policy.yaml → ..data/policy.yaml``,
``..data → ..2026_11_30_…``), which inotify-style watchers miss or report twice. So the folder is
polled: every ``interval_s`` the policy files are read through their symlinks and hashed, and a
changed hash triggers a load. A valid set replaces the current one in a single assignment
(readers take ``reloader.current`` once per request); an invalid one keeps the last good set,
logs every diagnostic and is reported to ``on_result`` (the server's metrics). Admission never
stops because of a typo.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from costwarden.engine.evaluate import PolicySet
from costwarden.errors import PolicyError

logger = logging.getLogger("costwarden.webhook.reload")

POLICY_SUFFIXES = (".yaml", ".yml")
_LOG_LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "note": logging.INFO}
Loader = Callable[[str], PolicySet]


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """The outcome of one load attempt."""

    ok: bool
    policies: int
    error: str | None = None
    diagnostics: int = 0


def fingerprint(directory: str | os.PathLike[str]) -> str:
    """A hash of every policy file's path and content below ``directory``, read through symlinks.
    Hidden entries (a ConfigMap's ``..data`` and timestamped folders) are skipped: the visible
    names already resolve through them."""
    digest = hashlib.sha256()
    root = os.fspath(directory)
    entries: list[tuple[str, str]] = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        entries.extend((os.path.relpath(os.path.join(folder, f), root), os.path.join(folder, f))
                       for f in files if f.endswith(POLICY_SUFFIXES) and not f.startswith("."))
    for rel, path in sorted(entries):
        digest.update(rel.encode() + b"\0")
        try:
            with open(path, "rb") as handle:
                digest.update(handle.read())
        except OSError as exc:  # a dangling link mid-swap: the next poll settles it
            digest.update(f"unreadable:{exc.errno}".encode())
        digest.update(b"\0")
    return digest.hexdigest()


def default_loader() -> Loader:
    """``load_policies`` with one pricer shared by every reload (building it is the slow part)."""
    from costwarden.adapters.pricing import GenaiPricer
    from costwarden.api import load_policies

    pricer = GenaiPricer()
    return lambda directory: load_policies(directory, pricer=pricer)


class PolicyReloader:
    """Holds the current policy set of a folder and reloads it when the folder changes.

    >>> reloader = PolicyReloader("/etc/costwarden/policies", interval_s=2)   # doctest: +SKIP
    >>> reloader.start()                    # first load happens on the watcher thread
    >>> reloader.current                    # None until a valid set compiled (not ready)
    """

    def __init__(self, directory: str | os.PathLike[str], *, interval_s: float = 2.0,
                 loader: Loader | None = None, on_result: Callable[[ReloadResult], None] | None = None) -> None:
        self.directory = str(directory)
        self.interval_s = interval_s
        self._loader = loader
        self.on_result = on_result
        self._current: PolicySet | None = None
        self._loaded_hash: str | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> PolicySet | None:
        """The last valid policy set, or None when none has compiled yet."""
        return self._current

    def poll(self) -> bool:
        """Check the folder once; load when it changed. Returns True when a new set was installed."""
        before = fingerprint(self.directory)
        if before == self._loaded_hash:
            return False
        if self._loader is None:
            self._loader = default_loader()
        try:
            policies = self._loader(self.directory)
        except PolicyError as exc:
            errors = sum(d.level == "error" for d in exc.diagnostics)  # warnings and notes ride along
            self._failed(before, exc.render(), errors, exc)
            return False
        except Exception as exc:  # never let a reload take the webhook down
            logger.exception("policy reload from %s failed unexpectedly", self.directory)
            self._failed(before, f"{type(exc).__name__}: {exc}", 0, None)
            return False
        if len(policies) == 0:  # an emptied ConfigMap would otherwise allow everything
            self._failed(before, f"no policies found in {self.directory}", 1, None)
            return False
        # A ConfigMap swap during the load may have mixed old and new files: load again next poll.
        self._loaded_hash = before if fingerprint(self.directory) == before else None
        self._current = policies
        self.last_error = None
        logger.info("loaded %d policies from %s", len(policies), self.directory)
        self._report(ReloadResult(True, len(policies)))
        return True

    def _failed(self, digest: str, text: str, count: int, exc: PolicyError | None) -> None:
        self._loaded_hash = digest  # report each broken version once, not every poll
        self.last_error = text
        kept = f"keeping the last good set ({len(self._current)} policies)" if self._current else "no policy set loaded"
        logger.error("policy reload from %s failed with %d problem(s); %s", self.directory, count, kept)
        for diagnostic in exc.diagnostics if exc else ():
            logger.log(_LOG_LEVELS[diagnostic.level], "%s", diagnostic.render())
        if exc is None:
            logger.error("%s", text)
        self._report(ReloadResult(False, len(self._current) if self._current else 0, text, count))

    def _report(self, result: ReloadResult) -> None:
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:
                logger.exception("reload observer failed")

    def start(self) -> None:
        """Load now on a background thread, then poll every ``interval_s`` until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="costwarden-policy-reload", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.poll()
            except Exception:  # fingerprinting a vanished folder, say: try again next time
                logger.exception("policy folder %s could not be read", self.directory)
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until a policy set is loaded (tests, benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while self._current is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return self._current is not None


__all__ = ["Loader", "PolicyReloader", "ReloadResult", "default_loader", "fingerprint"]
