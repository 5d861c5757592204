"""Cost events appended to a JSON Lines file, one object per line.

Each event is written with a single ``write`` on a file opened with ``O_APPEND``, so several
threads and processes can share one file without interleaving lines.

Rotation: the path is checked before each write, and a file renamed or removed under the sink
(logrotate's default ``create`` mode) is followed by a new one at the path, as
``logging.handlers.WatchedFileHandler`` does; before, events went on into the rotated file, or
into a deleted one and were lost.

A write that fails (disk full, a file-size limit) raises with the lost event's line in a note, so
the call-guard's log of the failing sink says what was lost. When the failure left part of a line
in the file, the next event starts on a line of its own: the fragment cannot swallow it, and
:func:`read_events` skips such a fragment with a warning instead of failing on the whole file.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from costwarden.adapters.events.event import CostEvent

log = logging.getLogger(__name__)

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT


class JsonlSink:
    """Appends each event as one JSON line to ``path`` (created if missing, again if rotated away)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._torn = False
        self._fd: int | None = os.open(self.path, _FLAGS, 0o644)

    def emit(self, event: CostEvent) -> None:
        line = (json.dumps(event.to_dict(), separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            if self._fd is None:
                return
            try:
                self._follow_rotation()
                self._append(b"\n" + line if self._torn else line)
            except OSError as exc:
                exc.add_note(f"cost event not written to {self.path}: {line.decode().rstrip()}")
                raise

    def _follow_rotation(self) -> None:
        """Reopen the path when the file open is no longer the one there (renamed or removed)."""
        assert self._fd is not None
        try:
            there = os.stat(self.path)
        except FileNotFoundError:
            there = None
        mine = os.fstat(self._fd)
        if there is None or (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino):
            fd = os.open(self.path, _FLAGS, 0o644)
            os.close(self._fd)
            self._fd, self._torn = fd, False

    def _append(self, data: bytes) -> None:
        """Write all of ``data``; a short write (the disk filled up mid-line) is continued, and a
        failure after part of it was written marks the file as ending mid-line."""
        assert self._fd is not None
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:])
        except OSError:
            self._torn = self._torn or done > 0
            raise
        self._torn = False

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
    """The events of a JSONL file as dicts (for reports and tests); a line that is no JSON (what
    a full disk left of an event) is skipped with a warning naming it."""
    events: list[dict[str, object]] = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError as exc:
                log.warning("%s:%d: skipped a line that is not a whole event (%s)", path, number, exc)
    return events


__all__ = ["JsonlSink", "read_events"]
