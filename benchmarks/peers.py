"""Peer policy engines for the costwarden benchmark.

One rule, written once per engine:

    allowed iff tags ``team``, ``feature`` and ``environment`` are present and
    non-empty, AND (``workload.class != "batch"`` OR ``capacity == "spot"``).

Subjects are plain dicts::

    {"tags": {"team": "ml", "feature": "search", "environment": "prod"},
     "workload": {"class": "batch"}, "capacity": "spot"}

Each peer class exposes ``name``, ``available``, ``reason`` (why not available),
``prepare(subject)`` and ``decide() -> bool`` (True = allowed).

Fairness contract:

* The policy is parsed/compiled once, in ``__init__``.
* ``prepare()`` only binds the subject dict (an attribute store, no work).
* ``decide()`` is the per-decision call that is timed, and it includes every
  per-request conversion the engine needs from a plain Python dict: JSON
  encoding for Rego engines fed JSON, the Cedar entity document built from the
  subject, the Python-to-CEL value conversion done inside ``Program.execute``.

Importing this module has no side effects and imports none of the peer
engines; each class imports its engine lazily, so a missing peer only shows up
as ``available = False`` with a ``reason``.
"""

from __future__ import annotations

import gc
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

REQUIRED_TAGS = ("team", "feature", "environment")

# (label, subject, expected verdict)
VERIFY_CASES: tuple[tuple[str, dict[str, Any], bool], ...] = (
    (
        "compliant batch on spot",
        {
            "tags": {"team": "ml", "feature": "search", "environment": "prod"},
            "workload": {"class": "batch"},
            "capacity": "spot",
        },
        True,
    ),
    (
        "missing environment tag",
        {
            "tags": {"team": "ml", "feature": "search"},
            "workload": {"class": "online"},
            "capacity": "spot",
        },
        False,
    ),
    (
        "batch on on-demand",
        {
            "tags": {"team": "ml", "feature": "search", "environment": "prod"},
            "workload": {"class": "batch"},
            "capacity": "on-demand",
        },
        False,
    ),
    (
        "online on on-demand with tags",
        {
            "tags": {"team": "ml", "feature": "search", "environment": "prod"},
            "workload": {"class": "online"},
            "capacity": "on-demand",
        },
        True,
    ),
)

# The four reference subjects are also the timing inputs.
BENCH_INPUTS: tuple[dict[str, Any], ...] = tuple(case[1] for case in VERIFY_CASES)

# Verify-only edge case: a present but empty tag is not "present and non-empty".
VERIFY_CASES += (
    (
        "empty team tag",
        {
            "tags": {"team": "", "feature": "search", "environment": "prod"},
            "workload": {"class": "online"},
            "capacity": "on-demand",
        },
        False,
    ),
)


class PeerVerificationError(AssertionError):
    """A peer returned the wrong verdict for a verification case."""


class Peer:
    """Base class: lazy engine load, ``prepare``/``decide`` protocol, ``verify``."""

    name = "peer"
    # What decide() includes beyond evaluation, for the report.
    notes = ""

    def __init__(self) -> None:
        self.available = False
        self.reason = ""
        self._subject: dict[str, Any] = {}
        try:
            self._load()
        except (ImportError, OSError) as exc:  # missing wheel / missing shared library
            self.reason = f"{type(exc).__name__}: {exc}"
        else:
            self.available = True

    def _load(self) -> None:
        raise NotImplementedError

    def prepare(self, subject: dict[str, Any]) -> None:
        self._subject = subject

    def decide(self) -> bool:
        raise NotImplementedError

    def verify(self) -> None:
        """Check the verdict on every VERIFY_CASES entry; raise on the first mismatch."""
        if not self.available:
            raise RuntimeError(f"{self.name} is not available: {self.reason}")
        for label, subject, expected in VERIFY_CASES:
            self.prepare(subject)
            got = self.decide()
            if got is not expected:
                raise PeerVerificationError(f"{self.name}: {label!r}: expected {expected}, got {got!r}")


# --------------------------------------------------------------------------- closure


def _closure_rule(subject: dict[str, Any]) -> bool:
    # Tag values are strings: truthiness == present, not None, non-empty.
    tags = subject.get("tags") or {}
    return bool(
        tags.get("team")
        and tags.get("feature")
        and tags.get("environment")
        and ((subject.get("workload") or {}).get("class") != "batch" or subject.get("capacity") == "spot")
    )


class ClosurePeer(Peer):
    """Hand-written Python function: the floor."""

    name = "python closure"
    notes = "plain function call on the dict"

    def _load(self) -> None:
        self._rule: Callable[[dict[str, Any]], bool] = _closure_rule

    def decide(self) -> bool:
        return self._rule(self._subject)


# --------------------------------------------------------------------------- Rego

