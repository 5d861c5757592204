"""``spotOnly``: workloads of the matched classes (default: batch) are pinned to spot capacity.

A toleration only *allows* spot; a workload counts as spot when the adapter found it pinned
(nodeSelector, or every required node-affinity term), or the cloud says so (instance lifecycle,
capacity type). The fix adds the platform's spot nodeSelector and toleration to every pod spec.

A pod spec pinned to a named node group or node pool (:data:`NODE_POOL_LABELS`) is judged by
that pin: whether the group is spot is a property of the group, which the manifest does not show.
Adding a spot label there would leave the pod Pending whenever the group is not spot (and always
with a label the group's nodes never carry, as Karpenter's on an EKS managed node group), so the
fix leaves such pod specs alone and the finding says how to make the capacity visible.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from costwarden.engine import patch
from costwarden.engine.catalog import HOURS_PER_MONTH, Catalog
from costwarden.engine.decision import Fix, Outcome
from costwarden.engine.rules.base import (
    Check,
    CompileEnv,
    EvalContext,
    OutcomeKey,
    RuleKind,
    RuleParams,
    Shortcut,
    memo_outcome,
    with_shortcuts,
)
from costwarden.engine.subjects import WORKLOAD_CLASSES, Resource, Subject, WorkloadClass

Platform = Literal["karpenter", "eks", "gke", "aks"]

SPOT_SELECTORS: dict[str, tuple[str, str]] = {
    "karpenter": ("karpenter.sh/capacity-type", "spot"),
    "eks": ("eks.amazonaws.com/capacityType", "SPOT"),
    "gke": ("cloud.google.com/gke-spot", "true"),
    "aks": ("kubernetes.azure.com/scalesetpriority", "spot"),
}
SPOT_TOLERATIONS: dict[str, dict[str, str] | None] = {
    "karpenter": None,
    "eks": None,
    "gke": {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
    "aks": {
        "key": "kubernetes.azure.com/scalesetpriority",
        "operator": "Equal",
        "value": "spot",
        "effect": "NoSchedule",
    },
}


def _batch_only() -> list[WorkloadClass]:
    return ["batch"]


class SpotFix(RuleParams):
    platform: Platform | Literal["auto"] = Field(
        description="whose spot labels the fix uses; auto reads the pod's existing node labels"
    )
    fallback: Platform = Field(default="karpenter", description="with auto, when nothing points to a platform")


# Label-key prefixes, the first that matches wins. Only managed node groups carry
# eks.amazonaws.com/capacityType (and .../nodegroup); EKS Auto Mode nodes, with their other
# eks.amazonaws.com/ labels (instance-*, compute-type), are made by Karpenter.
PLATFORM_HINTS: tuple[tuple[str, Platform], ...] = (
    ("cloud.google.com/", "gke"),
    ("karpenter.sh/", "karpenter"),
    ("karpenter.k8s.aws/", "karpenter"),
    ("eks.amazonaws.com/capacityType", "eks"),
    ("eks.amazonaws.com/nodegroup", "eks"),
    ("eks.amazonaws.com/", "karpenter"),
    ("kubernetes.azure.com/", "aks"),
)


def detect_platform(raw: Any, pod_spec_pointers: tuple[str, ...]) -> Platform | None:
    """The platform a pod spec already targets, from the label keys it selects or tolerates."""
    keys: list[str] = []
    for pointer in pod_spec_pointers:
        spec = patch.resolve(raw, pointer) or {}
        keys += list((spec.get("nodeSelector") or {}).keys())
        keys += [t.get("key", "") for t in spec.get("tolerations") or [] if isinstance(t, dict)]
        terms = (
            ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
                "requiredDuringSchedulingIgnoredDuringExecution"
            )
            or {}
        ).get("nodeSelectorTerms") or []
        keys += [e.get("key", "") for t in terms for e in (t.get("matchExpressions") or []) if isinstance(e, dict)]
    for key in keys:
        for prefix, platform in PLATFORM_HINTS:
            if isinstance(key, str) and key.startswith(prefix):
                return platform
    return None


# Node labels that name the group or pool a node belongs to → (what it is, its platform, what to do).
NODE_POOL_LABELS: dict[str, tuple[str, Platform, str]] = {
    "eks.amazonaws.com/nodegroup": ("EKS managed node group", "eks", "run it on a node group with capacity type SPOT"),
    "cloud.google.com/gke-nodepool": ("GKE node pool", "gke", "run it on a Spot node pool"),
    "kubernetes.azure.com/agentpool": ("AKS node pool", "aks", "run it on a spot node pool"),
    "agentpool": ("AKS node pool", "aks", "run it on a spot node pool"),
    "karpenter.sh/nodepool": ("Karpenter NodePool", "karpenter", "allow spot in that NodePool's requirements"),
}


def _pool_pin(spec: Any) -> tuple[str, str] | None:
    """(label, pool names) a pod spec pins by its nodeSelector, or by an ``In`` expression on a
    node-pool label in every required node-affinity term (they are ORed); None when not pinned."""
    if not isinstance(spec, Mapping):
        return None
    selector = spec.get("nodeSelector")
    for key in NODE_POOL_LABELS:
        if isinstance(selector, Mapping) and selector.get(key) is not None:
            return key, _label(selector[key])
    terms = patch.resolve(spec, "/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution")
    terms = terms.get("nodeSelectorTerms") if isinstance(terms, Mapping) else None
    pins = [_term_pool(t) for t in terms] if isinstance(terms, list) and terms else [None]
    if any(p is None for p in pins):
        return None
    return pins[0]


def _term_pool(term: Any) -> tuple[str, str] | None:
    exprs = term.get("matchExpressions") if isinstance(term, Mapping) else None
    for expr in exprs if isinstance(exprs, list) else ():
        if isinstance(expr, Mapping) and expr.get("key") in NODE_POOL_LABELS and expr.get("operator") == "In":
            values = expr.get("values")
            if isinstance(values, list) and values:
                return str(expr["key"]), ",".join(_label(v) for v in values)
    return None


def _pool_pins(subject: Resource) -> dict[str, tuple[str, str]]:
    """The subject's pod specs (by pointer) pinned to a named node pool."""
    if subject.raw is None:
        return {}
    found = {p: _pool_pin(patch.resolve(subject.raw, p)) for p in subject.pod_spec_pointers}
    return {p: pin for p, pin in found.items() if pin is not None}


