"""One resolution: vLLM's view of a configuration, built as ``FlexibleArgumentParser`` and argparse
build it — pre-processing (:mod:`.flexible`), then argparse over this version's table with every
failure turned into a positioned diagnostic instead of an exit::

    >>> from costwarden.adapters.vllm.flexible import Token
    >>> r = resolve_tokens([Token("m"), Token("--max-num-seq"), Token("8")], "0.11.0")
    >>> r.args["max_num_seqs"], sorted(r.explicit)
    (8, ['max_num_seqs', 'model', 'model_tag'])

The entry points that build tokens from argv, command lines and files are in :mod:`.parser`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from costwarden.adapters.vllm.argparser import (
    INVALID,
    ParseFailure,
    ValueProblem,
    VllmArgumentParser,
    build,
    mutable_defaults,
    reader_options,
)
from costwarden.adapters.vllm.diagnostics import Diagnostic, did_you_mean
from costwarden.adapters.vllm.flexible import FileReader, Preprocessor, Token, duplicate_config_keys
from costwarden.adapters.vllm.table import available_versions, load_table, pick_version, version_key

Mode = str  # "serve" | "api_server"
# What is known beyond the tables (FACTS): why an argument left.
REMOVED_NOTES = {"swap_space": "unused by the V1 engine and removed from EngineArgs in vLLM 0.18"}
_ACCUMULATING = frozenset({"append", "append_const", "count"})


@dataclass
class Resolution:
    """vLLM's view of one configuration."""

    version: str
    mode: Mode
    args: dict[str, Any]
    explicit: set[str]
    diagnostics: list[Diagnostic] = field(default_factory=list)
    locations: dict[str, tuple[str | None, int | None]] = field(default_factory=dict)
    unrecognized: list[str] = field(default_factory=list)  # argparse's leftovers, as vLLM reports them
    unread_config: str | None = None
    """A ``--config`` file vLLM reads that could not be read here: the arguments it may set are
    unknown, and ``args`` shows this version's defaults for them."""

    @property
    def ok(self) -> bool:
        """False when vLLM would refuse to start with these arguments."""
        return not any(d.severity == "error" for d in self.diagnostics)

    @property
    def model(self) -> str | None:
        value = self.args.get("model")
        return value if isinstance(value, str) else None

    @property
    def deprecated_args(self) -> tuple[str, ...]:
        """Dest names of deprecated or removed arguments that were set."""
        codes = ("deprecated-argument", "removed-argument")
        found = [d.argument for d in self.diagnostics if d.code in codes and d.argument]
        return tuple(dict.fromkeys(a for a in found if a))

    def to_dict(self) -> dict[str, Any]:
        return {
            "vllm_version": self.version,
            "entrypoint": "vllm serve" if self.mode == "serve" else "python -m vllm.entrypoints.openai.api_server",
            "ok": self.ok,
            "args": {k: self.args[k] for k in sorted(self.args)},
            "explicit": sorted(self.explicit),
            "diagnostics": [d.to_dict() for d in self.diagnostics],
        }


def resolve_tokens(
    tokens: list[Token],
    version: str | None,
    *,
    mode: Mode = "serve",
    read_file: FileReader | None = None,
    notes: Sequence[Diagnostic] = (),
) -> Resolution:
    """The core: pre-process as this version's FlexibleArgumentParser, then argparse."""
    chosen, why = pick_version(version)
    table = load_table(chosen)
    parser = build(chosen, mode)
    diags = list(notes)
    if version is not None and chosen not in (version, version.lstrip("v")):
        diags.append(Diagnostic("version", why, "info"))
    pre = Preprocessor(table["semantics"], reader_options(chosen, mode), _tracking(read_file or _no_files, diags))
    serve = mode == "serve"
    processed = pre.run(([Token("serve")] if serve else []) + tokens, serve)[1 if serve else 0:]
    diags += pre.diagnostics
    state = _State(parser, table, diags, mutable_defaults(chosen, mode))
    kept = state.scan(processed)
    namespace, extras, problems = state.parse(kept)
    resolution = state.finish(chosen, mode, namespace, extras, problems, kept)
    resolution.unread_config = pre.unread_config
    return resolution


def _no_files(path: str) -> str | None:
    return None


def _tracking(read_file: FileReader, diags: list[Diagnostic]) -> FileReader:
    """A reader that also reports keys a config file sets twice."""

    def read(path: str) -> str | None:
        text = read_file(path)
        for key, line in duplicate_config_keys(text) if text else ():
            diags.append(Diagnostic("duplicate-argument", f"`{key}` is set twice in {path}; YAML keeps the last",
                                    "warning", path, line, f"remove one `{key}`", key.replace("-", "_")))
        return text

    return read


def _parse_optional(parser: argparse.ArgumentParser, text: str) -> argparse.Action | None:
    found: Any = parser._parse_optional(text)
    if isinstance(found, list):  # Python ≥ 3.12.7 returns every match
        found = found[0] if len(found) == 1 else None
    return found[0] if found else None


