"""Decisions → ``admission.k8s.io/v1`` AdmissionReview responses, independent of any web framework.

::

    >>> response = review(policies, admission_review, mutate=False, deadline_s=2.0)  # doctest: +SKIP
    >>> response["response"]["allowed"]                                               # doctest: +SKIP

Reading the AdmissionReview itself (``AdmissionRequest``, ``parse``) lives in
:mod:`costwarden.enforcers.admission_request`.

What the API server gets, and why:

* ``response.uid`` echoes ``request.uid``; a denial carries ``status.code: 403`` and one concise
  message naming each blocking ``policy/rule`` and its fix; ``warn`` effects become ``warnings``
  of at most 120 characters each.
* **Not judged** (allowed): DELETE and CONNECT, subresources other than ``scale`` (``status``...),
  an UPDATE that only changes ``status``, an object that is being deleted (blocking a finalizer
  removal would wedge it), and kinds no policy matches. UPDATE judges the new object.
* **Pre-existing violations** (``allow_existing_violations``, on by default as in Kyverno): on
  UPDATE, a violation the old object already had, no worse — same subject, policy, rule and path,
  measured value no further from what the rule expects — does not deny: it is answered as a
  warning saying it pre-existed, and ``/mutate`` leaves it unfixed. An update that makes it worse
  (4 → 40 GPUs over a cost cap, a further missing tag) is denied and says so; errors are never
  excused (:mod:`costwarden.enforcers.existing_violations`).
* **Scale** (``<resource>/scale``, by ``kubectl scale`` or an HPA): ``/validate`` judges the parent,
  read from the API server through ``read_parent``, at the new replica count, as an UPDATE from
  the old one. A parent that cannot be read gets each policy's ``onError`` answer, with the reason
  (:mod:`costwarden.enforcers.scale`). ``/mutate`` does not judge scale (it could only patch the Scale).
* **vLLM ``--config`` from a ConfigMap**: ``/validate`` reads the ConfigMap from the object's
  namespace through ``read_config_map`` and judges with it, as ``costwarden check`` does with
  both manifests; one that cannot be read leaves the file's arguments "cannot be judged", and the
  answer says why (:mod:`costwarden.enforcers.cluster_reads`).
* **Mutation** (``mutate=True``) applies the fixes of enforced (``deny``/``warn``) failures to a
  copy of the object, re-evaluates and repeats until nothing is left to fix (at most
  :data:`MAX_FIX_ROUNDS` rounds), then answers the difference as a base64 JSONPatch. The patch of
  an already-fixed object is empty, so re-invocation changes nothing; when every failure has a
  fix, the patched object passes validation. ``/mutate`` never denies: ``/validate`` does.
* **No side effects**: admission evaluates without a budget ledger, so nothing is reserved or
  recorded, ``dryRun`` or not.
* **Deadline**: an evaluation that does not finish within ``deadline_s`` (kept below the webhook
  ``timeoutSeconds``) yields each policy's ``onError`` outcome for the object's kind — a denial
  for enforced policies — instead of a hang.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from costwarden.enforcers.admission_request import API_VERSION, AdmissionRequest, parse
from costwarden.enforcers.cluster_reads import ConfigMapReader, read_config_maps
from costwarden.enforcers.existing_violations import Baseline, is_violation
from costwarden.enforcers.fixes import apply_round
from costwarden.enforcers.scale_target import ParentReader, is_scale_request, parent_kind
from costwarden.engine.decision import Decision, Effect, RuleResult, SubjectRef
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.patch import apply_patch, diff
from costwarden.engine.subjects import Subject

if TYPE_CHECKING:
    from costwarden.adapters.vllm.mounts import ConfigMaps
from costwarden.errors import describe

MAX_FIX_ROUNDS = 3
MAX_WARNING_CHARS = 120
MAX_WARNINGS = 20
MAX_MESSAGE_CHARS = 1024
DEFAULT_DEADLINE_S = 2.0
# Kinds whose pods may run ``vllm serve`` (the serving_config policies judge them on a deadline).
VLLM_HOST_KINDS = frozenset({"Pod", "Deployment", "StatefulSet", "LeaderWorkerSet", "InferenceService",
                             "ServingRuntime", "ClusterServingRuntime", "LLMInferenceService", "VLLMRuntime"})
_IGNORED_ON_UPDATE = ("resourceVersion", "managedFields", "generation")


@dataclass(frozen=True, slots=True)
class AdmissionResult:
    """What costwarden decided about one request, before it becomes a response."""

    request: AdmissionRequest
    mutate: bool
    decisions: tuple[Decision, ...] = ()
    patch: tuple[dict[str, Any], ...] = ()
    applied: tuple[RuleResult, ...] = ()
    skipped: str | None = None
    timed_out: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def allowed(self) -> bool:
        return self.mutate or all(d.allowed for d in self.decisions)

    @property
    def outcome(self) -> str:
        """One word for metrics and logs: skipped, allowed, denied, patched or deadline."""
        if self.skipped:
            return "skipped"
        if self.timed_out:
            return "deadline"
        if self.patch:
            return "patched"
        return "allowed" if self.allowed else "denied"

    def response(self) -> dict[str, Any]:
        """The ``AdmissionReview.response`` object."""
        out: dict[str, Any] = {"uid": self.request.uid, "allowed": self.allowed}
        if not self.allowed:
            out["status"] = {"status": "Failure", "code": 403, "reason": "Forbidden",
                             "message": denial_message(self.decisions, self.notes)}
        warnings = self._warnings()
        if warnings:
            out["warnings"] = warnings
        if self.patch:
            out["patchType"] = "JSONPatch"
            out["patch"] = encode_patch(self.patch)
        return out

    def review(self) -> dict[str, Any]:
        """The whole AdmissionReview the webhook answers with."""
        return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": self.response()}

    def _warnings(self) -> list[str]:
        if self.mutate:
            lines = [f"costwarden fixed {r.policy}/{r.rule}: {r.fix.description}" for r in self.applied if r.fix]
        else:
            lines = [f"costwarden {r.policy}/{r.rule}: {r.message}"
                     for d in self.decisions for r in d.results if _is_warning(r)]
        lines += [f"costwarden: {note}" for note in self.notes]
        return _short(lines)


def _is_warning(r: RuleResult) -> bool:
    return r.result == "warn" or (r.result == "error" and r.effect == "warn")


def _short(lines: Sequence[str]) -> list[str]:
    """Distinct, printable, at most 120 characters each (longer ones may be cut by the API server)."""
    out: list[str] = []
    for line in lines:
        text = line if line.isprintable() else "".join(ch if ch.isprintable() else " " for ch in line)
        if len(text) > MAX_WARNING_CHARS:
            text = text[: MAX_WARNING_CHARS - 3].rstrip() + "..."
        if text not in out:
            out.append(text)
    return out[:MAX_WARNINGS]


def denial_message(decisions: Sequence[Decision], notes: Sequence[str] = ()) -> str:
    """``[policy/rule] message (fix: ...)`` for every blocking result, then the notes that explain
    them (a ConfigMap that could not be read), within 1 KiB."""
    parts = []
    for decision in decisions:
        for r in decision.blocking:
            fix = f" (fix: {r.fix.description})" if r.fix else ""
            parts.append(f"[{r.policy}/{r.rule}] {r.message}{fix}")
    text = "costwarden: " + "; ".join([*parts, *notes])
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return text[: MAX_MESSAGE_CHARS - 20].rstrip() + f"... ({len(parts)} violations)"


def encode_patch(ops: Sequence[Mapping[str, Any]]) -> str:
    """Standard base64 of the JSON Patch array, as ``AdmissionResponse.patch`` carries it."""
    return base64.b64encode(json.dumps(list(ops), separators=(",", ":")).encode()).decode("ascii")


# --- judging ------------------------------------------------------------------------------------


def skip_reason(request: AdmissionRequest) -> str | None:
    """Why a request is allowed without being judged, or None when it must be judged."""
    if request.operation in ("DELETE", "CONNECT"):
        return f"{request.operation} is not judged"
    if request.sub_resource:
        return f"the {request.sub_resource} subresource is not judged"
    obj = request.object
    meta = obj.get("metadata") if obj is not None else None
    if isinstance(meta, Mapping) and meta.get("deletionTimestamp"):
        return "the object is being deleted"
    if request.operation == "UPDATE" and request.old_object is not None and obj is not None \
            and _without_status(obj) == _without_status(request.old_object):
        return "a status-only update is not judged"
    return None


def _without_status(obj: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = out.get("metadata")
    if isinstance(meta, Mapping):
        out["metadata"] = {k: v for k, v in meta.items() if k not in _IGNORED_ON_UPDATE}
    return out


def object_subjects(obj: Mapping[str, Any], namespace: str | None = None,
                    config_maps: ConfigMaps | None = None) -> list[Subject]:
    """The subjects of one Kubernetes object, as ``costwarden check`` builds them: the resource
    and, for pods that run ``vllm serve``, their serving configs (``--config`` files read from
    ``config_maps``). ``namespace`` (the request's) fills in a namespace the object leaves out, as
    the API server does for namespaced objects."""
    from costwarden.adapters.sources import kubernetes_object_subjects

    meta = obj.get("metadata")
    if namespace and isinstance(meta, Mapping) and not meta.get("namespace"):
        obj = {**obj, "metadata": {**meta, "namespace": namespace}}
    return kubernetes_object_subjects(obj, config_maps=config_maps)


def evaluate_object(policies: PolicySet, obj: Mapping[str, Any], namespace: str | None = None,
                    config_maps: ConfigMaps | None = None) -> list[Decision]:
    """Every decision on an object on the admission surface — without a ledger, so nothing is
    reserved or recorded."""
    return [policies.evaluate(s, "admission", ledger=None) for s in object_subjects(obj, namespace, config_maps)]


def judge(policies: PolicySet, request: AdmissionRequest, *, mutate: bool,
          allow_existing_violations: bool = True, read_parent: ParentReader | None = None,
          read_config_map: ConfigMapReader | None = None) -> AdmissionResult:
    """Judge (``mutate=False``) or fix (``mutate=True``) one request. Runs the engine; no deadline.

    An object the adapters cannot read is judged like an evaluation error: each policy's
    ``onError`` decides (fail closed for enforced policies). With ``allow_existing_violations``
    an UPDATE is not denied (nor patched) for what the old object already violated, no worse
    (:mod:`costwarden.enforcers.existing_violations`). A ``scale`` request is judged on its
    parent workload, read with ``read_parent`` (:mod:`costwarden.enforcers.scale`). ``/validate``
    reads a vLLM ``--config`` file's ConfigMap with ``read_config_map``
    (:mod:`costwarden.enforcers.cluster_reads`)."""
    if not mutate and is_scale_request(request):
        from costwarden.enforcers.scale import judge_scale  # judge_scale builds on this module

        return judge_scale(policies, request, read_parent=read_parent, read_config_map=read_config_map,
                           allow_existing_violations=allow_existing_violations)
    reason = skip_reason(request)
    if reason is not None or request.object is None:
        return AdmissionResult(request, mutate, skipped=reason or "no object")
    config_maps: ConfigMaps | None = None
    notes: tuple[str, ...] = ()
    try:
        subjects = object_subjects(request.object, request.namespace)
        if not mutate:  # /mutate fixes no vLLM argument: the ConfigMap is read by /validate only
            config_maps, notes = read_config_maps(policies, subjects, read_config_map)
            if config_maps is not None:
                subjects = object_subjects(request.object, request.namespace, config_maps)
        decisions = [policies.evaluate(s, "admission", ledger=None) for s in subjects]
    except Exception as exc:
        return failure_result(policies, request, mutate=mutate, reason=f"cannot read the object: {describe(exc)}")
    baseline = existing_baseline(policies, request, decisions, config_maps) if allow_existing_violations else None
    if baseline is not None:
        decisions = baseline.excuse(decisions)
    if not mutate:
        return AdmissionResult(request, mutate, tuple(decisions), notes=notes)
    try:
        patched, applied = fix_object(policies, request.object, request.namespace, decisions, baseline=baseline)
        ops = diff(request.object, patched)
    except Exception as exc:  # an object too deep to copy, say: answer rather than fail the request
        return failure_result(policies, request, mutate=mutate, reason=f"cannot fix the object: {describe(exc)}")
    return AdmissionResult(request, mutate, tuple(decisions), tuple(ops), tuple(applied) if ops else ())


def existing_baseline(policies: PolicySet, request: AdmissionRequest, decisions: Sequence[Decision],
                      config_maps: ConfigMaps | None = None) -> Baseline | None:
    """The old object's violations, for an UPDATE whose new object has some (else None: judging
    the old object costs as much as the new one). An old object that cannot be read excuses
    nothing, so the new one is judged in full. ``config_maps``: those read for the new object
    (the old one's ``--config`` files are read from them as they are now)."""
    old = request.old_object
    if request.operation != "UPDATE" or old is None \
            or not any(is_violation(r) for d in decisions for r in d.results):
        return None
    try:
        return Baseline.of(evaluate_object(policies, old, request.namespace, config_maps))
    except Exception:
        return None


def deadline_result(policies: PolicySet, request: AdmissionRequest, *, mutate: bool,
                    deadline_s: float) -> AdmissionResult:
    """The answer when evaluation missed its deadline (see :func:`failure_result`)."""
    reason = f"evaluation did not finish within the {deadline_s:g}s admission deadline"
    return failure_result(policies, request, mutate=mutate, reason=reason, timed_out=True)


def failure_result(policies: PolicySet, request: AdmissionRequest, *, mutate: bool, reason: str,
                   timed_out: bool = False) -> AdmissionResult:
    """Every policy that could judge the object's kind reports an ``error`` with its ``onError``
    effect (a denial for enforced policies). ``/mutate`` allows without a patch and says why."""
    if mutate:
        return AdmissionResult(request, mutate, timed_out=timed_out, notes=(f"no fixes applied: {reason}",))
    results = []
    target = parent_kind(request) or request.kind  # a scale request missing its deadline: judge its parent's
    for policy in policies:
        effect = policy.effects["admission"]
        kind = target if policy.subject_type == "resource" else "vllm"
        if effect == "off" or policy.subject_type == "llm_call" or not policy.match.matches_kind("kubernetes", kind):
            continue
        if policy.subject_type == "serving_config" and target not in VLLM_HOST_KINDS:
            continue
        on_error: Effect = effect if policy.on_error == "deny" else "audit"
        results.append(RuleResult(policy.name, "evaluation", "error", on_error, policy.severity,
                                  f"{reason} (onError: {policy.on_error})"))
    ref = SubjectRef("resource", "kubernetes", target, request.name, request.namespace)
    return AdmissionResult(request, mutate, (Decision("admission", ref, tuple(results)),), timed_out=timed_out)


_executor_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def _shared_executor() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="costwarden-admission")
        return _executor


