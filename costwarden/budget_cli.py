"""``costwarden budget status | settle-batches | settle-responses`` — wired into the main command with
``app.add_typer(budget_app, name="budget")``. Exit codes as the main command: 0 ok, 1 a batch or
response could not be settled, 2 bad input (a ledger that cannot be opened, a missing API key).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from costwarden.adapters.ledger.status import BudgetStatus
    from costwarden.enforcers.callguard import CallGuard
    from costwarden.enforcers.pending_batches import PendingBatches

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="text or json")]
LedgerOpt = Annotated[
    str, typer.Option(envvar="COSTWARDEN_LEDGER", help="memory://, sqlite:///f.db, redis://..., postgresql://...")
]
EventsOpt = Annotated[Path | None, typer.Option(help="Append the settlements' cost events to this JSONL file")]
PoliciesOpt = Annotated[
    list[Path] | None,
    typer.Option("--policies", "-p", help="The guard's policy files or folders (repeatable), for the prices of their "
                                          "ModelCatalog documents. Default: the built-in library."),
]

budget_app = typer.Typer(help="Budgets kept in a ledger.", no_args_is_help=True)


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _check_format(fmt: str) -> None:
    if fmt not in ("text", "json"):
        raise _fail(f"unknown format '{fmt}'; formats: text, json")


def _shown(ledger: str) -> str:
    """The ledger URL as these commands print it: without its password."""
    from costwarden.adapters.ledger import redact

    return redact(ledger)


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

    _check_format(fmt)
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
        sys.stdout.write(f"no budget windows under '{prefix}' in {_shown(ledger)}\n")
        return
    sys.stdout.write(status_table(rows))


STATUS_COLUMNS = ("BUDGET", "FOR", "WINDOW", "SPENT", "HELD", "LIMIT", "USED", "ENDS")


def status_table(rows: Sequence[BudgetStatus]) -> str:
    """One line per budget window, columns aligned as ``kubectl get`` does (no wrapping: grep it)."""
    table = [STATUS_COLUMNS]
    for r in rows:
        fraction = r.used_fraction
        used = _percent(fraction)
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


def _percent(fraction: float | None) -> str:
    """The USED column: whole percents, tenths under 1 %, and ``<0.1%`` for spend that rounds to none."""
    if fraction is None:
        return "-"
    if fraction >= 0.01 or not fraction:
        return f"{fraction:.0%}"
    return f"{fraction:.1%}" if fraction >= 0.0005 else "<0.1%"


def key_parts(key: str) -> tuple[str, str, str]:
    """(policy/rule, attribution, window) of a budget window's key; another key is shown whole."""
    from costwarden.engine.rules.budget import split_key

    return split_key(key) or (key, "", "")


@budget_app.command("settle-batches")
def settle_batches_cmd(
    ledger: LedgerOpt = DEFAULT_LEDGER,
    events: EventsOpt = None,
    fmt: FormatOpt = "text",
    provider: Annotated[str, typer.Option(
        help="anthropic (Message Batches), or openai — or the provider guard_openai named — for OpenAI Batch API "
             "jobs")] = "anthropic",
    policies: PoliciesOpt = None,
) -> None:
    """Read and settle the batches whose results nobody read (their worst case is still held).

    Message Batches use the Anthropic API as the ``anthropic`` SDK does by default
    (``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``); with ``--provider openai`` the OpenAI Batch
    API jobs use the OpenAI API as the ``openai`` SDK does (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``),
    and their output files are read. Batches still processing are left for the next run; run it
    from a scheduled job more often than the guard's batch TTL (26 h by default). Results are priced
    as the guard prices them only when the command has its ``ModelCatalog`` prices: pass the
    guard's policies with ``--policies`` (a model without a price is charged its reserved worst case)."""
    if provider != "anthropic":
        _sweep(ledger, events, fmt, _openai_client,
               lambda guard, client: _openai_batches(guard, client, provider), "batch", policies)
        return
    import anthropic

    def connect() -> Any:
        try:
            client = anthropic.Anthropic()
        except anthropic.AnthropicError as exc:
            raise _fail(f"no Anthropic client: {exc}") from None
        if client.api_key is None and client.auth_token is None:  # the SDK would only say so when it sends
            client.close()
            raise _fail("no Anthropic client: set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN)")
        return client

    _sweep(ledger, events, fmt, connect, lambda guard, client: guard.settle_pending_batches(client), "batch",
           policies)


