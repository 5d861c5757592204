"""Resolve vLLM arguments as vLLM would, from its argument table, with positioned diagnostics.

::

    >>> r = parse_argv(["Qwen/Qwen3-8B", "--max_num_seqs=32k", "--max-model-len", "32K"])
    >>> r.ok, r.args["max_model_len"], [d.code for d in r.diagnostics]
    (False, 32768, ['invalid-value'])

Entry points: :func:`parse_argv` (the words after ``vllm serve`` or after the api_server
module), :func:`parse_command` (a whole command line, ``sh -c`` strings included),
:func:`parse_config_file` (``vllm serve [MODEL] --config FILE``) and :func:`parse_exact`
(vLLM's own parser, when ``vllm`` is importable). ``args`` holds every argument keyed by vLLM's
dest names, defaults included; ``explicit`` the dests that were set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from costwarden.adapters.vllm.command import VllmInvocation, find_invocation
from costwarden.adapters.vllm.diagnostics import Diagnostic
from costwarden.adapters.vllm.flexible import FileReader, Token
from costwarden.adapters.vllm.resolution import Mode, Resolution, known_in_other_versions, resolve_tokens


def _read_local(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


# --- public entry points ------------------------------------------------------------------------


def parse_argv(
    argv: Sequence[str],
    version: str | None = None,
    *,
    mode: Mode = "serve",
    file: str | None = None,
    line: int | None = None,
    read_file: FileReader | None = None,
) -> Resolution:
    """Resolve the words after ``vllm serve`` (``mode="serve"``) or after
    ``python -m vllm.entrypoints.openai.api_server`` (``"api_server"``). ``version`` is a version
    or a hint (an image); ``--config`` files are read with ``read_file`` (default: local files)."""
    tokens = [Token(str(a), file, line) for a in argv]
    return resolve_tokens(tokens, version, mode=mode, read_file=read_file or _read_local)


def parse_command(
    command: str | Sequence[str],
    version: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    file: str | None = None,
    line: int | None = None,
    read_file: FileReader | None = None,
) -> Resolution | None:
    """Resolve a command line that runs vLLM (``vllm serve ...``, ``python -m
    vllm.entrypoints.openai.api_server ...``, ``sh -c "... && exec vllm serve ..."``, env
    prefixes); None when it does not run vLLM."""
    found = find_invocation(command, env or {})
    if found is None:
        return None
    return resolve_invocation(found, version, file=file, line=line, read_file=read_file)


def resolve_invocation(
    found: VllmInvocation,
    version: str | None = None,
    *,
    file: str | None = None,
    line: int | None = None,
    read_file: FileReader | None = None,
) -> Resolution:
    notes = [Diagnostic("unresolved-variable", f"{v} is not set here; kept as written", "info", file, line)
             for v in found.unresolved]
    tokens = [Token(a, file, line) for a in found.argv]
    return resolve_tokens(tokens, version, mode=found.mode, read_file=read_file or _read_local, notes=notes)


def parse_config_file(
    path: str | Path,
    version: str | None = None,
    *,
    model: str | None = None,
    mode: Mode = "serve",
    text: str | None = None,
) -> Resolution:
    """``vllm serve [MODEL] --config PATH``: the file's arguments as vLLM reads them."""
    name = str(path)
    content = text if text is not None else _read_local(name)

    def reader(p: str) -> str | None:
        return content if p == name else _read_local(p)

    argv = ([model] if model else []) + ["--config", name]
    if mode == "api_server" and model:
        argv = ["--model", model, "--config", name]
    tokens = [Token(a, name, None) for a in argv]
    return resolve_tokens(tokens, version, mode=mode, read_file=reader)


def parse_exact(argv: Sequence[str], version: str | None = None, *, mode: Mode = "serve") -> Resolution:
    """Resolve with vLLM's own parser in this process (``vllm`` must be importable). ``explicit``
    and diagnostics come from the table parser; ``args`` are vLLM's."""
    from costwarden.adapters.vllm.exact import resolve as exact_resolve

    outcome = exact_resolve(list(argv), mode)
    mine = parse_argv(argv, version or outcome["version"], mode=mode)
    if outcome.get("error"):
        mine.diagnostics.append(Diagnostic("invalid-command", f"vLLM: {outcome['error']}"))
    return Resolution(outcome["version"], mode, outcome.get("args") or {}, mine.explicit, mine.diagnostics,
                      mine.locations)


def resolver(version: str | None, mode: Mode = "serve") -> Callable[[Sequence[str]], Resolution]:
    """A ``parse_argv`` bound to one version and entry point (for loops)."""
    return lambda argv: parse_argv(argv, version, mode=mode)


__all__ = [
    "Resolution",
    "known_in_other_versions",
    "parse_argv",
    "parse_command",
    "parse_config_file",
    "parse_exact",
    "resolve_invocation",
    "resolve_tokens",
    "resolver",
]
