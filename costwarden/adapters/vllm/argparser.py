"""A standard-library ``argparse`` parser rebuilt from a vLLM argument table.

vLLM parses with ``argparse`` after its own pre-processing, so the same ``argparse`` (this
Python's) gives the same unique-prefix abbreviations, ``--x=v`` / ``--x v``, ``nargs`` and
choice handling. Differences from a plain parser: errors are collected instead of exiting
(type and choice errors are recorded per argument, the value falls back to the default), and
``--no-x`` / ``--disable-x`` flags answer as vLLM's ``BooleanOptionalAction`` /
``EnableDisableAction`` do. Parsers are built once per (version, entry point) and shared.
"""

from __future__ import annotations

import argparse
import contextvars
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from costwarden.adapters.vllm.diagnostics import did_you_mean
from costwarden.adapters.vllm.table import converter, load_table

INVALID = object()  # a value that failed its type or choice check


@dataclass(slots=True)
class ValueProblem:
    """A type or choice error recorded while argparse ran (argparse itself would exit)."""

    dest: str
    code: str
    message: str
    value: Any


@dataclass(slots=True)
class _Run:
    errors: list[ValueProblem] = field(default_factory=list)


_RUN: contextvars.ContextVar[_Run] = contextvars.ContextVar("costwarden_vllm_run")


class ParseFailure(Exception):
    """argparse called ``error()`` (an ambiguous prefix, an invalid LoRA module...)."""


class VllmArgumentParser(argparse.ArgumentParser):
    """argparse with vLLM's table loaded and errors collected rather than fatal."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog=prog, add_help=False, allow_abbrev=True, exit_on_error=False)

    def error(self, message: str) -> Any:
        raise ParseFailure(message)

    def _get_value(self, action: argparse.Action, arg_string: str) -> Any:
        if action.type is str or action.type is None:  # the common case, kept cheap
            return arg_string
        try:
            return super()._get_value(action, arg_string)
        except argparse.ArgumentError as exc:
            _record(action.dest, "invalid-value", exc.message, arg_string)
            return INVALID

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if value is INVALID or action.choices is None or value in action.choices:
            return
        shown = ", ".join(repr(c) for c in action.choices if c is not None)
        _record(action.dest, "invalid-choice", f"invalid choice: {value!r} (choose from {shown})", value)

    def parse(self, tokens: Sequence[str]) -> tuple[argparse.Namespace, list[str], list[ValueProblem]]:
        """``parse_known_args`` with type/choice errors collected; raises ``argparse.ArgumentError``
        or :class:`ParseFailure` for errors argparse cannot recover from."""
        run = _Run()
        token = _RUN.set(run)
        try:
            namespace, extras = self.parse_known_args(list(tokens))
        finally:
            _RUN.reset(token)
        return namespace, extras, run.errors


def _record(dest: str, code: str, message: str, value: Any) -> None:
    run = _RUN.get(None)
    if run is not None:
        run.errors.append(ValueProblem(dest, code, message, value))


class Flag(argparse.Action):
    """``--x`` / ``--no-x`` (and ``--enable-x`` / ``--disable-x``): True unless the string used
    is one of the negative ones. argparse passes the full option string for abbreviations."""

    def __init__(self, option_strings: Sequence[str], dest: str, negatives: Sequence[str] = (), **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kw)
        self.negatives = frozenset(negatives)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, option_string not in self.negatives)


class StoreBoolean(argparse.Action):
    """Old vLLM's ``StoreBoolean``: ``--x true`` / ``--x false``."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        text = str(values).lower()
        if text not in ("true", "false"):
            _record(self.dest, "invalid-value", f"Invalid boolean value: {values}. Expected 'true' or 'false'.", values)
            return
        setattr(namespace, self.dest, text == "true")


