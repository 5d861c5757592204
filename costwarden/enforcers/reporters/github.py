"""GitHub Actions workflow commands: one annotation line per violation and per input error.

::

    ::error file=k8s/job.yaml,line=3,title=gpu-spot/require-spot::Job ml/train: ... (fix: ...)

A blocking result is ``::error``, a warning ``::warning``; a baseline-accepted or audit-only result
is a ``::notice``. Values are escaped as the runner's ``toCommandValue``/``escapeData`` and
``escapeProperty`` do (``@actions/core``): ``%``, CR and LF in the message; also ``:`` and ``,`` in
properties — so no message can end its line early or inject a command of its own. Files are
named relative to the repository root (``$GITHUB_WORKSPACE``), as the runner resolves them, even
when the check runs in a subdirectory.
"""

from __future__ import annotations

from costwarden.adapters.helm import HelmSource
from costwarden.enforcers.ci import CheckReport, Finding, InputError
from costwarden.enforcers.reporters import host_path, savings_text, subject_label, violations


def render(report: CheckReport, *, color: bool = False) -> str:
    """Every annotation, one per line, ending in a newline (empty when there is nothing to say)."""
    lines = [annotation(f, report.helm_source(f.decision.subject)) for f in violations(report)]
    lines += [error_annotation(e) for e in report.errors]
    return "".join(line + "\n" for line in lines)


def annotation(f: Finding, helm: HelmSource | None = None) -> str:
    """The workflow command for one violation; on the Helm template it was rendered from when that
    is found in the working tree (Helm renders whole documents: the line is the template's
    ``kind:`` when unambiguous, else none, and the message keeps the rendered line)."""
    r, s = f.result, f.decision.subject
    if f.accepted or r.effect in ("audit", "off"):
        command = "notice"
    elif f.is_blocking:
        command = "error"
    else:
        command = "warning"
    message = f"{subject_label(s)}: {r.message}"
    if f.accepted:
        message = f"accepted by baseline: {message}"
    if r.fix is not None:
        message += f" (fix: {r.fix.description})"
    saving = savings_text(r)
    if saving:
        message += f" [saves {saving}]"
    file, line = s.file, s.line
    if helm is not None:
        message += f" (rendered from {helm.template}, {s.file} line {s.line})"
        if helm.file:
            file, line = helm.file, helm.line
    return command_line(command, message, file=file, line=line, title=f"{r.policy}/{r.rule}")


def error_annotation(e: InputError) -> str:
    """The workflow command for one input error."""
    return command_line("error", e.message, file=e.file, line=e.line, title="costwarden: input error")


def command_line(command: str, message: str, *, file: str | None, line: int | None, title: str) -> str:
    """``::command file=F,line=L,title=T::message`` with every value escaped."""
    props = []
    if file and file not in ("-", "<stdin>"):
        props.append(f"file={escape_property(host_path(file))}")
        if line:
            props.append(f"line={line}")
    props.append(f"title={escape_property(title)}")
    return f"::{command} {','.join(props)}::{escape_data(message)}"


def escape_data(value: str) -> str:
    """Escape a command's message: ``%`` first, then CR and LF."""
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    """Escape a command property: as data, plus ``:`` and ``,``."""
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


__all__ = ["annotation", "command_line", "error_annotation", "escape_data", "escape_property", "render"]
