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

Messages are printed as plain text (never as rich markup), so brackets in them survive. Control
characters in what the inputs said (a tag value, a file name) are shown escaped (``\\x1b``), never
sent to the terminal: an ESC in a plan could otherwise recolour, hide or erase report lines in a
CI log. A word longer than a line (a URL, a path) is kept whole rather than cut across lines.
"""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Iterable

from rich.text import Text

from costwarden.adapters.helm import HelmSource
from costwarden.enforcers.ci import CheckReport, Finding, InputError
from costwarden.enforcers.reporters import monthly_savings, savings_text, subject_label, usd
from costwarden.engine.decision import Decision

_MARK = {"fail": ("FAIL", "bold red"), "warn": ("WARN", "yellow"), "error": ("ERROR", "bold magenta")}
_INDENT = 11
_WIDTH = 120

Segment = tuple[str, str]  # (text, rich style)

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def render(report: CheckReport, *, color: bool = False) -> str:
    """The report as text; ``color`` adds ANSI styles (through rich; plain text is built directly,
    which matters on large repositories: thousands of findings render in milliseconds)."""
    lines: list[tuple[list[Segment], bool]] = []  # (segments, wrap with the detail indent)
    findings: dict[int, list[Finding]] = {}
    for f in report.findings:
        findings.setdefault(id(f.decision), []).append(f)
    for file, decisions in _by_file(d for d in report.decisions if id(d) in findings):
        lines.append(([(file, "bold underline")], False))
        for decision in decisions:
            lines += _subject_lines(decision, findings[id(decision)], report.helm_source(decision.subject))
    lines += [([(t.plain, "")] if not color else _segments(t), False) for t in map(_input_error, report.errors)]
    lines += [(_segments(t), False) for t in summary_lines(report)]
    return _emit_rich(lines) if color else _emit_plain(lines)


def _segments(text: Text) -> list[Segment]:
    return [(text.plain[span.start : span.end], str(span.style)) for span in _spans(text)]


def _spans(text: Text) -> list[_Span]:
    """Split a styled Text into consecutive runs with one style each."""
    runs: list[_Span] = []
    cut = sorted({0, len(text.plain), *(p for sp in text.spans for p in (sp.start, sp.end))})
    for a, b in zip(cut, cut[1:], strict=False):
        style = next((str(sp.style) for sp in text.spans if sp.start <= a and sp.end >= b), str(text.style or ""))
        runs.append(_Span(a, b, style))
    return runs


class _Span:
    __slots__ = ("end", "start", "style")

    def __init__(self, start: int, end: int, style: str) -> None:
        self.start, self.end, self.style = start, end, style


def _emit_plain(lines: list[tuple[list[Segment], bool]]) -> str:
    out: list[str] = []
    for segments, detail in lines:
        text = "".join(printable(t) for t, _ in segments)
        if detail:
            width = _WIDTH - _INDENT
            wrapped = (textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)
                       if len(text) > width else [text])
            out += [" " * _INDENT + part for part in wrapped or [""]]
        else:
            out.append(text)
    return "".join(line.rstrip() + "\n" for line in out)


def _emit_rich(lines: list[tuple[list[Segment], bool]]) -> str:
    from rich.console import Console
    from rich.padding import Padding

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=_WIDTH, highlight=False, emoji=False)
    for segments, detail in lines:
        text = Text()
        for part, style in segments:
            text.append(printable(part), style=style or None)
        # Padding keeps the indent on the lines rich wraps, too.
        console.print(Padding(text, (0, 0, 0, _INDENT), expand=False) if detail else text, soft_wrap=not detail)
    return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())


def printable(text: str) -> str:
    """``text`` with its control characters (but tab and newline) written as ``\\xNN`` escapes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def summary_lines(report: CheckReport) -> list[Text]:
    """The two closing lines: counts, then the verdict with the estimated monthly savings."""
    c = report.summary()
    counts = (
        f"{c['subjects']} subject{_s(c['subjects'])} in {c['files']} file{_s(c['files'])}, "
        f"{report.policies} polic{'y' if report.policies == 1 else 'ies'}: "
        f"{c['pass']} pass, {c['fail']} fail, {c['warn']} warn, {c['error']} error, {c['skip']} skip"
    )
    extra = []
    if c["accepted"]:
        extra.append(f"{c['accepted']} accepted by baseline")
    if c["skipped_files"]:
        extra.append(f"{c['skipped_files']} unrecognised file{_s(c['skipped_files'])} skipped")
    if c["input_errors"]:
        extra.append(f"{c['input_errors']} input error{_s(c['input_errors'])}")
    first = Text(counts + ("; " + ", ".join(extra) if extra else ""))
    blocking = c["blocking"]
    if c["input_errors"]:
        verdict = Text(
            f"input could not be read: {c['input_errors']} error{_s(c['input_errors'])} above", style="bold red"
        )
        if blocking:
            verdict.append(f"; {blocking} blocking failure{_s(blocking)}")
    elif blocking:
        verdict = Text(f"{blocking} blocking failure{_s(blocking)}", style="bold red")
    else:
        verdict = Text("no enforced failures", style="bold green")
    savings = monthly_savings(report)
    if savings:
        verdict.append(f"; estimated savings ~{usd(savings)}/month")
    return [first, verdict]


def _subject_lines(
    decision: Decision, findings: list[Finding], helm: HelmSource | None
) -> list[tuple[list[Segment], bool]]:
    counts = decision.counts()
    s = decision.subject
    line = f"line {s.line}" if s.line else ""
    if helm is not None:  # Helm renders whole documents: the template's line is not known, the stream's is
        line = f"{helm.file or helm.template} ({s.file} {line})"
    where = ", ".join(x for x in (s.provider, line) if x)
    quiet = ", ".join(f"{counts[k]} {word}" for k, word in (("pass", "passed"), ("skip", "skipped")) if counts[k])
    out = [([("  ", ""), (subject_label(s), "bold"), (f"  {where}" + (f" ({quiet})" if quiet else ""), "dim")], False)]
    for finding in findings:
        r = finding.result
        word, style = _MARK[r.result]
        head: list[Segment] = [
            ("    ", ""),
            (f"{word:<6} ", style if not finding.accepted else "dim"),
            (f"{r.policy}/{r.rule}", "bold"),
            (f"  {r.effect}, {r.severity}", "dim"),
        ]
        if finding.accepted:
            head.append(("  accepted by baseline", "cyan"))
        out.append((head, False))
        details = [r.message]
        if r.fix is not None:
            details.append(f"fix: {r.fix.description}")
        saving = savings_text(r)
        if saving:
            details.append(f"saves {saving}")
        out += [([(part, "")], True) for detail in details for part in detail.splitlines() or [""]]
    return out


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


__all__ = ["printable", "render", "summary_lines"]
