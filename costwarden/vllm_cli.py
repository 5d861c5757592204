"""``costwarden vllm resolve`` — wired into the main command with ``app.add_typer(vllm_app, name="vllm")``.
Exit codes as the main command: 0 ok, 1 a configuration vLLM would refuse, 2 bad input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

vllm_app = typer.Typer(help="vLLM serving configurations.", no_args_is_help=True)
RAW_ARGS: list[str] = []
"""The command line as given (set by ``cli.main``): ``resolve`` reads a vLLM command after ``--``."""


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_BAD_INPUT)


@vllm_app.command(
    "resolve",
    context_settings={
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
    },
)
def vllm_resolve(
    items: Annotated[
        list[str] | None,
        typer.Argument(help="Files (manifests, --config files, Helm values); after --, a command"),
    ] = None,
    vllm_version: Annotated[
        str | None,
        typer.Option("--vllm-version", help="Argument table to use (default: from the image tag, else latest)"),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="A vLLM --config YAML file")] = None,
    model: Annotated[str | None, typer.Option(help="Model for --config (vllm serve MODEL --config FILE)")] = None,
) -> None:
    """How will vLLM read this? Every argument as vLLM resolves it, keyed by its destination name, plus diagnostics."""
    from costwarden.adapters.vllm.resolve_cmd import resolve
    from costwarden.errors import CostwardenError

    words = list(items or [])
    as_argv = "--" in RAW_ARGS
    if not words and config is None:
        raise _fail("give files, --config FILE, or -- followed by a vllm command line")
    try:
        if as_argv:
            result = resolve((), vllm_version, argv=words)
        else:
            result = resolve(words, vllm_version, config=config, model=model)
    except CostwardenError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot read: {exc}") from None
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    errors = [d for entry in _entries(result) for d in entry.get("diagnostics", []) if d.get("severity") == "error"]
    raise typer.Exit(EXIT_FAILED if errors else EXIT_OK)


def _entries(result: Any) -> list[dict[str, Any]]:
    if isinstance(result, dict) and isinstance(result.get("results"), list):
        return [e for e in result["results"] if isinstance(e, dict)]
    return [result] if isinstance(result, dict) else []


__all__ = ["RAW_ARGS", "vllm_app"]
