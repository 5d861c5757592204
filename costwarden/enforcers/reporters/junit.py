"""JUnit XML for CI test tabs (GitLab, Jenkins, Azure Pipelines, CircleCI).

One ``<testsuite>`` per input file and one ``<testcase>`` per (subject, policy/rule) result, passes
included: ``classname`` is the policy, ``name`` is ``"rule: Kind/name"`` (``Kind/namespace/name``
for namespaced subjects). A blocking ``fail`` or ``error`` is a ``<failure>`` (its ``type`` says
which); a ``skip`` or a baseline-accepted violation is ``<skipped>``; a warning, or a violation whose
policy only audits, passes with its message in ``<system-out>``. An input error is a testcase with
an ``<error>``. Totals are on ``<testsuites>`` and on every ``<testsuite>``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable

from costwarden.enforcers.ci import CheckReport, Finding, InputError
from costwarden.enforcers.reporters import every_result, savings_text

# Characters XML 1.0 cannot carry at all, not even escaped; ElementTree would write them as-is.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_TOTALS = ("tests", "failures", "errors", "skipped")


def render(report: CheckReport, *, color: bool = False) -> str:
    """The JUnit XML document, with an XML declaration and a trailing newline."""
    root = ET.Element("testsuites", name="costwarden")
    for file, cases in _cases_by_file(report).items():
        suite = ET.SubElement(root, "testsuite", name=_clean(file))
        suite.extend(cases)
        _total(suite, cases)
        if report.started is not None:
            suite.set("timestamp", report.started.replace(tzinfo=None, microsecond=0).isoformat())
    _total(root, [case for suite in root for case in suite])
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def testcase(finding: Finding) -> ET.Element:
    """The testcase for one result."""
    r, s = finding.result, finding.decision.subject
    who = "/".join(x for x in (s.kind, s.namespace, s.name or "-") if x)
    case = ET.Element("testcase", classname=_clean(r.policy), name=_clean(f"{r.rule}: {who}"), time="0")
    if s.file:
        case.set("file", _clean(s.file))
    if s.line:
        case.set("line", str(s.line))
    detail = _detail(finding)
    if r.result == "skip":
        _child(case, "skipped", f"exempted by {r.exemption}" if r.exemption else "not applicable")
    elif finding.accepted:
        _child(case, "skipped", f"accepted by baseline: {r.message}", detail)
    elif finding.is_blocking:
        _child(case, "failure", r.message, detail, type=r.result)
    elif r.result != "pass":
        _child(case, "system-out", None, f"{r.result.upper()}: {detail}")
    return case


def _cases_by_file(report: CheckReport) -> dict[str, list[ET.Element]]:
    skipped = set(report.skipped)
    # standard input ("-" on the command line) is "<stdin>" in its subjects and errors
    cases: dict[str, list[ET.Element]] = {
        "<stdin>" if file == "-" else file: [] for file in report.files if file not in skipped
    }
    for finding in every_result(report):
        cases.setdefault(finding.decision.subject.file or "<unknown>", []).append(testcase(finding))
    for error in report.errors:
        cases.setdefault(error.file, []).append(_error_case(error))
    return cases


def _error_case(error: InputError) -> ET.Element:
    where = f"{error.file}:{error.line}" if error.line else error.file
    case = ET.Element("testcase", classname="costwarden.input", name=_clean(f"read {where}"), time="0",
                      file=_clean(error.file))
    if error.line:
        case.set("line", str(error.line))
    _child(case, "error", error.message, f"{where}: error: {error.message}", type="input-error")
    return case


def _detail(finding: Finding) -> str:
    r, s = finding.result, finding.decision.subject
    lines = [f"{r.policy}/{r.rule} ({r.effect}, {r.severity}): {r.message}"]
    if s.file:
        lines.append(f"at {s.file}:{s.line}" if s.line else f"at {s.file}")
    if r.path:
        lines.append(f"path: {r.path}")
    if r.fix is not None:
        lines.append(f"fix: {r.fix.description}")
    saving = savings_text(r)
    if saving:
        lines.append(f"saves {saving}")
    lines.append(f"fingerprint: {finding.fingerprint}")
    return "\n".join(lines)


def _child(case: ET.Element, tag: str, message: str | None, text: str | None = None, **attrs: str) -> None:
    element = ET.SubElement(case, tag, {k: _clean(v) for k, v in attrs.items()})
    if message is not None:
        element.set("message", _clean(message))
    if text is not None:
        element.text = _clean(text)


def _total(element: ET.Element, cases: Iterable[ET.Element]) -> None:
    counts = dict.fromkeys(_TOTALS, 0)
    for case in cases:
        counts["tests"] += 1
        counts["failures"] += case.find("failure") is not None
        counts["errors"] += case.find("error") is not None
        counts["skipped"] += case.find("skipped") is not None
    for key in _TOTALS:
        element.set(key, str(counts[key]))
    element.set("time", "0")


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


__all__ = ["render", "testcase"]