class _State:
    """One resolution's working state (kept out of the shared parser)."""

    def __init__(self, parser: VllmArgumentParser, table: Mapping[str, Any], diags: list[Diagnostic],
                 mutable: Sequence[str] = ()) -> None:
        self.mutable = mutable
        self.parser = parser
        self.table = table
        self.diags = diags
        self.seen: list[tuple[str, Token]] = []  # (dest, token) per option occurrence, in order

    def scan(self, tokens: list[Token]) -> list[Token]:
        """Map option tokens to actions as argparse will; drop ambiguous prefixes (argparse
        would exit) with a diagnostic."""
        kept: list[Token] = []
        skip_next = False
        for i, tok in enumerate(tokens):
            if skip_next:
                skip_next = False
                continue
            if tok.text == "--":
                kept += tokens[i:]
                break
            if tok.text.startswith("-"):
                try:
                    action = _parse_optional(self.parser, tok.text)
                except ParseFailure as exc:
                    skip_next = self._ambiguous(tok, str(exc), tokens[i + 1] if i + 1 < len(tokens) else None)
                    continue
                if action is not None:
                    self.seen.append((action.dest, tok))
            kept.append(tok)
        return kept

    def _ambiguous(self, tok: Token, message: str, following: Token | None) -> bool:
        matches = message.split("could match", 1)[-1].strip()
        actions = [self.parser._option_string_actions.get(m.strip().split("=")[0]) for m in matches.split(",")]
        self.diags.append(Diagnostic("ambiguous-option", f"{tok.text.split('=')[0]} is ambiguous: could match "
                                     f"{matches}", "error", tok.file, tok.line, "spell the option out"))
        takes_value = all(a is not None and a.nargs != 0 for a in actions)
        return takes_value and "=" not in tok.text and following is not None and not following.text.startswith("-")

    def parse(self, tokens: list[Token]) -> tuple[argparse.Namespace, list[str], list[ValueProblem]]:
        """argparse with retries: an argument argparse cannot take is reported and dropped."""
        texts = [t.text for t in tokens]
        for _ in range(16):
            try:
                return self.parser.parse(texts)
            except argparse.ArgumentError as exc:
                texts = self._drop(texts, tokens, exc.argument_name or "", exc.message)
            except ParseFailure as exc:
                self.diags.append(Diagnostic("invalid-value", str(exc)))
                texts = [t for t in texts if not str(exc).endswith(t)] if texts else texts
        return self.parser.parse([])

    def _drop(self, texts: list[str], tokens: list[Token], name: str, message: str) -> list[str]:
        options = set(name.split("/"))
        code = "missing-value" if message.startswith("expected") else "invalid-value"
        for i in range(len(texts) - 1, -1, -1):
            action = _parse_optional(self.parser, texts[i]) if texts[i].startswith("-") else None
            if action is not None and options & set(action.option_strings):
                tok = next((t for t in tokens if t.text == texts[i]), None)
                self.diags.append(Diagnostic(code, f"argument {name}: {message}", "error",
                                             tok.file if tok else None, tok.line if tok else None,
                                             argument=action.dest))
                return texts[:i] + texts[i + 1:]
        self.diags.append(Diagnostic(code, f"argument {name}: {message}"))
        return []

    def finish(self, version: str, mode: Mode, namespace: argparse.Namespace, extras: list[str],
               problems: list[ValueProblem], tokens: list[Token]) -> Resolution:
        args = vars(namespace)
        if args.pop("help", None):
            self.diags.append(Diagnostic("invalid-command", "-h/--help prints help and exits", "warning"))
        explicit = {dest for dest, _ in self.seen}
        for problem in problems:
            self._problem(problem, args, explicit)
        for dest in self.mutable:  # defaults are shared: hand out copies of mutable ones
            value = args.get(dest)
            if isinstance(value, (dict, list)) and dest not in explicit:
                args[dest] = value.copy()
        if args.get("model_tag") is not None:
            explicit.add("model_tag")
            if mode == "serve":  # vllm serve: `args.model = args.model_tag`
                args["model"] = args["model_tag"]
                explicit.add("model")
            else:
                self.diags.append(Diagnostic(
                    "invalid-command", f"the api_server entry point ignores the positional model "
                    f"{args['model_tag']!r} and serves {args.get('model')!r}", "warning",
                    hint="pass it as --model"))
        self._deprecations(explicit)
        self._duplicates()
        self._unknown(extras, tokens, args)
        if args.get("config"):
            self.diags.append(Diagnostic(
                "config-not-loaded", f"vLLM does not read {args['config']!r}: only the exact form "
                "`--config FILE` loads a file", "warning", hint="write --config FILE (a space, no '=', no prefix)"))
        locations = {dest: (tok.file, tok.line) for dest, tok in self.seen}
        return Resolution(version, mode, args, explicit, self.diags, locations, list(extras))

    def _problem(self, problem: ValueProblem, args: dict[str, Any], explicit: set[str]) -> None:
        arg = self.table["by_dest"].get(problem.dest, {})
        tok = self._last(problem.dest)
        flag = (arg.get("options") or [problem.dest])[0]
        self.diags.append(Diagnostic(problem.code, f"argument {flag}: {problem.message}", "error",
                                     tok.file if tok else None, tok.line if tok else None,
                                     _type_hint(arg), problem.dest))
        value = args.get(problem.dest)
        if value is INVALID or problem.code == "invalid-choice" or (isinstance(value, list) and INVALID in value):
            default = arg.get("default")
            args[problem.dest] = {} if isinstance(default, dict) and "$config" in default else default
            explicit.discard(problem.dest)

    def _last(self, dest: str) -> Token | None:
        return next((tok for d, tok in reversed(self.seen) if d == dest), None)

    def _deprecations(self, explicit: set[str]) -> None:
        for dest in sorted(explicit):
            note = self.table["by_dest"].get(dest, {}).get("deprecated")
            if note:
                tok = self._last(dest)
                self.diags.append(Diagnostic("deprecated-argument", f"{note}", "warning",
                                             tok.file if tok else None, tok.line if tok else None,
                                             "remove it", dest))

    def _duplicates(self) -> None:
        by_dest: dict[str, list[Token]] = {}
        for dest, tok in self.seen:
            kind = self.table["by_dest"].get(dest, {}).get("action")
            if kind not in _ACCUMULATING:
                by_dest.setdefault(dest, []).append(tok)
        for dest, toks in by_dest.items():
            if len(toks) < 2:
                continue
            last = toks[-1]
            overridden = ", ".join(_where(t) for t in toks[:-1])
            cli_over_file = all(t.source == "config" for t in toks[:-1]) and last.source == "argv"
            self.diags.append(Diagnostic(
                "duplicate-argument",
                f"{last.text.split('=')[0]} ({_where(last)}) overrides {overridden}",
                "info" if cli_over_file else "warning", last.file, last.line,
                None if cli_over_file else "set it once", dest))

    def _unknown(self, extras: list[str], tokens: list[Token], args: Mapping[str, Any]) -> None:
        if not extras:
            return
        options = [o for o in self.parser._option_string_actions if o.startswith("--")]
        previous_unknown = False
        for text in extras:
            tok = next((t for t in tokens if t.text == text), None)
            file, line = (tok.file, tok.line) if tok else (None, None)
            if not text.startswith("-"):
                if not previous_unknown:
                    hint = ("the image already runs `vllm serve`: drop the leading 'serve'"
                            if args.get("model_tag") == "serve" else None)
                    self.diags.append(Diagnostic("unknown-argument", f"unrecognized argument {text!r}", "error",
                                                 file, line, hint))
                continue
            name = text.split("=", 1)[0]
            previous_unknown = "=" not in text
            self.diags.append(self._unknown_option(name, options, file, line))

    def _unknown_option(self, name: str, options: list[str], file: str | None, line: int | None) -> Diagnostic:
        current = self.table["vllm_version"]
        elsewhere = known_in_other_versions(name, current)
        if elsewhere:
            dest = elsewhere[0][1]
            older = [v for v, _ in elsewhere if version_key(v) < version_key(current)]
            note = REMOVED_NOTES.get(dest)
            if older:
                message = f"{name} was removed: vLLM {older[-1]} has it, {current} does not" + (
                    f" ({note})" if note else "")
            else:
                message = f"{name} is not in vLLM {current} (added in {elsewhere[0][0]})"
            return Diagnostic("removed-argument", message, "error", file, line, "remove it", dest)
        close = did_you_mean(name, options)
        hint = f"did you mean {', '.join(close)}?" if close else None
        return Diagnostic("unknown-argument", f"unrecognized argument {name}", "error", file, line, hint)