@budget_app.command("settle-responses")
def settle_responses_cmd(
    ledger: LedgerOpt = DEFAULT_LEDGER,
    events: EventsOpt = None,
    fmt: FormatOpt = "text",
    provider: Annotated[str, typer.Option(help="The provider the guard named (guard_openai's provider=)")] = "openai",
    policies: PoliciesOpt = None,
) -> None:
    """Read and settle the OpenAI background Responses that ended unread (their worst case is still held).

    Uses the OpenAI API as the ``openai`` SDK does by default (``OPENAI_API_KEY``,
    ``OPENAI_BASE_URL``). Responses still running are left for the next run. OpenAI keeps an
    unstored background response for about 10 minutes, so run it more often than that, and more
    often than the guard's reservation TTL (10 minutes by default)."""
    _sweep(ledger, events, fmt, _openai_client,
           lambda guard, client: guard.settle_pending_responses(client, provider=provider), "response", policies)


def _openai_client() -> Any:
    import openai

    try:
        return openai.OpenAI()
    except openai.OpenAIError as exc:
        raise _fail(f"no OpenAI client: {exc}") from None


def _openai_batches(guard: CallGuard, client: Any, provider: str) -> PendingBatches:
    from costwarden.enforcers.pending_batches import settle_pending_openai_batches

    return settle_pending_openai_batches(guard, client, provider=provider)


def _sweep(
    ledger: str,
    events: Path | None,
    fmt: str,
    connect: Callable[[], Any],
    settle: Callable[[CallGuard, Any], PendingBatches],
    noun: str,
    policies: list[Path] | None = None,
) -> None:
    """Open the ledger, the API client and the events file, run ``settle`` with a guard on them
    (its prices from ``policies``' catalogs), report, exit."""
    from costwarden.adapters.events.jsonl import JsonlSink
    from costwarden.adapters.ledger import open_ledger
    from costwarden.enforcers.callguard import CallGuard
    from costwarden.errors import CostwardenError

    _check_format(fmt)
    ledger = _existing(ledger)
    policy_set = _policies(policies)
    client = connect()
    try:
        store = open_ledger(ledger)
    except CostwardenError as exc:
        client.close()
        raise _fail(str(exc)) from None
    try:
        sinks = [JsonlSink(events)] if events is not None else []
    except OSError as exc:
        store.close()
        client.close()
        raise _fail(f"cannot write cost events to {events}: {exc.strerror or exc}") from None
    guard = CallGuard(policy_set, ledger=store, sinks=sinks)
    try:
        swept = settle(guard, client)
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
            "failed": [{noun: b, "error": e} for b, e in swept.failed],
        }
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    else:
        for found_id in swept.settled:
            typer.echo(f"settled     {found_id}")
        for found_id in swept.processing:
            typer.echo(f"processing  {found_id}")
        for found_id, error in swept.failed:
            typer.echo(f"failed      {found_id}: {error}")
        if not (swept.settled or swept.processing or swept.failed):
            plural = "batches" if noun == "batch" else f"{noun}s"
            typer.echo(f"no pending {plural} in {_shown(ledger)}")
    raise typer.Exit(EXIT_FAILED if swept.failed else EXIT_OK)


def _policies(paths: list[Path] | None) -> Any:
    """The policy set whose pricer (genai-prices with its ``ModelCatalog`` prices) settles what a sweep reads."""
    from costwarden.api import load_policies
    from costwarden.errors import PolicyError
    from costwarden.validate_cli import print_policy_error

    try:
        return load_policies(*(paths or ()))
    except PolicyError as exc:
        print_policy_error(exc)
        raise typer.Exit(EXIT_BAD_INPUT) from None


__all__ = ["budget_app"]
