"""``PolicySet.evaluator``'s function: every plan of one surface inlined into one generated function.

A plan (``engine/plan.py``) is the straight-line code that judges subjects of one (type, provider,
kind) on a surface. Calling it through a dispatch function costs a second Python frame and a
dictionary lookup per decision, about as much as a policy's shortcut. So the judge is itself
generated: it reads the subject's plan key (an interned string, cached on the subject) and runs
the body of the matching plan in place::

    def judge(subject):
        entry = subject._plan_entry
        if entry is None:
            entry = plan_entry(subject)
        key, ref = entry
        ctx = CTX
        if key is K0:
            ...plan 0...
        if key is K1:
            ...plan 1...
        return miss(subject)

``miss`` judges a subject of a key the function does not hold yet, through the policy set's own
plan for it, and adds that plan to the function: the function object handed out stays the same,
its code is replaced (``function.__code__``; the names the new code needs are added to its
globals first, and none is ever rebound, so a thread still running the old code is unaffected).
Beyond ``INLINE_PLANS`` keys, the rest are judged through ``miss``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from costwarden.engine.decision import Decision, SubjectRef
from costwarden.engine.plan import Runner, judge_source
from costwarden.engine.rules.base import EvalContext
from costwarden.engine.subjects import Subject

INLINE_PLANS = 16
"""Plans one judge holds inline (distinct subject type, provider and kind per surface)."""

PlanEntry = Callable[[Subject], tuple[str, SubjectRef]]
Body = Callable[[Subject, str], tuple[list[str], dict[str, Any]]]
"""A subject's plan as function-body lines and globals, its names prefixed (``plan.plan_body``)."""


class Judge:
    """Builds and grows one surface's judge function (``function``)."""

    def __init__(
        self,
        ctx: EvalContext,
        *,
        plan_entry: PlanEntry,
        runner: Callable[[Subject], Runner],
        body: Body,
        label: str,
    ) -> None:
        self._ctx = ctx
        self._plan_entry = plan_entry
        self._runner = runner
        self._body = body
        self._label = label
        self._lock = threading.Lock()
        self._plans: list[tuple[str, list[str]]] = []
        self._keys: set[str] = set()
        self._ns: dict[str, Any] = {"CTX": ctx, "plan_entry": plan_entry, "miss": self._miss}
        self.function: Callable[[Subject], Decision] = self._compile()

    def _compile(self) -> Callable[[Subject], Decision]:
        source = judge_source(self._plans)
        exec(compile(source, f"<costwarden {self._label}>", "exec"), self._ns)  # noqa: S102 - generated here
        function: Callable[[Subject], Decision] = self._ns["judge"]
        return function

    @property
    def source(self) -> str:
        return judge_source(self._plans)

    def _miss(self, subject: Subject) -> Decision:
        key, ref = subject.__dict__.get("_plan_entry") or self._plan_entry(subject)
        if key not in self._keys and len(self._keys) < INLINE_PLANS:
            self._inline(subject, key)
        return self._runner(subject)(subject, self._ctx, ref)

    def _inline(self, subject: Subject, key: str) -> None:
        with self._lock:
            if key in self._keys or len(self._keys) >= INLINE_PLANS:
                return
            n = len(self._plans)
            lines, ns = self._body(subject, f"p{n}_")
            ns[f"K{n}"] = key
            self._ns.update(ns)  # new names only: the running code never sees a name change
            self._plans.append((f"K{n}", lines))
            self._keys.add(key)
            self.function.__code__ = self._compile().__code__


__all__ = ["INLINE_PLANS", "Judge"]
