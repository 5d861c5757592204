"""Policy tests: ``tests.yaml`` cases run offline against samples, like ``kyverno test``.

A ``tests.yaml`` sits next to the policy it tests::

    policy: require-cost-tags        # the policy under test
    surface: ci                      # default surface for the cases
    now: "2026-11-30T15:00:00Z"      # optional evaluation clock
    ledger: {spend: {"budget:...:2026-11-30": 3.1}}   # optional in-memory ledger contents
    cases:
      - name: a labelled job passes
        input: samples/allowed-labelled-job.yaml
        results:
          - {rule: cost-tags, result: pass}                      # pass|fail|warn|error|skip|none
          - {rule: cost-tags, result: fail, message: "regex", fix: "regex" | true | false, savings: true}

``result: none`` means the policy must not apply to the input at all. An unknown policy, rule
or input file is an error of the test file, never a silent pass. A bad test file (YAML, a
misspelt key, an invalid regex) is reported like a bad policy: file:line:col, source and hint.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from costwarden.adapters.ledger.memory import MemoryLedger
from costwarden.adapters.sources import subjects_from_path
from costwarden.engine.casefile import (
    CaseSource,
    ExpectedResult,
    LedgerSeed,
    PolicyTestCase,
    PolicyTestFile,
    read_case_file,
)
from costwarden.engine.decision import Decision, RuleResult
from costwarden.engine.diagnostics import did_you_mean
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.loader.walk import TEST_FILE, is_policy_test_file
from costwarden.errors import CostwardenError, PolicyError


@dataclass
class CaseReport:
    file: str
    case: str
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class PolicyTestReport:
    cases: list[CaseReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.errors and all(c.passed for c in self.cases)


def find_test_files(*paths: str | Path) -> Iterator[Path]:
    """``tests.yaml`` files named or under folders; in folders, only those holding test cases."""
    for path in map(Path, paths):
        if path.is_file() and path.name == TEST_FILE:
            yield path
        elif path.is_dir():
            yield from (f for f in sorted(path.rglob(TEST_FILE)) if is_policy_test_file(f))


def run_tests(*paths: str | Path, load: Any = None) -> PolicyTestReport:
    """Run every ``tests.yaml`` under ``paths``. ``load`` compiles a folder (default: load_policies)."""
    if load is None:
        from costwarden.api import load_policies as load
    report = PolicyTestReport()
    files = list(find_test_files(*paths))
    if not files:
        report.errors.append(f"no {TEST_FILE} found under {', '.join(map(str, paths))}")
    for file in files:
        try:
            spec, source = read_case_file(file)
            policies = load(file.parent)
        except PolicyError as exc:
            report.errors.append(exc.render())
            continue
        except CostwardenError as exc:
            report.errors.append(f"{file}: {exc}")
            continue
        _run_file(file, spec, policies, report, source)
    return report


def _run_file(
    file: Path, spec: PolicyTestFile, policies: PolicySet, report: PolicyTestReport, source: CaseSource
) -> None:
    policy = policies.get(spec.policy)
    if policy is None:
        hint = did_you_mean(spec.policy, policies.names, what="policies here") or "no policy is defined beside it"
        report.errors.append(
            source.diagnostic(("policy",), "unknown-policy", f"unknown policy {spec.policy!r}", hint).render()
        )
        return
    rules = {r.name for r in policy.rules}
    ledger = MemoryLedger()
    for key, amount in (spec.ledger.spend if spec.ledger else {}).items():
        ledger.add_spend(key, amount)
    for case in spec.cases:
        result = CaseReport(str(file), case.name)
        report.cases.append(result)
        unknown = sorted({e.rule for e in case.results} - rules)
        if unknown:
            result.failures.append(
                f"unknown rule(s) {', '.join(unknown)} in policy {spec.policy}; rules: {', '.join(sorted(rules))}"
            )
            continue
        sample = file.parent / case.input
        if not sample.is_file():
            result.failures.append(f"input {case.input} does not exist")
            continue
        try:
            subjects = subjects_from_path(sample)
        except CostwardenError as exc:
            result.failures.append(f"input {case.input}: {exc}")
            continue
        now = case.now or spec.now
        decisions = [policies.evaluate(s, case.surface or spec.surface, now=now, ledger=ledger) for s in subjects]
        found = [r for d in decisions for r in _of_policy(d, spec.policy)]
        for expected in case.results:
            problem = _check(expected, found)
            if problem:
                result.failures.append(problem)


def _of_policy(decision: Decision, policy: str) -> list[RuleResult]:
    return [r for r in decision.results if r.policy == policy]


def _check(expected: ExpectedResult, found: list[RuleResult]) -> str | None:
    of_rule = [r for r in found if r.rule == expected.rule]
    if expected.result == "none":
        return None if not of_rule else f"{expected.rule}: expected no result, got {_describe(of_rule)}"
    if any(_matches(expected, r) for r in of_rule):
        return None
    return f"{expected.rule}: expected {_want(expected)}, got {_describe(of_rule) or 'no result'}"


def _matches(e: ExpectedResult, r: RuleResult) -> bool:
    if r.result != e.result:
        return False
    if e.message is not None and not re.search(e.message, r.message):
        return False
    if e.fix is not None:
        if isinstance(e.fix, bool):
            if (r.fix is not None) != e.fix:
                return False
        elif r.fix is None or not re.search(e.fix, r.fix.description):
            return False
    if e.savings is not None:
        has = bool(r.savings_usd_month or r.savings_usd_per_call)
        if has != e.savings:
            return False
    return True


def _want(e: ExpectedResult) -> str:
    parts: list[str] = [e.result]
    if e.message:
        parts.append(f"message ~ /{e.message}/")
    if e.fix is not None:
        parts.append(f"fix {e.fix!r}")
    if e.savings is not None:
        parts.append(f"savings {e.savings}")
    return ", ".join(parts)


def _describe(results: list[RuleResult]) -> str:
    return "; ".join(f"{r.result} ({r.message}){' fix: ' + r.fix.description if r.fix else ''}" for r in results)


__all__ = [
    "TEST_FILE",
    "CaseReport",
    "ExpectedResult",
    "LedgerSeed",
    "PolicyTestCase",
    "PolicyTestFile",
    "PolicyTestReport",
    "find_test_files",
    "run_tests",
]
