"""The Kubernetes adapter against the collector's facts for ``k8s-gpu-workloads`` manifests.

``EXPECTATIONS.json`` gives three facts per manifest file (see the corpus README):

* ``requests_gpu``: ``yes: nvidia.com/gpu=N`` (N = the largest per-container request), ``no...``,
  ``mixed...`` (no pod asks for a GPU), ``indirect...`` (a GPU without a GPU resource);
* ``batch``: ``yes (Kind)`` or ``no``;
* ``targets_spot``: ``yes: label=value``, ``no``, ``no: explicitly pinned ... on-demand`` or
  ``n/a (...)`` for NodePool / ResourceFlavor definitions of capacity (never a spot workload).

Facts are per file; a file's subjects are judged together. Where costwarden reads a file
differently on purpose, the difference is listed in ``DISAGREEMENTS`` with its reason, and the
test checks that the difference is still there (so a stale entry fails too).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from costwarden.adapters import kubernetes as k8s
from costwarden.adapters.kubernetes_workloads import container_gpus, workload_shape
from costwarden.engine import patch
from costwarden.engine.subjects import Resource

REPO = Path(__file__).resolve().parents[2]
CORPORA = REPO.parent / "shared" / "corpora"
TOPIC = "k8s-gpu-workloads"

DISAGREEMENTS: dict[tuple[str, str], str] = {
    ("kuberay/ray-cluster-label-selector.yaml", "targets_spot"):
        "only the (replicas: 0) worker groups select gke-spot; the head group is not pinned, and with no "
        "GPU template every template must be pinned for the cluster to count as spot",
    ("kserve/llmisvc__managed-dra__llm-inference-service-managed-dra-minimal.yaml", "requests_gpu"):
        "the GPU is a DRA device-class annotation; DRA claims are not counted as GPUs (no count to read)",
}


def _entries() -> list[dict[str, Any]]:
    path = CORPORA / "EXPECTATIONS.json"
    if not path.is_file():
        return []
    entries = json.loads(path.read_text(encoding="utf-8"))
    return [e for e in entries if e["topic"] == TOPIC and "facts" in e]


ENTRIES = _entries()


@pytest.fixture(scope="module", autouse=True)
def _corpora_present() -> None:
    if not ENTRIES:
        pytest.skip(f"shared corpora not present at {CORPORA} (they live beside the repository)")


def _max_container_gpus(subject: Resource) -> float:
    """The largest GPU request of any container, as the adapter sees the object's containers."""
    shape = workload_shape(subject.raw or {})
    containers = [
        c for t in (shape.templates if shape else ())
        for key in ("containers", "initContainers") for c in (t.spec.get(key) or ())
    ]
    return max((container_gpus(c) for c in containers), default=0.0)


def _judge(fact_name: str, fact: str, subjects: list[Resource]) -> tuple[bool, str]:
    """(agrees, what costwarden saw) for one fact of one file."""
    if fact_name == "requests_gpu":
        seen = max((_max_container_gpus(s) for s in subjects), default=0.0)
        total = sum(s.workload.gpus for s in subjects)
        if fact.startswith("yes"):
            expected = float(re.search(r"gpu=(\d+)", fact).group(1))  # type: ignore[union-attr]
            return seen == expected and total > 0, f"largest container {seen:g} GPUs, total {total:g}"
        if fact.startswith("indirect"):
            return total > 0, f"{total:g} GPUs"
        return total == 0, f"{total:g} GPUs"
    if fact_name == "batch":
        batch = sorted({s.kind for s in subjects if s.workload.workload_class == "batch"})
        expected_kind = re.fullmatch(r"yes \((\w+)\)", fact)
        return (batch == [expected_kind.group(1)] if expected_kind else batch == []), f"batch kinds {batch}"
    capacities = sorted({s.capacity for s in subjects})
    if fact.startswith("yes"):
        return "spot" in capacities, f"capacities {capacities}"
    if "on-demand" in fact and fact.startswith("no"):
        return "spot" not in capacities and "on-demand" in capacities, f"capacities {capacities}"
    return "spot" not in capacities, f"capacities {capacities}"


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"].removeprefix(TOPIC + "/") for e in ENTRIES])
def test_facts(entry: dict[str, Any]) -> None:
    name = entry["file"].removeprefix(TOPIC + "/")
    text = (CORPORA / entry["file"]).read_text(encoding="utf-8")
    subjects = k8s.subjects_from_text(text, entry["file"])
    assert subjects
    for fact_name in ("requests_gpu", "batch", "targets_spot"):
        fact = entry["facts"][fact_name]
        agrees, seen = _judge(fact_name, fact, subjects)
        reason = DISAGREEMENTS.get((name, fact_name))
        if reason is None:
            assert agrees, f"{fact_name}: corpus says {fact!r}; costwarden saw {seen}"
        else:
            assert not agrees, f"{fact_name} now agrees ({seen}); drop the DISAGREEMENTS entry"


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"].removeprefix(TOPIC + "/") for e in ENTRIES])
def test_pointers_and_lines_are_real(entry: dict[str, Any]) -> None:
    text = (CORPORA / entry["file"]).read_text(encoding="utf-8")
    lines = text.splitlines()
    for subject in k8s.subjects_from_text(text, entry["file"]):
        assert subject.source.line is not None
        first = lines[subject.source.line - 1].strip()
        assert first and not first.startswith(("#", "---")), (subject.label(), first)
        for pointer in subject.pod_spec_pointers:
            assert isinstance(patch.resolve(subject.raw, pointer), dict), pointer
        assert subject.tags_pointer is not None
        assert dict(subject.tags) == k8s.labels(patch.resolve(subject.raw, subject.tags_pointer))


def test_every_disagreement_names_a_corpus_file() -> None:
    names = {e["file"].removeprefix(TOPIC + "/") for e in ENTRIES}
    assert {name for name, _ in DISAGREEMENTS} <= names
