"""``costwarden budget status | settle-batches`` — wired into the main command with
``app.add_typer(budget_app, name="budget")``. Exit codes as the main command: 0 ok, 1 a batch could
not be settled, 2 bad input (a ledger that cannot be opened, a missing API key).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from costwarden.adapters.ledger.status import BudgetStatus

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="text or json")]
LedgerOpt = Annotated[
    str, typer.Option(envvar="COSTWARDEN_LEDGER", help="memory://, sqlite:///f.db, redis://..., postgresql://...")
]

budget_app = typer.Typer(help="Budgets kept in a ledger.", no_args_is_help=True)


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


DEFAULT_LEDGER = "sqlite:///costwarden-ledger.db"


def _existing(ledger: str) -> str:
    """``ledger``, unless it names a SQLite file that does not exist: these commands read a ledger
    the guard keeps, and opening a missing file would create an empty one."""
    from costwarden.adapters.ledger import sqlite_path
    from costwarden.errors import CostwardenError

    if not ledger.lower().startswith("sqlite:"):
        return ledger
    try:
        path = sqlite_path(ledger)
    except CostwardenError as exc:
        raise _fail(str(exc)) from None
    if path != ":memory:" and not Path(path).exists():
        raise _fail(f"no ledger file {Path(path).resolve()} ({ledger}); pass --ledger URL or set COSTWARDEN_LEDGER "
                    "to the ledger your guard writes")
    return ledger


@budget_app.command("status")
def budget_status_cmd(
    ledger: LedgerOpt = DEFAULT_LEDGER,
    prefix: Annotated[str, typer.Option(help="Only budget keys starting with this")] = "budget:",
    fmt: FormatOpt = "text",
) -> None:
    """Spend against limit for every current budget window in the ledger."""
    from costwarden.adapters.ledger.status import budget_status
    from costwarden.errors import CostwardenError

    try:
        rows = budget_status(_existing(ledger), prefix)
    except CostwardenError as exc:
        raise _fail(str(exc)) from None
    if fmt == "json":
        payload = [
            {
                "key": r.key,
                "spent_usd": r.spent_usd,
                "held_usd": r.held_usd,
                "limit_usd": r.limit_usd,
                "used_fraction": r.used_fraction,
                "ends_at": r.ends_at.isoformat() if r.ends_at else None,
            }
            for r in rows
        ]
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    if not rows:
        sys.stdout.write(f"no budget windows under '{prefix}' in {ledger}\n")
        return
    sys.stdout.write(status_table(rows))


STATUS_COLUMNS = ("BUDGET", "FOR", "WINDOW", "SPENT", "HELD", "LIMIT", "USED", "ENDS")


def status_table(rows: Sequence[BudgetStatus]) -> str:
    """One line per budget window, columns aligned as ``kubectl get`` does (no wrapping: grep it)."""
    table = [STATUS_COLUMNS]
    for r in rows:
        fraction = r.used_fraction
        used = "-" if fraction is None else f"{fraction:.0%}" if fraction >= 0.01 or not fraction else f"{fraction:.1%}"
        limit = f"${r.limit_usd:,.2f}" if r.limit_usd is not None else "-"
        ends = f"{r.ends_at:%Y-%m-%d %H:%M %Z}" if r.ends_at else "-"
        table.append((*key_parts(r.key), f"${r.spent_usd:,.4f}", f"${r.held_usd:,.4f}", limit, used, ends))
    widths = [max(len(row[i]) for row in table) for i in range(len(STATUS_COLUMNS))]
    numeric = {3, 4, 5, 6}
    lines = []
    for row in table:
        cells = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def key_parts(key: str) -> tuple[str, str, str]:
    """(policy/rule, attribution, window) of a budget window's key; another key is shown whole."""
    from costwarden.engine.rules.budget import split_key

    return split_key(key) or (key, "", "")


@budget_app.command("settle-batches")
def settle_batches_cmd(
    ledger: LedgerOpt = DEFAULT_LEDGER,
    events: Annotated[Path | None, typer.Option(help="Append the settlements' cost events to this JSONL file")] = None,
    fmt: FormatOpt = "text",
) -> None:
    """Read and settle the Message Batches whose results nobody read (their worst case is still held).

    Uses the Anthropic API as the ``anthropic`` SDK does by default (``ANTHROPIC_API_KEY``,
    ``ANTHROPIC_BASE_URL``). Batches still processing are left for the next run; run it from a
    scheduled job more often than the guard's batch TTL (26 h by default)."""
    import anthropic

    from costwarden.adapters.events.jsonl import JsonlSink
    from costwarden.adapters.ledger import open_ledger
    from costwarden.api import load_policies
    from costwarden.enforcers.callguard import CallGuard
    from costwarden.errors import CostwardenError

    ledger = _existing(ledger)
    try:
        client = anthropic.Anthropic()
    except anthropic.AnthropicError as exc:
        raise _fail(f"no Anthropic client: {exc}") from None
    try:
        store = open_ledger(ledger)
    except CostwardenError as exc:
        raise _fail(str(exc)) from None
    try:
        sinks = [JsonlSink(events)] if events is not None else []
    except OSError as exc:
        store.close()
        raise _fail(f"cannot write cost events to {events}: {exc.strerror or exc}") from None
    guard = CallGuard(load_policies(), ledger=store, sinks=sinks)
    try:
        swept = guard.settle_pending_batches(client)
    except CostwardenError as exc:
        raise _fail(str(exc)) from None
    finally:
        guard.close()
        store.close()
        client.close()
    if fmt == "json":
        payload = {
            "settled": swept.settled,
            "processing": swept.processing,
            "failed": [{"batch": b, "error": e} for b, e in swept.failed],
        }
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    else:
        for batch_id in swept.settled:
            typer.echo(f"settled     {batch_id}")
        for batch_id in swept.processing:
            typer.echo(f"processing  {batch_id}")
        for batch_id, error in swept.failed:
            typer.echo(f"failed      {batch_id}: {error}")
        if not (swept.settled or swept.processing or swept.failed):
            typer.echo(f"no pending batches in {ledger}")
    raise typer.Exit(EXIT_FAILED if swept.failed else EXIT_OK)


__all__ = ["budget_app"]