class SpotOnly(RuleParams):
    workloadClasses: list[WorkloadClass] = Field(default_factory=_batch_only)
    minGpus: float = Field(default=0, ge=0, description="only workloads with at least this many GPUs")
    fix: SpotFix | None = None


def compile(params: SpotOnly, env: CompileEnv) -> Check:
    classes = frozenset(params.workloadClasses)
    min_gpus = params.minGpus
    fix_params = params.fix
    catalog = env.catalog

    covered = ", ".join(sorted(classes))
    skipped = {c: Outcome("skip", f"{c} workload; rule covers {covered}", static=True) for c in WORKLOAD_CLASSES}
    passed = {
        c: Outcome("pass", f"{c} workload is pinned to spot capacity", path="capacity", static=True)
        for c in WORKLOAD_CLASSES
    }

    memo: dict[Any, Outcome] = {}
    # the first condition of the chain binds the workload and its class for the others
    # (passes first: the classes the rule covers are the ones it is written for)
    conditions = [
        (f"_c == {c!r} and subject.capacity == 'spot' and _w.gpus >= {float(min_gpus)!r}", passed[c])
        for c in sorted(classes)
    ]
    conditions += [(f"_c == {c!r}", skipped[c]) for c in WORKLOAD_CLASSES if c not in classes]
    first, outcome = conditions[0]
    conditions[0] = (first.replace("_c", "(_c := (_w := subject.workload).workload_class)", 1), outcome)
    shortcuts = [Shortcut(condition, outcome, ("resource",)) for condition, outcome in conditions]

    def check(subject: Subject, ctx: EvalContext) -> Outcome:
        assert isinstance(subject, Resource)
        work = subject.workload
        if work.workload_class not in classes:
            return skipped[work.workload_class]
        if work.gpus < min_gpus:
            return Outcome("skip", f"{work.gpus:g} GPUs, rule covers workloads with {min_gpus:g} or more")
        if subject.capacity == "spot":
            return passed[work.workload_class]
        if subject.raw is not None:
            # built per subject: a fix patches the subject's own object, and its pod specs' pins
            # decide the message (the outcome key below sets such subjects apart)
            pins = _pool_pins(subject)
            fix = _fix(subject, _platform(subject, fix_params), pins)
            return _failure(subject, catalog, fix, pins if subject.capacity == "unknown" else {})
        key = (work, subject.capacity, subject.hourly_usd)
        found = memo.get(key)
        if found is not None:
            return found
        return memo_outcome(memo, key, lambda: _failure(subject, catalog, None, {}))

    # for a subject without its object the outcome is a function of these (one with its object
    # gets an outcome built for it, never kept); _w is the workload, bound by the first shortcut
    key = OutcomeKey("(_w, subject.capacity, subject.hourly_usd, subject.raw is None)", ("resource",),
                     after_shortcut=True)
    return with_shortcuts(check, shortcuts, None if fix_params is not None else key)