def review(policies: PolicySet, admission_review: Mapping[str, Any], *, mutate: bool,
           deadline_s: float = DEFAULT_DEADLINE_S, allow_existing_violations: bool = True,
           read_parent: ParentReader | None = None, read_config_map: ConfigMapReader | None = None
           ) -> dict[str, Any]:
    """Answer one AdmissionReview v1 (the sync entry point; the webhook server shares its parts).

    Raises :class:`AdapterError` when the review itself is malformed (the server answers 400).
    """
    request = parse(admission_review)
    future = _shared_executor().submit(judge, policies, request, mutate=mutate, read_parent=read_parent,
                                       read_config_map=read_config_map,
                                       allow_existing_violations=allow_existing_violations)
    try:
        result = future.result(timeout=deadline_s)
    except FutureTimeout:
        future.cancel()
        result = deadline_result(policies, request, mutate=mutate, deadline_s=deadline_s)
    return result.review()


# --- fixes: apply to a fixpoint, answer the difference ------------------------------------------


def enforced_fixes(decisions: Sequence[Decision]) -> list[RuleResult]:
    """Failures on enforced policies (deny or warn, not audit) whose fix patches the object."""
    return [
        r for d in decisions for r in d.results
        if r.result in ("fail", "warn") and r.effect in ("deny", "warn")
        and r.fix is not None and r.fix.target == "object" and r.fix.patch
    ]


