"""Which files under a folder are policy files, and what was passed over.

A library policy is a folder: the policy, its ``tests.yaml`` cases and a ``samples/`` folder of
inputs. Those two are test data, not policies, so a walk skips them: every ``tests.yaml`` (the
name is reserved for test cases), and a ``samples/`` folder only beside one — a user's own folder
that happens to be named ``samples/`` holds policies like any other (a skipped policy is an
unenforced budget). Each skip is recorded, so ``costwarden validate`` can say what it did not
read, and flagged when the skipped ``tests.yaml`` holds policy documents after all (``apiVersion``
or ``kind``): its author meant them to load. Hidden files and folders (``.git``) are never read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from costwarden.engine import yamlsource

YAML_SUFFIXES = (".yaml", ".yml")
TEST_FILE = "tests.yaml"
SAMPLES_DIR = "samples"
_POLICY_KEYS = ("apiVersion", "kind")


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file or folder a walk passed over as test data; a folder's ``path`` ends with a separator.
    ``holds_policies``: a ``tests.yaml`` whose documents are policy documents, not test cases."""

    path: str
    reason: str
    holds_policies: bool = False


def is_policy_test_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds test cases rather than policies: no document in it is a mapping with
    ``apiVersion`` or ``kind``. Unreadable or unparsable files count as test cases: ``costwarden
    test`` reports them, with their own errors."""
    try:
        with open(path, "rb") as handle:
            text, _ = yamlsource.decode(handle.read())
    except OSError:
        return True
    if text is None:
        return True
    stream = yamlsource.read_stream(text)
    return not any(isinstance(d.data, dict) and any(k in d.data for k in _POLICY_KEYS) for d in stream.documents)


def walk(root: str) -> tuple[list[str], list[Skipped]]:
    """The YAML files under ``root`` (sorted by path parts) and the test data skipped on the way."""
    found: list[tuple[tuple[str, ...], str]] = []
    skipped: list[Skipped] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(folder, root)
        parts = () if rel == "." else tuple(rel.split(os.sep))
        test_file = os.path.join(folder, TEST_FILE)
        if TEST_FILE in files:
            skipped.append(_skipped_test_file(test_file))
            if SAMPLES_DIR in dirs:
                dirs.remove(SAMPLES_DIR)
                skipped.append(Skipped(os.path.join(folder, SAMPLES_DIR, ""), f"sample inputs for {test_file}"))
        found.extend(
            ((*parts, name), os.path.join(folder, name))
            for name in files
            if name.endswith(YAML_SUFFIXES) and not name.startswith(".") and name != TEST_FILE
        )
    return [path for _, path in sorted(found)], sorted(skipped, key=lambda s: s.path)


def _skipped_test_file(path: str) -> Skipped:
    if is_policy_test_file(path):
        return Skipped(path, "policy test cases")
    return Skipped(
        path,
        f"holds policy documents, but {TEST_FILE} is the name reserved for test cases: rename it to load them",
        holds_policies=True,
    )


__all__ = ["SAMPLES_DIR", "TEST_FILE", "YAML_SUFFIXES", "Skipped", "is_policy_test_file", "walk"]
