"""WAL checkpoints of the SQLite ledger, in a thread of their own rather than inside a commit."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import weakref

log = logging.getLogger("costwarden.ledger")

CHECKPOINT_EVERY = 300
"""Commits between WAL checkpoints (SQLite's own default is every 1,000 pages: ~330 ledger commits of 3)."""
CHECKPOINT_INTERVAL_S = 1.0
"""...and at least this often while anything was committed."""
CATCH_UP_IDLE_S = 0.005
"""Quiet time after which the frames a checkpoint left behind are checkpointed (see Checkpointer)."""
CATCH_UP_FRAMES = 3_000
"""WAL size (frames, ~12 MB) at which they are checkpointed even though the process is never quiet."""
FRAMES_PER_COMMIT = 3
"""About what one ledger commit appends to the WAL: the WAL size, estimated from commits alone."""


class Checkpointer:
    """Runs the WAL checkpoints of one :class:`SqliteLedger` in a daemon thread of its own.

    SQLite's automatic checkpoint runs inside the commit that fills the WAL past 1,000 pages, so
    one operation in a few hundred paid for copying the WAL into the database and two fsyncs
    (milliseconds each here: the ledger's p99). Here commits only count. Every
    ``CHECKPOINT_EVERY`` commits, and at least every ``CHECKPOINT_INTERVAL_S`` while anything was
    committed, the thread runs a PASSIVE checkpoint on its own connection: it copies and syncs
    without blocking writers or readers, and the GIL is released while SQLite works.

    The WAL only restarts from its beginning (staying small, and fast to search) once a
    checkpoint has copied *every* frame, and commits that land during the long pass leave a few
    behind. Those are checkpointed by a second, short pass that holds the ledger's in-process
    lock, so this process cannot append meanwhile: as soon as the process has been idle for
    ``CATCH_UP_IDLE_S``, or — when it never is — once the WAL holds ``CATCH_UP_FRAMES`` frames.
    In that second case the pass is run by the next writer, right after its commit, while it holds
    the lock anyway: a thread waiting for the lock could starve, as a writer that is never idle
    takes it back at once. The next writer also runs it when the thread has fallen so far behind
    (the GIL, a slow disk) that the commits since its last pass would fill ``CATCH_UP_FRAMES``, so
    the WAL stays bounded whatever the thread's scheduling. Only this process's operations that
    arrive during a short pass wait for it, and under constant load that happens several times
    less often than SQLite's own checkpoint made one wait.

    Durability is unchanged: with ``synchronous=NORMAL`` a commit is durable across a process
    crash once it is in the WAL, and the WAL is synced by each checkpoint as before, at about the
    same rate (``CHECKPOINT_EVERY`` commits write about the 1,000 pages of SQLite's default) and
    now at least every ``CHECKPOINT_INTERVAL_S`` as well.
    The thread holds no reference to its ledger and stops when the ledger is closed or collected.
    """

    def __init__(self, path: str, timeout_s: float, lock: threading.Lock) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.lock = lock  # the ledger's in-process lock: held by writers for their transactions
        self.commits = 0  # incremented by writers under that lock
        self.done = 0  # commits covered by the last checkpoint started
        self.last_commit = 0.0
        self.wake = threading.Event()
        self.due = False  # the next writer runs the short pass
        self.stopped = False
        self.db: sqlite3.Connection | None = None

    @classmethod
    def start(cls, owner: object, path: str, timeout_s: float, lock: threading.Lock) -> Checkpointer:
        self = cls(path, timeout_s, lock)
        threading.Thread(target=self._run, name="costwarden-sqlite-checkpoint", daemon=True).start()
        weakref.finalize(owner, self.stop)
        return self

    def committed(self, db: sqlite3.Connection) -> None:
        """Count a commit, made on ``db`` with the ledger's lock held; run the short pass when due."""
        self.commits += 1
        self.last_commit = time.monotonic()
        behind = self.commits - self.done
        if behind == CHECKPOINT_EVERY:
            self.wake.set()
        elif self.due or behind * FRAMES_PER_COMMIT >= CATCH_UP_FRAMES:
            self.due = False
            self.done = self.commits
            self._passive(db)

    def stop(self) -> None:
        self.stopped = True
        self.wake.set()

    def _run(self) -> None:
        try:
            while not self.stopped:
                self.wake.wait(CHECKPOINT_INTERVAL_S)
                self.wake.clear()
                if self.stopped or self.commits == self.done:
                    continue
                self.done = self.commits
                frames, _copied = self._checkpoint()
                # Even a complete pass does not restart the WAL when a commit was under way meanwhile.
                self._catch_up(frames)
        finally:
            if self.db is not None:
                self.db.close()

    def _catch_up(self, frames: int) -> None:
        """Checkpoint the frames the long pass left behind, while this process does not write:
        when the WAL holds ``CATCH_UP_FRAMES``, by the next writer; else here, once the process is
        idle — unless the next long pass is due first."""
        if frames >= CATCH_UP_FRAMES:
            self.due = True
            return
        while not self.stopped:
            if self.commits - self.done >= CHECKPOINT_EVERY:
                return
            if time.monotonic() - self.last_commit < CATCH_UP_IDLE_S:
                time.sleep(CATCH_UP_IDLE_S)
                continue
            if self.lock.acquire(timeout=self.timeout_s):
                try:
                    self.done = self.commits
                    self._checkpoint()
                finally:
                    self.lock.release()
            return

    def _checkpoint(self) -> tuple[int, int]:
        """A PASSIVE checkpoint on this thread's connection."""
        if self.db is None:
            try:
                self.db = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
            except sqlite3.Error as exc:
                log.warning("SQLite ledger %s: WAL checkpoint failed: %s", self.path, exc)
                return 0, 0
        return self._passive(self.db)

    def _passive(self, db: sqlite3.Connection) -> tuple[int, int]:
        """A PASSIVE checkpoint: (frames in the WAL, frames copied to the database); (0, 0) on an error."""
        try:
            _busy, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            return int(frames), int(copied)
        except sqlite3.Error as exc:  # retried at the next round; the WAL only grows meanwhile
            log.warning("SQLite ledger %s: WAL checkpoint failed: %s", self.path, exc)
            return 0, 0


__all__ = [
    "CATCH_UP_FRAMES",
    "CATCH_UP_IDLE_S",
    "CHECKPOINT_EVERY",
    "CHECKPOINT_INTERVAL_S",
    "FRAMES_PER_COMMIT",
    "Checkpointer",
]