def _failure(subject: Resource, catalog: Catalog, fix: Fix | None, pins: Mapping[str, tuple[str, str]]) -> Outcome:
    where = "" if subject.capacity == "unknown" else f" ({subject.capacity})"
    message = f"{subject.workload.workload_class} workload is not pinned to spot capacity{where}"
    if pins:
        message = _pool_message(subject, next(iter(pins.values())))
    return Outcome(
        "fail",
        message,
        path="capacity",
        expected="spot",
        actual=subject.capacity,
        fix=fix,
        savings_usd_month=_monthly_saving(subject, catalog),
    )


def _pool_message(subject: Resource, pin: tuple[str, str]) -> str:
    key, names = pin
    what, platform, advice = NODE_POOL_LABELS[key]
    label, value = SPOT_SELECTORS[platform]
    return (
        f"{subject.workload.workload_class} workload is pinned to the {what} {key}={names}, whose capacity type "
        f"cannot be known from the manifest: {advice} and select {label}: {value!r} too"
    )


def _monthly_saving(subject: Resource, catalog: Catalog) -> float | None:
    on_demand = (
        subject.hourly_usd if subject.hourly_usd is not None else catalog.hourly_usd(subject.workload, spot=False)
    )
    spot = catalog.spot_hourly_usd(subject.workload)
    list_price = catalog.hourly_usd(subject.workload, spot=False)
    if on_demand is None or spot is None or not list_price:
        return None
    return round(on_demand * (1 - spot / list_price) * HOURS_PER_MONTH, 2)


def _platform(subject: Resource, params: SpotFix | None) -> str | None:
    if params is None:
        return None
    if params.platform != "auto":
        return params.platform
    return detect_platform(subject.raw, subject.pod_spec_pointers) or params.fallback


# Node labels that say whether a node is spot; a spot node of one platform carries only its own.
CAPACITY_KEYS = frozenset({key for key, _ in SPOT_SELECTORS.values()} | {"cloud.google.com/gke-preemptible"})


def _label(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _allows(spec: Any, node: Mapping[str, str]) -> bool:
    """Whether a pod spec, once the fix sets ``node`` (the spot node's capacity labels) in its
    nodeSelector, still admits such a node: no other capacity label in the nodeSelector, and some
    required node-affinity term (they are ORed) whose capacity expressions the node satisfies.
    Expressions on other labels are assumed to be satisfiable."""
    if not isinstance(spec, Mapping):
        return True
    selector = spec.get("nodeSelector")
    if isinstance(selector, Mapping) and any(k in CAPACITY_KEYS and k not in node for k in selector):
        return False
    terms = patch.resolve(spec, "/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution")
    terms = terms.get("nodeSelectorTerms") if isinstance(terms, Mapping) else None
    if not isinstance(terms, list) or not terms:
        return True
    return any(_term_allows(t, node) for t in terms if isinstance(t, Mapping))


def _term_allows(term: Mapping[str, Any], node: Mapping[str, str]) -> bool:
    exprs = term.get("matchExpressions")
    for expr in exprs if isinstance(exprs, list) else ():
        key = expr.get("key") if isinstance(expr, Mapping) else None
        if key not in CAPACITY_KEYS:
            continue
        values = expr.get("values")
        op, values = expr.get("operator"), [_label(v) for v in values] if isinstance(values, list) else []
        ok = {
            "In": node.get(key) in values,
            "NotIn": node.get(key) not in values,
            "Exists": key in node,
            "DoesNotExist": key not in node,
        }.get(op, False)
        if not ok:
            return False
    return True


def _fix(subject: Resource, platform: str | None, pins: Mapping[str, tuple[str, str]]) -> Fix | None:
    """The fix. A pod spec whose required capacity the spot nodeSelector would contradict (the
    patched pod would match no node and stay Pending), or that is pinned to a named node pool
    (``pins``), is left alone; None when that leaves nothing."""
    if platform is None or subject.raw is None or not subject.pod_spec_pointers:
        return None
    key, value = SPOT_SELECTORS[platform]
    toleration = SPOT_TOLERATIONS[platform]
    ops: list[dict[str, Any]] = []
    conflicts = False
    for pointer in subject.pod_spec_pointers:
        if pointer in pins or not _allows(patch.resolve(subject.raw, pointer), {key: value}):
            conflicts = True
            continue
        ops += patch.set_entries(subject.raw, patch.join(pointer, "nodeSelector"), {key: value})
        if toleration:
            ops += patch.append_items(subject.raw, patch.join(pointer, "tolerations"), [toleration])
    if conflicts and not ops:
        return None
    what = f"nodeSelector {key}: {value!r}" + (" and its toleration" if toleration else "")
    return Fix(f"pin to spot capacity ({platform}): add {what}", tuple(ops), "object")


KIND = RuleKind("spotOnly", SpotOnly, ("resource",), compile, "matched workload classes run pinned to spot capacity")
