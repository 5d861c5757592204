"""Find the vLLM server invocation in a command line, as a shell or a container runtime runs it::

    >>> found = find_invocation('sh -c "pip install x && exec vllm serve $M --port 8000"', {"M": "qwen"})
    >>> found.mode, found.argv
    ('serve', ['qwen', '--port', '8000'])

Recognised: ``vllm serve ...`` (any path to ``vllm``; ``python -m vllm.entrypoints.cli.main
serve``), ``python[3] [-u -X opt ...] -m vllm.entrypoints.openai.api_server ...``, behind
``NAME=value`` prefixes and the launch wrappers of :mod:`.wrappers` (``exec``, ``env``,
``timeout``, ``nice``, ``numactl``, ``uv run``...), inside ``sh|bash -c "..."`` and ``eval``
scripts with ``&&``, ``||``, ``;`` and ``|`` chains and backslash-newline continuations. ``$VAR``,
``${VAR}``, ``${VAR:-default}`` (shell) and ``$(VAR)`` (Kubernetes) are expanded from ``env``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from costwarden.adapters.vllm.wrappers import program, unwrap

API_SERVER_MODULES = frozenset({"vllm.entrypoints.openai.api_server"})
CLI_MODULES = frozenset({"vllm.entrypoints.cli.main"})
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ash"})
KEYWORDS = frozenset({"then", "do", "else", "while", "until", "if", "elif", "!", "{"})  # before a command
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SHELL_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_K8S_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@dataclass(frozen=True, slots=True)
class VllmInvocation:
    """``mode`` is ``serve`` or ``api_server``; ``argv`` the words after the subcommand/module."""

    mode: str
    argv: list[str]
    unresolved: tuple[str, ...] = field(default=())


def expand_kubernetes(text: str, env: Mapping[str, str], unresolved: list[str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command/args (``$$`` escapes; unknown stays as is)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        if name in env:
            return env[name]
        unresolved.append(f"$({name})")
        return m.group(0)

    return _K8S_VAR.sub(sub, text)


def _expand_shell(text: str, env: Mapping[str, str], unresolved: list[str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        if name in env:
            return env[name]
        if m.group(2) is not None:
            return m.group(2)
        unresolved.append(f"${name}")
        return m.group(0)

    return _SHELL_VAR.sub(sub, text)


def _drop_fd_numbers(line: str) -> str:
    """``2>&1`` → ``>&1``: the file descriptor of a redirection (digits that start an unquoted
    word and touch ``<`` or ``>``) is not a word of the command."""
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == "\\" and quote == '"':
                out.append(ch)
                i += 1
                ch = line[i] if i < len(line) else ""
        elif ch in "'\"":
            quote = ch
        elif ch == "\\":
            out.append(ch)
            i += 1
            ch = line[i] if i < len(line) else ""
        elif ch.isdigit() and (i == 0 or line[i - 1].isspace() or line[i - 1] in ";&|"):
            j = i
            while j < len(line) and line[j].isdigit():
                j += 1
            if j < len(line) and line[j] in "<>":
                i = j
                continue
        out.append(ch)
        i += 1
    return "".join(out)


def _split_script(script: str) -> list[list[str]]:
    """A shell script → simple commands (words), split at ``&&``, ``||``, ``;``, ``|``, newlines;
    redirections (``> log``, ``2>&1``, ``< /dev/null``) are not words of the command."""
    script = script.replace("\\\n", " ")
    out: list[list[str]] = []
    for raw_line in script.splitlines():
        lexer = shlex.shlex(_drop_fd_numbers(raw_line), posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        try:
            words = list(lexer)
        except ValueError:  # unbalanced quotes: fall back to whitespace
            words = raw_line.split()
        redirect_target = False
        for word in words:
            if redirect_target:
                redirect_target = False
            elif word and set(word) <= set(";&|<>") and ("<" in word or ">" in word):
                redirect_target = True  # the operator and its file (or fd) go
            elif word and set(word) <= set(";&|"):
                out.append(current)
                current = []
            else:
                current.append(word)
        out.append(current)
    return [c for c in out if c]


def _strip_prefixes(words: list[str]) -> list[str]:
    """The command that actually runs: past assignments, shell keywords and launch wrappers."""
    while words:
        if _ASSIGNMENT.match(words[0]) or words[0] in KEYWORDS:
            words = words[1:]
            continue
        inner = unwrap(words)
        if inner is None:
            return words
        words = inner
    return words


def _python_module(words: list[str]) -> tuple[str, list[str]] | None:
    """``python [-u -X opt -W arg ...] -m MODULE ARGS`` → (MODULE, ARGS); None for a script or
    ``-c``. Python's short options cluster (``-um MODULE``); ``-W`` and ``-X`` take a value."""
    i = 1
    while i < len(words) and words[i].startswith("-") and words[i] not in ("-", "--"):
        word = words[i]
        for j, ch in enumerate(word[1:], start=1):
            if ch == "c" or word.startswith("--"):
                return None  # -c runs a string; --help, --version...
            if ch in "mWX":
                value = word[j + 1:]
                if not value:
                    i += 1
                    value = words[i] if i < len(words) else ""
                if ch == "m":
                    return (value, words[i + 1:]) if value else None
                break
        i += 1
    return None


def _from_words(words: list[str], env: Mapping[str, str], unresolved: list[str], depth: int) -> VllmInvocation | None:
    words = _strip_prefixes(words)
    if not words:
        return None
    name = program(words[0])
    if name == "eval" and depth < 4:
        return _from_script(" ".join(words[1:]), env, unresolved, depth + 1)
    if name in SHELLS and depth < 4:
        for i, word in enumerate(words[1:], start=1):
            if word.startswith("-") and not word.startswith("--") and "c" in word[1:]:
                rest = [w for w in words[i + 1:] if w != "--"]  # bash -lc -- 'script'
                return _from_script(rest[0], env, unresolved, depth + 1) if rest else None
        return None
    if name == "vllm" and len(words) > 1 and words[1] == "serve":
        return VllmInvocation("serve", words[2:])
    if name.startswith("python"):
        found = _python_module(words)
        if found and found[0] in API_SERVER_MODULES:
            return VllmInvocation("api_server", found[1])
        if found and found[0] in CLI_MODULES and found[1][:1] == ["serve"]:
            return VllmInvocation("serve", found[1][1:])
    return None


def _from_script(script: str, env: Mapping[str, str], unresolved: list[str], depth: int) -> VllmInvocation | None:
    for words in _split_script(script):
        words = [_expand_shell(w, env, unresolved) for w in words]
        found = _from_words(words, env, unresolved, depth)
        if found:
            return found
    return None


def find_invocation(command: str | Sequence[str], env: Mapping[str, str] | None = None) -> VllmInvocation | None:
    """The vLLM server run by ``command`` (a shell string or an argv list), or None."""
    env = env or {}
    unresolved: list[str] = []
    if isinstance(command, str):
        found = _from_script(command, env, unresolved, 0)
    else:
        found = _from_words([str(w) for w in command], env, unresolved, 0)
    if found is None:
        return None
    return VllmInvocation(found.mode, found.argv, tuple(dict.fromkeys(unresolved)))


def runs_vllm(command: str | Sequence[str]) -> bool:
    """Whether a command line runs a vLLM server (cheap pre-check: the text mentions vllm)."""
    text = command if isinstance(command, str) else " ".join(str(w) for w in command)
    return "vllm" in text and find_invocation(command) is not None


__all__ = ["VllmInvocation", "expand_kubernetes", "find_invocation", "runs_vllm"]
