"""The readable report: violations grouped by file and subject, input errors, one summary line.

::

    examples/k8s/gpu-job.yaml
      Job ml/train  kubernetes, line 3 (4 passed, 1 skipped)
        FAIL   gpu/require-spot  deny, high
               GPU job tolerates spot but does not require it
               fix: add nodeSelector karpenter.sh/capacity-type: spot
               saves ~$1,250.00/month
    examples/bad.yaml:7: error: mapping values are not allowed here
    3 subjects in 2 files, 14 policies: 9 pass, 1 fail, 0 warn, 0 error, 1 skip; 1 input error
    1 blocking failure; estimated savings ~$1,250.00/month

Messages are printed as plain text (never as rich markup), so brackets in them survive.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

from rich.console import Console
from rich.padding import Padding
from rich.text import Text

from costwarden.enforcers.ci import CheckReport, Finding, InputError
from costwarden.enforcers.reporters import monthly_savings, savings_text, subject_label, usd
from costwarden.engine.decision import Decision

_MARK = {"fail": ("FAIL", "bold red"), "warn": ("WARN", "yellow"), "error": ("ERROR", "bold magenta")}
_INDENT = 11


def render(report: CheckReport, *, color: bool = False) -> str:
    """The report as text; ``color`` adds ANSI styles."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=color, no_color=not color, width=120, highlight=False,
                      emoji=False)
    findings: dict[int, list[Finding]] = {}
    for f in report.findings:
        findings.setdefault(id(f.decision), []).append(f)
    for file, decisions in _by_file(d for d in report.decisions if id(d) in findings):
        console.print(Text(file, style="bold underline"))
        for decision in decisions:
            _print_subject(console, decision, findings[id(decision)])
    for error in report.errors:
        console.print(_input_error(error), soft_wrap=True)
    for line in summary_lines(report):
        console.print(line, soft_wrap=True)
    return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())


def summary_lines(report: CheckReport) -> list[Text]:
    """The two closing lines: counts, then the verdict with the estimated monthly savings."""
    c = report.summary()
    counts = (f"{c['subjects']} subject{_s(c['subjects'])} in {c['files']} file{_s(c['files'])}, "
              f"{report.policies} polic{'y' if report.policies == 1 else 'ies'}: "
              f"{c['pass']} pass, {c['fail']} fail, {c['warn']} warn, {c['error']} error, {c['skip']} skip")
    extra = []
    if c["accepted"]:
        extra.append(f"{c['accepted']} accepted by baseline")
    if c["skipped_files"]:
        extra.append(f"{c['skipped_files']} unrecognised file{_s(c['skipped_files'])} skipped")
    if c["input_errors"]:
        extra.append(f"{c['input_errors']} input error{_s(c['input_errors'])}")
    first = Text(counts + ("; " + ", ".join(extra) if extra else ""))
    blocking = c["blocking"]
    verdict = (Text(f"{blocking} blocking failure{_s(blocking)}", style="bold red") if blocking
               else Text("no enforced failures", style="bold green"))
    savings = monthly_savings(report)
    if savings:
        verdict.append(f"; estimated savings ~{usd(savings)}/month")
    return [first, verdict]


def _print_subject(console: Console, decision: Decision, findings: list[Finding]) -> None:
    counts = decision.counts()
    s = decision.subject
    where = ", ".join(x for x in (s.provider, f"line {s.line}" if s.line else "") if x)
    quiet = ", ".join(f"{counts[k]} {word}" for k, word in (("pass", "passed"), ("skip", "skipped")) if counts[k])
    header = Text("  ")
    header.append(subject_label(s), style="bold")
    header.append(f"  {where}" + (f" ({quiet})" if quiet else ""), style="dim")
    console.print(header)
    for finding in findings:
        _print_finding(console, finding)


def _print_finding(console: Console, finding: Finding) -> None:
    r = finding.result
    word, style = _MARK[r.result]
    line = Text("    ")
    line.append(f"{word:<6} ", style=style if not finding.accepted else "dim")
    line.append(f"{r.policy}/{r.rule}", style="bold")
    line.append(f"  {r.effect}, {r.severity}", style="dim")
    if finding.accepted:
        line.append("  accepted by baseline", style="cyan")
    console.print(line)
    details = [r.message]
    if r.fix is not None:
        details.append(f"fix: {r.fix.description}")
    saving = savings_text(r)
    if saving:
        details.append(f"saves {saving}")
    for detail in details:
        for part in detail.splitlines() or [""]:
            # Padding keeps the indent on the lines rich wraps, too.
            console.print(Padding(Text(part), (0, 0, 0, _INDENT), expand=False))


def _input_error(error: InputError) -> Text:
    where = f"{error.file}:{error.line}" if error.line else error.file
    text = Text(f"{where}: ")
    text.append("error", style="bold red")
    text.append(f": {error.message}")
    return text


def _by_file(decisions: Iterable[Decision]) -> list[tuple[str, list[Decision]]]:
    groups: dict[str, list[Decision]] = {}
    for d in decisions:
        groups.setdefault(d.subject.file or "<unknown>", []).append(d)
    return list(groups.items())


def _s(n: int) -> str:
    return "" if n == 1 else "s"


__all__ = ["render", "summary_lines"]