def _where(tok: Token) -> str:
    if tok.source == "config":
        return f"{tok.file}:{tok.line}" if tok.line else str(tok.file)
    return "command line"


def _type_hint(arg: Mapping[str, Any]) -> str | None:
    kind = str(arg.get("type") or "")
    if kind.startswith("human_int"):
        return "an integer; k/m/g/t multiply by 1000s, K/M/G/T by 1024s (32k = 32000, 32K = 32768)"
    if kind.startswith(("config", "json", "from_")):
        return "a JSON object, or keys passed one by one: --arg.key value"
    if arg.get("choices"):
        return "one of " + ", ".join(str(c) for c in arg["choices"] if c is not None)
    return f"a value of type {kind}" if kind else None


@cache
def _option_index(version: str) -> Mapping[str, str]:
    table = load_table(version)
    return {o: a["dest"] for a in table["arguments"] for o in a.get("options", ())}


def known_in_other_versions(option: str, current: str) -> list[tuple[str, str]]:
    """``[(version, dest)]`` of shipped tables other than ``current`` that know ``option``."""
    return [(v, _option_index(v)[option]) for v in available_versions() if v != current and option in _option_index(v)]


__all__ = ["REMOVED_NOTES", "Resolution", "known_in_other_versions", "resolve_tokens"]