def fix_object(policies: PolicySet, obj: Mapping[str, Any], namespace: str | None,
               decisions: Sequence[Decision], *, baseline: Baseline | None = None) -> tuple[Any, list[RuleResult]]:
    """Apply fixes on a copy of ``obj`` and re-evaluate until none is left (at most
    :data:`MAX_FIX_ROUNDS` rounds). Returns the fixed copy and the results whose fixes applied.
    Violations ``baseline`` excuses (pre-existing, no worse) are left as they are in every round."""
    current: Any = obj
    applied: list[RuleResult] = []
    for _ in range(MAX_FIX_ROUNDS):
        pending = enforced_fixes(decisions)
        if not pending:
            break
        current, done = apply_round(current, pending)
        if not done:
            break
        applied += done
        decisions = evaluate_object(policies, current, namespace)
        if baseline is not None:
            decisions = baseline.excuse(decisions)
    return current, applied


__all__ = [
    "API_VERSION",
    "DEFAULT_DEADLINE_S",
    "MAX_FIX_ROUNDS",
    "AdmissionRequest",
    "AdmissionResult",
    "apply_patch",
    "deadline_result",
    "denial_message",
    "diff",
    "encode_patch",
    "enforced_fixes",
    "evaluate_object",
    "existing_baseline",
    "failure_result",
    "fix_object",
    "judge",
    "object_subjects",
    "parse",
    "review",
    "skip_reason",
]