REGO_PACKAGE = "costwarden.bench"
REGO_POLICY = """\
package costwarden.bench

default allow := false

# A missing tag makes `input.tags.<tag>` undefined, so the body fails: deny.
allow if {
    input.tags.team != ""
    input.tags.feature != ""
    input.tags.environment != ""
    not batch_on_demand
}

batch_on_demand if {
    input.workload["class"] == "batch"
    not input.capacity == "spot" # also true when capacity is absent
}
"""


class RegorusPeer(Peer):
    """regorus (Rust Rego interpreter), PyPI ``gordon-to-regorus``, module ``regorus``.

    ``input_mode="json"`` (default): ``Engine.set_input_json(json.dumps(subject))``
    — JSON encoding is inside the timed call.
    ``input_mode="dict"``: ``Engine.set_input(subject)`` — regorus converts the
    Python dict natively.
    """

    def __init__(self, input_mode: str = "json") -> None:
        if input_mode not in ("json", "dict"):
            raise ValueError(f"input_mode must be 'json' or 'dict', not {input_mode!r}")
        self.input_mode = input_mode
        self.name = "regorus" if input_mode == "json" else "regorus (dict input)"
        self.notes = (
            "json.dumps + set_input_json + eval_rule"
            if input_mode == "json"
            else "set_input(dict) + eval_rule"
        )
        super().__init__()

    def _load(self) -> None:
        import regorus

        engine = regorus.Engine()
        engine.add_policy("bench.rego", REGO_POLICY)
        self._engine = engine
        self._rule = f"data.{REGO_PACKAGE}.allow"
        self._dumps = json.dumps

    def decide(self) -> bool:
        engine = self._engine
        if self.input_mode == "json":
            engine.set_input_json(self._dumps(self._subject))
        else:
            engine.set_input(self._subject)
        return engine.eval_rule(self._rule) is True


class OpaGoPeer(Peer):
    """OPA (Go) via PyPI ``opa-golib-python-bindings``, module ``opa_bindings``.

    ``OpaEngine.eval_document(path, input)`` JSON-encodes the input, crosses
    ctypes into the Go c-shared library (which keeps a prepared query per path),
    and JSON-decodes the result envelope; all of that is inside the timed call.
    """

    name = "OPA (Go)"
    notes = "eval_document: json.dumps + ctypes + Go rego + json.loads"

    def _load(self) -> None:
        from opa_bindings import OpaEngine

        engine = OpaEngine()
        engine.add_policy("bench.rego", REGO_POLICY)
        self._engine = engine
        self._path = f"{REGO_PACKAGE}.allow"  # evaluated as data.costwarden.bench.allow

    def decide(self) -> bool:
        return self._engine.eval_document(self._path, self._subject) is True

    def close(self) -> None:
        if self.available:
            self._engine.close()


# --------------------------------------------------------------------------- Cedar

CEDAR_POLICY = """\
permit (
    principal,
    action == Action::"admit",
    resource is Workload
)
when {
    resource.hasTag("team") && resource.getTag("team") != "" &&
    resource.hasTag("feature") && resource.getTag("feature") != "" &&
    resource.hasTag("environment") && resource.getTag("environment") != "" &&
    (!(resource has workload_class && resource.workload_class == "batch") ||
     (resource has capacity && resource.capacity == "spot"))
};
"""


def subject_to_cedar_entities(subject: dict[str, Any]) -> list[dict[str, Any]]:
    """The subject as one Cedar entity ``Workload::"subject"``.

    Subject tags become Cedar entity tags (``hasTag``/``getTag``); workload class
    and capacity become attributes. ``None`` values are dropped (absent).
    """
    attrs: dict[str, Any] = {}
    workload_class = (subject.get("workload") or {}).get("class")
    if workload_class is not None:
        attrs["workload_class"] = workload_class
    capacity = subject.get("capacity")
    if capacity is not None:
        attrs["capacity"] = capacity
    tags = {k: v for k, v in (subject.get("tags") or {}).items() if v is not None}
    return [
        {
            "uid": {"type": "Workload", "id": "subject"},
            "attrs": attrs,
            "parents": [],
            "tags": tags,
        }
    ]


