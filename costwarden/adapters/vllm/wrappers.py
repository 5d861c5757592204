"""Programs that run another command: ``timeout 100 vllm serve ...``, ``numactl -N 0 -- vllm ...``.

Each wrapper's own options are read the way its getopt reads them (up to the first operand or
``--``; ``-n5`` and ``--adjustment=5`` carry their value), so a wrapper's value is never taken for
the command, and options that make it run nothing (``command -v``, ``taskset -p``, ``--help``)
are recognised::

    >>> unwrap(["timeout", "-k", "5", "1h", "nice", "-n", "5", "vllm", "serve", "m"])
    ['nice', '-n', '5', 'vllm', 'serve', 'm']
    >>> unwrap(["uv", "run", "-m", "vllm.entrypoints.openai.api_server", "--port", "1"])
    ['python', '-m', 'vllm.entrypoints.openai.api_server', '--port', '1']
    >>> unwrap(["command", "-v", "vllm"]), unwrap(["vllm", "serve"])
    ([], None)

Not listed on purpose: ``torchrun -m vllm...`` starts one server per process (they fight over the
port), and ``python -m vllm`` does not exist (vLLM has no ``__main__``).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Wrapper:
    """How one wrapper reads its options (names with their dashes: ``-n``, ``--adjustment``)."""

    values: frozenset[str] = frozenset()  # options whose value is the next word unless attached
    operands: int = 0  # words before the command: timeout's duration, taskset's mask, gosu's user
    no_run: frozenset[str] = frozenset()  # options that make it run nothing
    module: frozenset[str] = frozenset()  # options whose value is a Python module to run (uv run -m)
    split: frozenset[str] = frozenset()  # options whose value is a command line (env -S)
    tool_spec: bool = False  # the command may name its package version: uvx vllm@0.11.0


def _w(values: str = "", operands: int = 0, no_run: str = "", module: str = "", split: str = "",
       tool_spec: bool = False) -> Wrapper:
    return Wrapper(frozenset(values.split()), operands, frozenset(no_run.split()), frozenset(module.split()),
                   frozenset(split.split()), tool_spec)


_UV_VALUES = (
    "--with --with-editable --with-requirements --python -p --project --directory --package --extra --group "
    "--only-group --no-group --env-file --index --default-index --index-url --extra-index-url -f --find-links "
    "--cache-dir --config-file --color -P --upgrade-package --reinstall-package --no-build-package "
    "--no-binary-package --resolution --prerelease --exclude-newer --link-mode --index-strategy "
    "--keyring-provider --python-platform --refresh-package -C --config-setting --allow-insecure-host "
    "--python-preference --fork-strategy --from --constraints --overrides --build-constraints"
)
_CONDA = _w("-n --name -p --prefix --cwd")

WRAPPERS: dict[tuple[str, ...], Wrapper] = {
    ("timeout",): _w("-s --signal -k --kill-after", operands=1),
    ("nice",): _w("-n --adjustment"),
    ("env",): _w("-u --unset -C --chdir", split="-S --split-string"),
    ("exec",): _w("-a"),
    ("command",): _w(no_run="-v -V"),
    ("nohup",): _w(),
    ("time",): _w("-f --format -o --output"),
    ("setsid",): _w(),
    ("stdbuf",): _w("-i -o -e --input --output --error"),
    ("numactl",): _w("-N -m -C -i -p -w --cpunodebind --membind --physcpubind --interleave --preferred "
                     "--preferred-many --weighted-interleave", no_run="-s --show -H --hardware"),
    ("taskset",): _w(operands=1, no_run="-p --pid"),
    ("chrt",): _w("-T -P -D --sched-runtime --sched-period --sched-deadline", operands=1,
                  no_run="-p --pid -m --max"),
    ("ionice",): _w("-c --class -n --classdata", no_run="-p --pid -P --pgid -u --uid"),
    ("tini",): _w("-p -e", no_run="-l -h"),
    ("dumb-init",): _w("-r --rewrite"),
    ("gosu",): _w(operands=1),
    ("su-exec",): _w(operands=1),
    ("sudo",): _w("-u --user -g --group -C --close-from -D --chdir -p --prompt -r --role -t --type -U "
                  "--other-user -T --command-timeout -R --chroot",
                  no_run="-h -l --list -v --validate -V -K --remove-timestamp -e --edit"),
    ("uv", "run"): _w(_UV_VALUES, module="-m --module"),
    ("uv", "tool", "run"): _w(_UV_VALUES, tool_spec=True),
    ("uvx",): _w(_UV_VALUES, tool_spec=True),
    ("conda", "run"): _CONDA,
    ("mamba", "run"): _CONDA,
    ("micromamba", "run"): _CONDA,
    ("poetry", "run"): _w(),
    ("pipenv", "run"): _w(),
}
_ALWAYS_NO_RUN = frozenset({"--help", "--version"})
PROGRAMS = frozenset(key[0] for key in WRAPPERS)


def program(word: str) -> str:
    """``/usr/bin/timeout`` → ``timeout``."""
    return word.rsplit("/", 1)[-1]


def unwrap(words: list[str]) -> list[str] | None:
    """The command a wrapper runs (``[]`` when it runs none); None when ``words`` is no wrapper."""
    if not words or program(words[0]) not in PROGRAMS:
        return None
    head = (program(words[0]), *words[1:3])
    key = next((k for k in sorted(WRAPPERS, key=len, reverse=True) if head[: len(k)] == k), None)
    if key is None:
        return None  # `uv pip ...`, `conda install ...`: a wrapper program that runs nothing here
    return _command(words[len(key):], WRAPPERS[key])


def _command(words: list[str], w: Wrapper) -> list[str]:
    i = 0
    while i < len(words) and words[i].startswith("-") and words[i] != "-":
        word = words[i]
        if word == "--":
            i += 1
            break
        name, value, takes_next = _option(word, w)
        if name in w.no_run or name in _ALWAYS_NO_RUN:
            return []
        if takes_next:
            if i + 1 >= len(words):
                return []
            value, i = words[i + 1], i + 1
        if name in w.split and value is not None:
            return shlex.split(value) + words[i + 1:]
        if name in w.module and value is not None:
            return ["python", "-m", value, *words[i + 1:]]
        i += 1
    rest = words[i + w.operands:]
    if w.tool_spec and rest:
        rest = [rest[0].split("@", 1)[0], *rest[1:]]
    return rest


def _option(word: str, w: Wrapper) -> tuple[str, str | None, bool]:
    """(the option that matters, its attached value, whether its value is the next word). In a
    cluster of short options (``-oL``, ``-cl``) the first one that takes a value ends it."""
    if word.startswith("--"):
        name, eq, value = word.partition("=")
        takes = name in w.values | w.module | w.split
        return name, value if eq else None, takes and not eq
    for j, ch in enumerate(word[1:], start=1):
        name = "-" + ch
        if name in w.no_run:
            return name, None, False
        if name in w.values | w.module | w.split:
            attached = word[j + 1:]
            return name, attached or None, not attached
    return word[:2], None, False


__all__ = ["PROGRAMS", "WRAPPERS", "Wrapper", "program", "unwrap"]
