"""``requireTags``: tag (label) keys present and non-empty, values matching a regex.

A resource's tags may not all be known yet (a Terraform plan: :class:`UnknownTags`). A tag whose
value is known only after apply is present, but its value is neither checked against a regex nor
passed; a required key the tags do not show, where they may hold keys they do not show, is not
reported missing. Both cannot be judged at plan time: with nothing else wrong, the result is an
advisory failure (a warning that never denies) naming each tag and why; real failures on the same
subject still fail, with the unjudged tags named apart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from costwarden.engine import patch
from costwarden.engine.decision import Fix, Outcome
from costwarden.engine.rules.base import (
    Check,
    CompileEnv,
    EvalContext,
    OutcomeKey,
    RuleCompileError,
    RuleKind,
    RuleParams,
    Shortcut,
    memo_outcome,
    with_shortcuts,
)
from costwarden.engine.subjects import LlmCall, Resource, Subject, UnknownTags


class RequireTags(RuleParams):
    """Required tag keys; optional value regexes (searched, not full-matched); default values a
    fix may add for missing keys."""

    keys: list[str] = Field(default_factory=list, description="tag keys that must be present and non-empty")
    values: dict[str, str] = Field(default_factory=dict, description="tag key -> regex its value must match")
    defaults: dict[str, str] = Field(default_factory=dict, description="values a fix adds for missing keys")


def compile(params: RequireTags, env: CompileEnv) -> Check:
    keys = tuple(params.keys)
    patterns: list[tuple[str, re.Pattern[str], str]] = []
    for key, regex in params.values.items():
        try:
            patterns.append((key, re.compile(regex), regex))
        except re.error as exc:
            raise RuleCompileError(
                f"invalid regex for tag '{key}': {exc.msg}",
                ("values", key),
                code="invalid-regex",
                hint="regexes use Python syntax",
            ) from exc
    defaults = dict(params.defaults)
    memo: dict[Any, Outcome] = {}
    expected = {"keys": list(keys), "values": {k: src for k, _, src in patterns}}
    passed = Outcome(
        "pass", f"required tags present: {', '.join(keys)}" if keys else "tag values valid", path="tags", static=True
    )

    shortcuts = _shortcuts(keys, passed) if keys and not patterns else []
    sources = {k: src for k, _, src in patterns}

    def check(subject: Subject, ctx: EvalContext) -> Outcome:
        if isinstance(subject, Resource) and subject.unknown_tags:
            return _unknowns(subject, keys, patterns, expected, defaults) or passed
        tags = subject.attribution if subject.__class__ is LlmCall else subject.tags
        state: list[tuple[str, str | None]] = []  # each missing key with its value, each bad value
        for key in keys:
            value = tags[key] if key in tags else None  # noqa: SIM401 - a mappingproxy's get() is slower
            if not value:
                state.append((key, value))
        for key, rx, _ in patterns:
            value = tags[key] if key in tags else None  # noqa: SIM401
            if value and not rx.search(value):
                state.append((key, value))
        return failed(subject, tags, state) if state else passed

    def failed(subject: Subject, tags: Mapping[str, str], state: list[tuple[str, str | None]]) -> Outcome:
        where = (subject.tags_pointer or "tags") if isinstance(subject, Resource) else "tags"
        memo_key = (where, *state)  # holds all the outcome shows
        found = None if defaults else memo.get(memo_key)  # with defaults the fix patches this raw object
        if found is not None:
            return found
        missing = [k for k, v in state if not v]
        bad = [(k, v, sources[k]) for k, v in state if v]
        if defaults:
            return _failure(subject, where, missing, bad, tags, expected, defaults)
        return memo_outcome(memo, memo_key, lambda: _failure(subject, where, missing, bad, tags, expected, defaults))

    # without defaults, the outcome is a function of the key's values: see _outcome_key
    outcome_key = None if defaults or not (keys or patterns) else _outcome_key(keys, patterns)
    return with_shortcuts(check, shortcuts, outcome_key)


_KEY_HEAD = "subject.tags_pointer, subject.unknown_tags, "


def _outcome_key(keys: tuple[str, ...], patterns: list[tuple[str, re.Pattern[str], str]]) -> OutcomeKey:
    """What the check's outcome depends on (without defaults): where the tags live, what of them
    is unknown (outcomes on unknown tags are built afresh, never kept), each required
    key's value where it is missing or empty (``False`` where present: any value passes), and the
    values the patterns test. For resources; other subjects' tags have no pointer.

    Without patterns, the rule's shortcut has read every required value already (``_v0``...);
    otherwise the key reads them itself (tags are read-only mappings, whose ``in`` and ``[]``
    cost less than their ``get``)."""
    if keys and not patterns:
        parts = [f"not _v{n} and _v{n}" for n in range(len(keys))]
        return OutcomeKey(f"({_KEY_HEAD}{', '.join(parts)})", ("resource",), after_shortcut=True)
    parts = [f"not (_v{n} := _t[{key!r}] if {key!r} in _t else None) and _v{n}" for n, key in enumerate(keys)]
    parts += [f"(_t[{key!r}] if {key!r} in _t else None)" for key, _, _ in patterns]
    # a conditional expression tests first: the first test binds the tags for the rest
    parts[0] = parts[0].replace(" in _t ", " in (_t := subject.tags) ", 1)
    return OutcomeKey(f"({_KEY_HEAD}{', '.join(parts)})", ("resource",))


def _shortcuts(keys: tuple[str, ...], passed: Outcome) -> list[Shortcut]:
    """Every key present and non-empty, inline: the pass, for the generated plans. For resources
    every value is read (into ``_v0``...) before any is tested, so that the outcome key (see
    _outcome_key) need not read them again; ``in`` and ``[]`` cost less than ``get``."""
    first, *rest = keys
    values = ", ".join(
        f"(_v{n} := _t[{k!r}] if {k!r} in {'(_t := subject.tags)' if n == 0 else '_t'} else None)"
        for n, k in enumerate(keys)
    )
    every = " and ".join(f"_v{n}" for n in range(len(keys)))
    out = [Shortcut(f"({values},) and {every}", passed, ("resource",))]
    for attr, types in (("tags", ("serving_config",)), ("attribution", ("llm_call",))):
        condition = f"{first!r} in (_t := subject.{attr}) and _t[{first!r}]" + "".join(
            f" and {k!r} in _t and _t[{k!r}]" for k in rest
        )
        out.append(Shortcut(condition, passed, types))
    return out


def _failure(
    subject: Subject,
    where: str,
    missing: list[str],
    bad: list[tuple[str, str, str]],
    tags: Mapping[str, str],
    expected: dict[str, Any],
    defaults: dict[str, str],
) -> Outcome:
    parts = []
    if missing:
        parts.append(f"missing required tag{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    parts.extend(f"tag '{k}'='{v}' does not match {src}" for k, v, src in bad)
    return Outcome(
        "fail",
        "; ".join(parts),
        path=where,
        expected=expected,
        actual={k: tags.get(k) for k in (*missing, *(b[0] for b in bad))},
        fix=_fix(subject, missing, bad, defaults),
    )


def _unknowns(
    subject: Resource,
    keys: tuple[str, ...],
    patterns: list[tuple[str, re.Pattern[str], str]],
    expected: dict[str, Any],
    defaults: dict[str, str],
) -> Outcome | None:
    """The outcome on a resource whose tags are not all known (see the module docstring); None
    for a pass."""
    tags, unknown = subject.tags, subject.unknown_tags
    maybe = [k for k in keys if k not in tags and unknown.may_hold(k)]  # the plan may not show it
    missing = [k for k in keys if not tags.get(k) and k not in maybe]
    later = [(k, src) for k, _, src in patterns if k in unknown.values]  # present, value known after apply
    known = [(k, v, rx, src) for k, rx, src in patterns if k not in unknown.values and (v := tags.get(k))]
    bad = [(k, v, src) for k, v, rx, src in known if not rx.search(v)]
    if not (missing or bad or maybe or later):
        return None
    where = subject.tags_pointer or "tags"
    if not (maybe or later):
        return _failure(subject, where, missing, bad, tags, expected, defaults)
    unjudged = "cannot be judged at plan time: " + "; ".join(_unjudged(later, maybe, unknown))
    if missing or bad:
        failure = _failure(subject, where, missing, bad, tags, expected, defaults)
        return failure._replace(message=f"{failure.message}; {unjudged}")
    actual = {k: tags.get(k) for k in (*maybe, *(k for k, _ in later))}
    return Outcome("fail", unjudged, path=where, expected=expected, actual=actual, advisory=True)


def _unjudged(later: list[tuple[str, str]], maybe: list[str], unknown: UnknownTags) -> list[str]:
    """Each tag the plan cannot settle, and why."""
    parts = [f"tag '{k}' is known only after apply: its value cannot be checked against {src}" for k, src in later]
    if maybe:
        names, one = ", ".join(f"'{k}'" for k in maybe), len(maybe) == 1
        parts.append(
            f"tag{'' if one else 's'} {names} {'is' if one else 'are'} not among the tags the plan shows, and "
            f"{unknown.incomplete} may hold {'it' if one else 'them'}"
        )
    return parts


def _fix(subject: Subject, missing: list[str], bad: list[tuple[str, str, str]], defaults: dict[str, str]) -> Fix | None:
    """Add default values, only when every problem has a default (a partial fix still fails)."""
    wanted = [*missing, *(b[0] for b in bad)]
    if not wanted or any(k not in defaults for k in wanted):
        return None
    if not isinstance(subject, Resource) or subject.raw is None or not subject.tags_pointer:
        return None
    if bad and _selected_on(subject, [b[0] for b in bad]):
        return None
    entries = {k: defaults[k] for k in wanted}
    ops = patch.set_entries(subject.raw, subject.tags_pointer, entries)
    desc = ", ".join(f"{k}={v}" for k, v in entries.items())
    return Fix(f"add tags {desc}", tuple(ops), "object")


# Controllers whose selector is made of the labels their users put on the pod template.
_LABEL_SELECTING_OWNERS = frozenset({"ReplicaSet", "ReplicationController", "StatefulSet", "DaemonSet"})


def _selected_on(subject: Resource, keys: list[str]) -> bool:
    """Whether replacing these label values of a Kubernetes object could break a selector: a
    ReplicaSet (StatefulSet, ...) controls it (its pod, relabelled, no longer matches the selector;
    it is orphaned and the controller creates another, without end), or its own ``spec.selector``
    names one of the keys (the object would no longer be valid)."""
    raw = subject.raw
    if subject.provider != "kubernetes" or not isinstance(raw, Mapping):
        return False
    owners = patch.resolve(raw, "/metadata/ownerReferences")
    if isinstance(owners, list) and any(isinstance(o, Mapping) and o.get("controller") is True
                                        and o.get("kind") in _LABEL_SELECTING_OWNERS for o in owners):
        return True
    selector = patch.resolve(raw, "/spec/selector")
    if not isinstance(selector, Mapping):
        return False
    match_labels = selector.get("matchLabels")
    selected = set(match_labels) if isinstance(match_labels, Mapping) else set()
    exprs = selector.get("matchExpressions")
    selected |= {e.get("key") for e in exprs if isinstance(e, Mapping)} if isinstance(exprs, list) else set()
    return any(k in selected for k in keys)


KIND = RuleKind(
    "requireTags",
    RequireTags,
    ("resource", "llm_call", "serving_config"),
    compile,
    "tag keys present and non-empty, values matching regexes",
)