class CedarPeer(Peer):
    """Cedar via PyPI ``cedarpy``.

    Request: principal ``Caller::"admission"``, action ``Action::"admit"``,
    resource ``Workload::"subject"``; the subject is the resource entity, rebuilt
    per decision (it changes per request). The policy is a pre-parsed
    ``cedarpy.PolicySet``. Timed: dict -> entity list + ``cedarpy.is_authorized``
    (which JSON-encodes the entities and decodes the response).
    """

    name = "Cedar"
    notes = "build entity + is_authorized(PolicySet) (entities JSON-encoded)"

    def _load(self) -> None:
        import cedarpy

        self._policies = cedarpy.PolicySet.from_str(CEDAR_POLICY)
        self._is_authorized = cedarpy.is_authorized
        self._request = {
            "principal": {"type": "Caller", "id": "admission"},
            "action": {"type": "Action", "id": "admit"},
            "resource": {"type": "Workload", "id": "subject"},
            "context": {},
        }

    def decide(self) -> bool:
        entities = subject_to_cedar_entities(self._subject)
        result = self._is_authorized(self._request, self._policies, entities)
        if result.diagnostics.errors:
            raise RuntimeError(f"Cedar evaluation errors: {result.diagnostics.errors}")
        return bool(result.allowed)


# --------------------------------------------------------------------------- CEL

# Top-level subject keys (tags, workload, capacity) are the CEL variables; all three must be present.
CEL_EXPRESSION = (
    "'team' in tags && tags.team != ''"
    " && 'feature' in tags && tags.feature != ''"
    " && 'environment' in tags && tags.environment != ''"
    " && (!('class' in workload && workload['class'] == 'batch') || capacity == 'spot')"
)


class CelPeer(Peer):
    """CEL via PyPI ``common-expression-language``, module ``cel``.

    ``cel.compile(expr)`` once; per decision ``Program.execute(subject)``: the
    subject's top-level keys are the CEL variables, and the dict -> CEL value
    conversion (the bulk of the cost) happens inside the timed call.
    """

    name = "CEL"
    notes = "Program.execute(dict) (dict -> CEL conversion inside)"

    def _load(self) -> None:
        import cel

        self._program = cel.compile(CEL_EXPRESSION)

    def decide(self) -> bool:
        return self._program.execute(self._subject) is True


# --------------------------------------------------------------------------- registry + timing

PEER_FACTORIES: tuple[Callable[[], Peer], ...] = (
    ClosurePeer,
    RegorusPeer,
    lambda: RegorusPeer(input_mode="dict"),
    OpaGoPeer,
    CedarPeer,
    CelPeer,
)


def all_peers() -> list[Peer]:
    """Instantiate every peer (engines load here, not at import)."""
    return [factory() for factory in PEER_FACTORIES]


def _time_block(peer: Peer, subject: dict[str, Any], block: int) -> int:
    peer.prepare(subject)
    decide = peer.decide  # after prepare: a peer may bind a new decide to the prepared input
    t0 = time.perf_counter_ns()
    for _ in range(block):
        decide()
    return time.perf_counter_ns() - t0


def _choose_block(peer: Peer, inputs: Sequence[dict[str, Any]], target_ns: int) -> int:
    """Block size so one block takes >= target_ns (timer overhead <1%)."""
    block = 1
    while block < 100_000:
        elapsed = min(_time_block(peer, subject, block) for subject in inputs)
        if elapsed >= target_ns:
            break
        block = block * 2 if elapsed == 0 else max(block + 1, math.ceil(block * target_ns / elapsed))
    return block


def time_peer(
    peer: Peer,
    inputs: Sequence[dict[str, Any]] = BENCH_INPUTS,
    n: int = 20_000,
    *,
    block: int | None = None,
    warmup: int = 500,
    target_block_ns: int = 20_000,
) -> dict[str, Any]:
    """Per-decision latency of ``peer.decide()`` in microseconds.

    Decisions are timed in blocks of ``block`` consecutive ``decide()`` calls on
    the same prepared subject (rotating through ``inputs`` block by block), and
    each block's time is divided by its size. With ``block=None`` the block is
    sized so one block takes >= ``target_block_ns`` (~20 µs): 1 for engines
    slower than that, ~100+ for sub-µs closures. ``median_us``/``p99_us`` are
    over per-block means, so for block > 1 the p99 is a p99 of block means.
    GC is disabled while timing. ``n`` is the total number of timed decisions.
    """
    if not peer.available:
        raise RuntimeError(f"{peer.name} is not available: {peer.reason}")
    if not inputs:
        raise ValueError("inputs must not be empty")
    for i in range(warmup):
        peer.prepare(inputs[i % len(inputs)])
        peer.decide()
    if block is None:
        block = _choose_block(peer, inputs, target_block_ns)
    blocks = max(len(inputs), math.ceil(n / block))
    samples: list[float] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(blocks):
            elapsed = _time_block(peer, inputs[i % len(inputs)], block)
            samples.append(elapsed / block / 1000.0)
    finally:
        if gc_was_enabled:
            gc.enable()
    samples.sort()
    p99_index = min(len(samples) - 1, math.ceil(0.99 * len(samples)) - 1)
    return {
        "median_us": statistics.median(samples),
        "p99_us": samples[p99_index],
        "mean_us": statistics.fmean(samples),
        "block": block,
        "decisions": blocks * block,
    }
