"""Cost events appended to a JSON Lines file, one object per line.

Each event is written with a single ``write`` on a file opened with ``O_APPEND``, so several
threads and processes can share one file without interleaving lines.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from costwarden.adapters.events.event import CostEvent


class JsonlSink:
    """Appends each event as one JSON line to ``path`` (created if missing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def emit(self, event: CostEvent) -> None:
        line = (json.dumps(event.to_dict(), separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            if self._fd is not None:
                os.write(self._fd, line)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            self.close()


def read_events(path: str | os.PathLike[str]) -> list[dict[str, object]]:
    """The events of a JSONL file as dicts (for reports and tests)."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


__all__ = ["JsonlSink", "read_events"]
