"""What vLLM's ``FlexibleArgumentParser.parse_args`` does before argparse sees the arguments,
per version (the table's ``semantics``, read off that version's source by :mod:`.schema_gen`):

1. ``vllm serve --model X``: moved to the positional model (0.33) or refused (older);
2. ``--config FILE`` (only that exact token): the YAML's keys become ``--key value`` tokens
   spliced in after the subcommand and model, so the command line wins over the file.
   ``true`` → ``--key``; ``false`` → ``--no-key`` when *the parser that reads the file* has that
   option (0.33; ``vllm serve`` reads it with the top-level ``vllm`` parser, which has none, so
   there ``false`` is dropped too), else nothing; lists → ``--key item...`` (0.10+) or
   ``str(list)``; dicts → JSON (0.33) or ``str(dict)``;
3. ``_`` → ``-`` in option names (up to the first ``.`` from 0.10 on), ``-O3`` spellings;
4. dotted JSON arguments (0.10+): ``--compilation-config.mode 3`` and ``--x.y+ a,b`` are merged
   into one JSON argument appended at the end (0.33 also reads ``80g`` in them).

Every token keeps the file and line it came from, so diagnostics can point at it.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from costwarden.adapters.vllm.diagnostics import Diagnostic
from costwarden.adapters.vllm.table import human_readable_int

_MODEL_OPTION = re.compile(r"^--model(=.+|$)")
_CONFIG_OPTION = re.compile(r"^--config(=.+|$)")
_SERVED_NAME = re.compile(r"^--served[-_]model[-_]name(=.+|$)")
_FIRST_SEGMENT = re.compile(r"(?<=--)[^\.]*")

FileReader = Callable[[str], "str | None"]


@dataclass(frozen=True, slots=True)
class Token:
    """One command-line word and where it came from (``source`` is ``argv`` or ``config``)."""

    text: str
    file: str | None = None
    line: int | None = None
    source: str = "argv"

    def with_text(self, text: str) -> Token:
        return Token(text, self.file, self.line, self.source)


class Preprocessor:
    """Runs one version's pre-processing over tokens, collecting diagnostics."""

    def __init__(self, semantics: Mapping[str, Any], reader_options: frozenset[str], read_file: FileReader) -> None:
        self.sem = semantics
        self.reader_options = reader_options  # options of the parser that reads --config files
        self.read_file = read_file
        self.diagnostics: list[Diagnostic] = []
        self.unread_config: str | None = None  # a --config file vLLM reads that could not be read here

    def error(self, code: str, message: str, at: Token | None = None, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic(code, message, "error", at.file if at else None,
                                           at.line if at else None, hint))

    def run(self, tokens: list[Token], serve: bool) -> list[Token]:
        """Tokens after pre-processing; ``serve`` tokens start with a synthetic ``serve``."""
        args = list(tokens)
        if serve:
            args = self._serve_model(args)
        if any(t.text == "--config" for t in args):
            args = self._pull_config(args)
        args = self._rename(args)
        if self.sem.get("dotted_json"):
            args = self._dotted(args)
        return args

    # -- 1. --model with serve -----------------------------------------------------------------

    def _serve_model(self, args: list[Token]) -> list[Token]:
        if self.sem.get("serve_model_option") == "move":
            idx = next((i for i, t in enumerate(args) if _MODEL_OPTION.match(t.text)), None)
            if idx is not None:
                tok = args[idx]
                if tok.text == "--model":
                    if idx + 1 >= len(args):
                        self.error("invalid-command", "--model needs a value", tok)
                        return args[:idx]
                    model, rest = args[idx + 1], idx + 2
                else:
                    model, rest = tok.with_text(tok.text.removeprefix("--model=")), idx + 1
                self.diagnostics.append(Diagnostic(
                    "deprecated-argument", "with `vllm serve`, --model is deprecated and will be removed",
                    "warning", tok.file, tok.line, "pass the model as the first positional argument"))
                args = [args[0], model, *args[1:idx], *args[rest:]]
            if (self.sem.get("serve_model_check") and len(args) > 1 and args[1].text.startswith("-")
                    and not any(_CONFIG_OPTION.match(t.text) for t in args)
                    and any(_SERVED_NAME.match(t.text) for t in args)):
                self.error("invalid-command", "`model` should be the first positional argument of `vllm serve` "
                           "when --served-model-name is given", args[1])
        elif any(t.text == "--model" for t in args):
            tok = next(t for t in args if t.text == "--model")
            self.error("invalid-command", "this vLLM refuses --model with `vllm serve` (ValueError at start-up)",
                       tok, "pass the model as the first positional argument: vllm serve MODEL ...")
        return args

    # -- 2. --config FILE ----------------------------------------------------------------------

    def _pull_config(self, args: list[Token]) -> list[Token]:
        texts = [t.text for t in args]
        index = texts.index("--config")
        if texts.count("--config") > 1:
            self.error("invalid-command", "more than one --config file (vLLM asserts there is one)", args[index])
            return args
        if index == len(args) - 1:
            self.error("invalid-command", "--config needs a file", args[index])
            return args[:index]
        path_tok = args[index + 1]
        config = self._config_tokens(path_tok)
        rest = args[index + 2:]
        first = args[0].text
        if first.startswith("-") and self.sem.get("config_no_subcommand"):
            return config + args[:index] + rest
        if first == "serve":
            model_in_cli = len(args) > 1 and not args[1].text.startswith("-")
            if not model_in_cli and not any(t.text == "--model" for t in config):
                self.error("invalid-command", "no model: give it positionally or as `model:` in the config file",
                           path_tok)
            cut = 2 if model_in_cli else 1
            return args[:cut] + config + args[cut:index] + rest
        return args[:1] + config + args[1:index] + rest

    def _config_tokens(self, path_tok: Token) -> list[Token]:
        path = path_tok.text
        if path.split(".")[-1] not in ("yaml", "yml"):
            self.error("config-not-loaded", f"config file must be .yaml or .yml: {path}", path_tok)
            return []
        text = self.read_file(path)
        if text is None:
            self.unread_config = path
            self.diagnostics.append(Diagnostic(
                "config-not-loaded", f"config file {path} is not available here; its arguments are unknown",
                "warning", path_tok.file, path_tok.line))
            return []
        try:
            data = yaml.safe_load(text)
            lines = _key_lines(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            self.diagnostics.append(Diagnostic("config-not-loaded", f"invalid YAML in {path}: {exc}", "error",
                                               path, mark.line + 1 if mark else None))
            return []
        if not isinstance(data, dict):
            self.error("config-not-loaded", f"{path} must be a mapping of option names to values", path_tok)
            return []
        out: list[Token] = []
        for key, value in data.items():
            where = Token("", path, lines.get(str(key)), "config")
            out += self._config_entry(str(key), value, where, path)
        return out

    def _config_entry(self, key: str, value: Any, where: Token, path: str) -> list[Token]:
        sem = self.sem
        flag = where.with_text("--" + key)
        if isinstance(value, bool):
            if value:
                return [flag]
            no_key = f"--no-{key}"
            if sem.get("config_false") == "no_flag" and no_key in self.reader_options:
                return [where.with_text(no_key)]
            self.diagnostics.append(Diagnostic(
                "ignored-false", f"`{key}: false` does nothing in this vLLM version (no flag is emitted)",
                "warning", path, where.line,
                f"write the negative flag instead, e.g. `no-{key}: true` or `--no-{key}` on the command line"
                if not key.startswith("no-") else "remove the key", key.replace("-", "_")))
            return []
        if isinstance(value, list) and sem.get("config_list"):
            return [flag, *(where.with_text(str(item)) for item in value)] if value else []
        if isinstance(value, dict) and sem.get("config_dict") == "json":
            return [flag, where.with_text(json.dumps(value))]
        return [flag, where.with_text(str(value))]

    # -- 3. names ------------------------------------------------------------------------------

    def _rename(self, args: list[Token]) -> list[Token]:
        out: list[Token] = []
        opt = self.sem.get("opt_level")
        for i, tok in enumerate(args):
            arg = tok.text
            if arg.startswith("--help=") and self.sem.get("dotted_json"):
                out.append(tok.with_text("--help"))
            elif arg.startswith("--"):
                out.append(tok.with_text(self._dashes(arg)))
            elif opt == "optimization_level" and arg.startswith("-O") and arg != "-O":
                out += [tok.with_text("--optimization-level"), tok.with_text(arg[3:] if arg[2] == "=" else arg[2:])]
            elif opt == "dotted_level" and arg.startswith("-O") and arg != "-O" and arg[2] != ".":
                out.append(tok.with_text(f"-O.level={arg[3:] if arg[2] == '=' else arg[2:]}"))
            elif opt != "split" and arg == "-O" and i + 1 < len(args) and args[i + 1].text in {"0", "1", "2", "3"}:
                out.append(tok.with_text("--optimization-level" if opt == "optimization_level" else "-O.level"))
            else:
                out.append(tok)
        return out

    def _dashes(self, arg: str) -> str:
        if self.sem.get("underscore") == "whole":
            if "=" in arg:
                key, value = arg.split("=", 1)
                return "--" + key[2:].replace("_", "-") + "=" + value
            return "--" + arg[2:].replace("_", "-")
        if "=" in arg:
            key, value = arg.split("=", 1)
            return _FIRST_SEGMENT.sub(lambda m: m.group(0).replace("_", "-"), key, count=1) + "=" + value
        return _FIRST_SEGMENT.sub(lambda m: m.group(0).replace("_", "-"), arg, count=1)

    # -- 4. dotted JSON ------------------------------------------------------------------------

    def _dotted(self, args: list[Token]) -> list[Token]:
        delete: set[int] = set()
        merged: dict[str, dict[str, Any]] = defaultdict(dict)
        first_at: dict[str, Token] = {}
        for i, tok in enumerate(args):
            arg = tok.text
            if i in delete or not (arg.startswith("-") and "." in arg):
                continue
            if "=" in arg:
                arg, value_str = arg.split("=", 1)
                if "." not in arg:
                    continue  # the '.' was in the value
            elif i + 1 < len(args):
                value_str = args[i + 1].text
                delete.add(i + 1)
            else:
                self.error("missing-value", f"{arg} needs a value", tok)
                delete.add(i)
                continue
            if arg.endswith("+"):
                arg, value_str = arg[:-1], json.dumps(value_str.split(","))
            key, *keys = arg.split(".")
            nested: Any = self._dotted_value(value_str)
            for k in reversed(keys):
                nested = {k: nested}
            _merge(merged[key], nested)
            first_at.setdefault(key, tok)
            delete.add(i)
        out = [t for i, t in enumerate(args) if i not in delete]
        for key, value in merged.items():
            out += [first_at[key].with_text(key), first_at[key].with_text(json.dumps(value))]
        return out

    def _dotted_value(self, value_str: str) -> Any:
        try:
            return json.loads(value_str)
        except json.JSONDecodeError:
            if self.sem.get("dotted_human_int"):
                try:
                    return human_readable_int(value_str)
                except ValueError:
                    pass
            return value_str


def _merge(original: dict[str, Any], update: dict[str, Any]) -> None:
    """vLLM's ``recursive_dict_update``: dicts merge, lists extend, anything else replaces."""
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(original.get(k), dict):
            _merge(original[k], v)
        elif isinstance(v, list) and isinstance(original.get(k), list):
            original[k] += v
        else:
            original[k] = v


def _key_lines(text: str) -> dict[str, int]:
    """Top-level key → 1-based line of its last occurrence (the one ``safe_load`` keeps)."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    out: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                out[str(key.value)] = key.start_mark.line + 1
    return out


def duplicate_config_keys(text: str) -> list[tuple[str, int]]:
    """Top-level keys a YAML file sets more than once (``safe_load`` silently keeps the last)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []
    seen: set[str] = set()
    out: list[tuple[str, int]] = []
    if isinstance(node, yaml.MappingNode):
        for key, _ in node.value:
            name = str(key.value)
            if name in seen:
                out.append((name, key.start_mark.line + 1))
            seen.add(name)
    return out


__all__ = ["FileReader", "Preprocessor", "Token", "duplicate_config_keys"]