class Help(argparse.Action):
    """``-h`` would print help and exit; recorded so the caller can say so."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, True)


class LoraModules(argparse.Action):
    """``LoRAParserAction``: ``name=path`` or a JSON object per item → a list of dicts."""

    key = "path"

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        out: list[dict[str, Any]] = []
        for item in values or []:
            if item in (None, ""):
                continue
            if "=" in item and "," not in item:
                name, path = item.split("=", 1)
                out.append({"name": name, self.key: path})
                continue
            try:
                data = json.loads(item)
            except json.JSONDecodeError:
                parser.error(f"Invalid JSON format for {option_string}: {item}")
            if not isinstance(data, dict):
                parser.error(f"Invalid fields for {option_string}: {item}")
            out.append(data)
        setattr(namespace, self.dest, out)


class PromptAdapters(LoraModules):
    key = "local_path"


def _default(value: Any) -> Any:
    if value == argparse.SUPPRESS:
        return argparse.SUPPRESS
    if isinstance(value, Mapping) and "$config" in value:
        return {}  # vLLM builds the config object from its class defaults
    return value


def _known_keys(convert: Any, fields: frozenset[str], desc: str) -> Any:
    """A config argument whose class refuses unknown keys (the table lists the ones it has):
    vLLM's pydantic validation fails on any other top-level key."""

    def checked(value: str) -> Any:
        data = convert(value)
        unknown = sorted(k for k in data if k not in fields) if isinstance(data, Mapping) else []
        if unknown:
            close = did_you_mean(unknown[0], fields)
            raise argparse.ArgumentTypeError(
                f"{desc.partition(':')[2]} has no field {', '.join(map(repr, unknown))}"
                + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
            )
        return data

    checked.__name__ = getattr(convert, "__name__", "config")
    return checked


def _add(parser: argparse.ArgumentParser, arg: Mapping[str, Any]) -> None:
    kind = arg["action"]
    options = arg.get("options") or []
    kw: dict[str, Any] = {"dest": arg["dest"], "default": _default(arg.get("default"))}
    if arg.get("positional"):
        extra: dict[str, Any] = {"nargs": arg.get("nargs"), "default": kw["default"]}
        if arg.get("type"):
            extra["type"] = converter(arg["type"])
        parser.add_argument(arg["dest"], **extra)
        return
    if kind in ("boolean", "enable_disable"):
        parser.add_argument(*options, action=Flag, negatives=arg.get("negatives", ()), **kw)
        return
    if kind == "help":
        parser.add_argument(*options, action=Help, dest="help", default=argparse.SUPPRESS)
        return
    classes: dict[str, Any] = {"lora": LoraModules, "prompt_adapter": PromptAdapters, "store_boolean": StoreBoolean}
    kw["action"] = classes.get(kind, kind)
    if kind in ("store", "append", "lora", "prompt_adapter", "store_boolean"):
        kw["type"] = converter(arg.get("type"), bool(arg.get("optional")))
        if arg.get("fields") and kw["type"] is not None:
            kw["type"] = _known_keys(kw["type"], frozenset(arg["fields"]), str(arg.get("type")))
        if "nargs" in arg:
            kw["nargs"] = arg["nargs"]
        if "const" in arg:
            kw["const"] = arg["const"]
        if arg.get("choices") is not None:
            kw["choices"] = arg["choices"]
    elif kind == "store_const":
        kw["const"] = arg.get("const")
    parser.add_argument(*options, **kw)


@cache
def build(version: str, mode: str) -> VllmArgumentParser:
    """The parser of ``vllm serve`` (``mode="serve"``) or of the api_server module (``"api_server"``)."""
    table = load_table(version)
    skip = set(table.get("serve_only", ())) if mode == "api_server" else set()
    prog = "vllm serve" if mode == "serve" else "python -m vllm.entrypoints.openai.api_server"
    parser = VllmArgumentParser(prog)
    for arg in table["arguments"]:
        if arg["dest"] not in skip:
            _add(parser, arg)
    return parser


@cache
def mutable_defaults(version: str, mode: str) -> tuple[str, ...]:
    """Dests whose default is a dict or list: argparse hands out the same object every time."""
    return tuple(a.dest for a in build(version, mode)._actions if isinstance(a.default, (dict, list)))


@cache
def reader_options(version: str, mode: str) -> frozenset[str]:
    """The option strings of the parser that reads ``--config`` files: ``vllm serve`` reads them
    with the top-level ``vllm`` parser (``-h``, ``-v``), the api_server module with its own."""
    if mode == "serve":
        return frozenset(load_table(version)["top_options"])
    return frozenset(build(version, mode)._option_string_actions)


def option_index(parser: argparse.ArgumentParser) -> Mapping[str, argparse.Action]:
    """Every option string the parser answers to (hidden ones included) → its action."""
    return parser._option_string_actions


__all__ = [
    "INVALID",
    "Flag",
    "ParseFailure",
    "ValueProblem",
    "VllmArgumentParser",
    "build",
    "mutable_defaults",
    "option_index",
    "reader_options",
]
