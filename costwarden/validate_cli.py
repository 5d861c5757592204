"""``costwarden validate`` — registered on the main command with ``app.command()(validate)`` — and
how every command prints a policy set that failed to load and reads a ``--now`` time. Exit codes
as the main command: 0 valid (warnings and notes included), 2 a bad policy or bad input.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from costwarden.engine.evaluate import PolicySet
    from costwarden.engine.loader import LoadResult, Skipped
    from costwarden.errors import PolicyError

EXIT_BAD_INPUT = 2


def validate(
    paths: Annotated[list[Path] | None, typer.Argument(help="Policy files or folders (default: built-in)")] = None,
    now: Annotated[str | None, typer.Option(help="Judge exemption expiry at this time, ISO 8601 (default: now)")] = (
        None
    ),
    expiring_within: Annotated[
        int, typer.Option("--expiring-within", min=0, help="Note exemptions that end within DAYS (0: off)")
    ] = 14,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List the test data that was not loaded")] = False,
) -> None:
    """Check policy files: every problem with file:line:col, the source line and a hint.

    Expired exemptions are warnings, soon-expiring ones notes (exit 0); a tests.yaml that holds policies is a warning.
    """
    from costwarden.engine.exemptions import expiry_warnings

    when = parse_now(now) or datetime.now(UTC)
    policies, loaded = _load_with_sources(paths)
    found = [*loaded.diagnostics, *expiry_warnings(loaded.documents, when, soon=timedelta(days=expiring_within))]
    found.sort(key=lambda d: (d.file, d.line, d.column))
    err = _console(stderr=True)
    for diagnostic in found:
        err.print(diagnostic.render(), markup=False, highlight=False)
    warnings = sum(d.level == "warning" for d in found) + _report_skipped(err, loaded.skipped, verbose=verbose)
    if not loaded.documents:
        warnings += 1
        where = ", ".join(map(str, paths or ())) or "the built-in library"
        err.print(f"warning: no policy documents found in {where}", markup=False, highlight=False)
    notes = sum(d.level == "note" for d in found)
    counts = [f"{n} {level}{'s' if n != 1 else ''}" for n, level in ((warnings, "warning"), (notes, "note")) if n]
    rules = sum(len(p.rules) for p in policies)
    files = len(set(policies.files))
    summary = f"ok: {len(policies)} policies, {rules} rules, {len(policies.exemptions)} exemptions in {files} files"
    _console().print(summary + (f"; {', '.join(counts)}" if counts else ""))


def _load_with_sources(paths: list[Path] | None) -> tuple[PolicySet, LoadResult]:
    """The policy set and what was read to build it, or exit 2 printing every diagnostic."""
    from costwarden.api import load_with_sources
    from costwarden.errors import PolicyError

    try:
        return load_with_sources(*(paths or ()))
    except PolicyError as exc:
        print_policy_error(exc)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _report_skipped(err: Console, skipped: list[Skipped], *, verbose: bool) -> int:
    """Warn of each skipped tests.yaml that holds policies; note (or with ``verbose`` list) the
    library test data skipped. Returns the number of warnings printed."""
    flagged = [s for s in skipped if s.holds_policies]
    for item in flagged:
        err.print(f"warning: {item.path} was not loaded: {item.reason}", markup=False, highlight=False)
    data = [s for s in skipped if not s.holds_policies]
    if data:
        folders = sum(s.path.endswith(os.sep) for s in data)
        what = f"{len(data) - folders} tests.yaml" + (f" and {folders} samples/ folder" if folders else "")
        err.print(
            f"note: skipped {what}{'s' if folders > 1 else ''} beside them: policy test data, checked by"
            " 'costwarden test'; name a file or folder to load it as policies"
            + ("" if verbose else " (--verbose lists them)"),
            markup=False,
            highlight=False,
        )
    if verbose:
        for item in data:
            err.print(f"  {item.path}: {item.reason}", markup=False, highlight=False)
    return len(flagged)


def print_policy_error(exc: PolicyError) -> None:
    """Every diagnostic of a policy set that failed to load, and how many of each level, on stderr."""
    from costwarden.engine.diagnostics import tally

    err = _console(stderr=True)
    err.print(exc.render(), markup=False, highlight=False)
    err.print(f"[bold red]{tally(exc.diagnostics)}[/]; no policy was loaded", markup=True)


def parse_now(now: str | None) -> datetime | None:
    """A ``--now`` option's ISO 8601 time (UTC when it names no zone), or exit 2 saying why not."""
    if now is None:
        return None
    try:
        when = datetime.fromisoformat(now.replace("Z", "+00:00"))
    except ValueError:
        err = _console(stderr=True)
        err.print("[bold red]error[/]: ", end="", markup=True)
        err.print(f"--now: '{now}' is not an ISO 8601 time", markup=False)  # as written: '[/x]' is not markup
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


__all__ = ["parse_now", "print_policy_error", "validate"]
