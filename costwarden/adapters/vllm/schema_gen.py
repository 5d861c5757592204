"""Generate vLLM's ``vllm serve`` argument table from vLLM's own parser, as JSON data.

Run it with a Python that can import ``vllm`` (the oracle environment that
``tests/conformance/prepare_vllm_oracle.sh`` prepares; ``VLLM_TARGET_DEVICE=cpu``)::

    PYTHONPATH=. python -m costwarden.adapters.vllm.schema_gen \\
        --out costwarden/adapters/vllm/data/vllm-0.33.0.json

The table holds, for every argument of the ``serve`` sub-parser: option strings (with the hidden
``--no-enable-x`` / ``--disable-x`` spellings), ``dest``, the kind of action, the value type as a
small descriptor (``int``, ``human_int``, ``json``, ``config:CompilationConfig``...), whether
``"None"`` reads as None, ``nargs``, ``const``, choices, the default, a deprecation note, and for a
config argument whose class refuses unknown keys, the ``fields`` it accepts.
It also records what the version's ``FlexibleArgumentParser`` does before argparse runs
(config-file booleans, lists and dicts, dotted JSON arguments, ``-O``, ``--model`` with ``serve``),
read off that version's own source, so one parser can follow every shipped version.

This module imports vLLM lazily and only here; nothing else in costwarden needs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import importlib
import inspect
import json
import os
import platform
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
# Help text that marks an argument as deprecated (vLLM does not always pass deprecated=True);
# "Enable deprecated Prometheus metrics" is not such a mark.
_DEPRECATION = re.compile(
    r"\[deprecated\]|\b(is|are|now|been) deprecated\b|\bwill be removed\b|^deprecated\b|\bdeprecated[:;,.]",
    re.IGNORECASE,
)


def _import(*names: str) -> Any:
    """The first importable attribute among dotted ``module:attr`` names."""
    errors = []
    for name in names:
        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            errors.append(f"{name}: {exc}")
    raise ImportError("; ".join(errors))


def _force_cpu_platform() -> None:
    """Before 0.12 vLLM found the CPU platform only from a ``+cpu`` version string, so a CPU build
    of torch with a CUDA wheel of vLLM fails to infer a device. The parser does not depend on it."""
    platforms = importlib.import_module("vllm.platforms")
    if getattr(platforms, "_current_platform", None) is None:
        platforms.__dict__["resolve_current_platform_cls_qualname"] = lambda: "vllm.platforms.cpu.CpuPlatform"


def load_vllm() -> dict[str, Any]:
    """vLLM's parser pieces for the installed version, whichever module they live in."""
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    _force_cpu_platform()
    vllm = importlib.import_module("vllm")
    flexible = _import("vllm.utils.argparse_utils:FlexibleArgumentParser", "vllm.utils:FlexibleArgumentParser")
    make = _import(
        "vllm.entrypoints.common.cli_args:make_arg_parser", "vllm.entrypoints.openai.cli_args:make_arg_parser"
    )
    try:
        serve_cmd = _import("vllm.entrypoints.cli.serve:ServeSubcommand")
    except ImportError:
        serve_cmd = None
    version = getattr(vllm, "__version__", None) or importlib.import_module("importlib.metadata").version("vllm")
    return {"version": version, "FlexibleArgumentParser": flexible, "make_arg_parser": make, "serve": serve_cmd}


def build_parsers(v: dict[str, Any]) -> tuple[Any, Any, Any]:
    """``(top, serve, flat)``: the ``vllm`` CLI's top-level parser, its ``serve`` sub-parser (as
    ``vllm serve`` builds them) and the flat parser of ``python -m vllm.entrypoints.openai.api_server``."""
    flexible = v["FlexibleArgumentParser"]
    top = flexible(description="vLLM CLI")
    top.add_argument("-v", "--version", action="version", version=v["version"])
    subparsers = top.add_subparsers(required=False, dest="subparser")
    if v["serve"] is not None:
        serve = v["serve"]().subparser_init(subparsers)
    else:  # pragma: no cover - every shipped version has ServeSubcommand
        serve = v["make_arg_parser"](subparsers.add_parser("serve", usage="vllm serve [model_tag] [options]"))
    flat = v["make_arg_parser"](flexible(description="vLLM OpenAI-Compatible RESTful API server."))
    return top, serve, flat


# --- types ----------------------------------------------------------------------------------


def _closure(fn: Any) -> dict[str, Any]:
    cells = getattr(fn, "__closure__", None) or ()
    names = getattr(getattr(fn, "__code__", None), "co_freevars", ())
    return {n: c.cell_contents for n, c in zip(names, cells, strict=False)}


def _source(fn: Any) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return ""


def _probe_human(fn: Callable[[str], Any]) -> str:
    """Which suffixes a human-readable-int parser accepts (``kmgt`` and ``KMGT`` in 0.33, no
    ``t``/``T`` in older releases, whose regex matched them and then failed)."""
    ok = ""
    for suffix in "kmgtKMGT":
        try:
            fn("1" + suffix)
            ok += suffix
        except (ValueError, argparse.ArgumentTypeError, KeyError):
            pass
    return ok


def describe_type(fn: Any) -> tuple[str | None, bool]:
    """A type callable → ``(descriptor, optional)``; optional means ``""``/``"None"`` read as None."""
    if fn is None:
        return None, False
    qual = getattr(fn, "__qualname__", type(fn).__name__)
    if qual.endswith("_optional_type"):
        inner, _ = describe_type(_closure(fn).get("return_type"))
        if inner == "json" and "nullable_kvs" in _source(fn):
            inner = "json_kvs"
        return inner, True
    if qual.endswith("_parse_type"):
        return describe_type(_closure(fn).get("return_type"))
    builtin = {int: "int", float: "float", str: "str", bool: "bool", json.loads: "json"}
    if fn in builtin:
        return builtin[fn], False
    return _describe_function(fn, qual), False


def _describe_function(fn: Any, qual: str) -> str:
    name = getattr(fn, "__name__", "")
    if name in ("human_readable_int", "human_readable_int_or_auto"):
        kind = "human_int_or_auto" if name.endswith("_or_auto") else "human_int"
        return f"{kind}:{_probe_human(fn)}"
    if name == "union_dict_and_str":
        return "dict_or_str"
    if name == "parse_reasoning_parser":
        return "reasoning_parser"
    if name == "parse_dataclass":
        cls = _closure(fn).get("cls") or (fn.__defaults__ or (None,))[0]
        expand = "_expand_json_human_readable_numbers" in _source(fn)
        return f"{'config_hr' if expand else 'config'}:{getattr(cls, '__name__', '?')}"
    if qual.endswith(".from_cli") or qual.endswith(".from_json"):
        owner, method = qual.rsplit(".", 1)
        return f"{method}:{owner}"
    source = _source(fn)
    if name == "<lambda>" and '.lower().replace("-", "_")' in source.replace("'", '"'):
        return "lower_underscore"
    if name == "<lambda>" and "isdigit()" in source and 'split(",")' in source.replace("'", '"'):
        return "device_ids"
    raise ValueError(f"unknown argument type {qual!r} ({getattr(fn, '__module__', '?')}): teach schema_gen")


def _config_class(fn: Any) -> Any:
    """The config class a JSON-valued argument's type builds, or None."""
    qual = getattr(fn, "__qualname__", type(fn).__name__)
    if qual.endswith(("_optional_type", "_parse_type")):
        return _config_class(_closure(fn).get("return_type"))
    if getattr(fn, "__name__", "") == "parse_dataclass":
        return _closure(fn).get("cls") or (fn.__defaults__ or (None,))[0]
    if qual.endswith((".from_cli", ".from_json")):
        return getattr(fn, "__self__", None)
    return None


def config_fields(fn: Any) -> list[str] | None:
    """The top-level keys a config argument accepts, when this vLLM refuses the others (a
    pydantic config that forbids extra keys); None when unknown keys are dropped or it is no
    config argument."""
    cls = _config_class(fn)
    if cls is None:
        return None
    try:
        fn('{"costwarden_probe_unknown_key": 1}')
        return None  # accepted: unknown keys are dropped
    except Exception:  # noqa: BLE001 - whatever the class raises, vLLM refuses the argument
        pass
    names: set[str] = set()
    fields = getattr(cls, "__pydantic_fields__", None) or getattr(cls, "model_fields", None)
    if isinstance(fields, dict):
        for name, info in fields.items():
            if getattr(info, "init", None) is not False:
                names.add(name)
                names.update(a for a in (getattr(info, "alias", None), getattr(info, "validation_alias", None))
                             if isinstance(a, str))
    elif dataclasses.is_dataclass(cls):
        names = {f.name for f in dataclasses.fields(cls) if f.init}
    return sorted(names) or None


def _fields_entry(fn: Any) -> dict[str, Any]:
    fields = config_fields(fn)
    return {} if fields is None else {"fields": fields}


# --- actions --------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """A default as JSON: config objects become ``{"$config": ClassName}`` (vLLM builds them
    from the class defaults), enums their value, sets and tuples lists."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) or hasattr(value, "model_dump"):
        return {"$config": type(value).__name__}
    return {"$repr": repr(value)}


def _action_kind(action: argparse.Action) -> str:
    name = type(action).__name__
    kinds = {
        "_StoreAction": "store",
        "_StoreTrueAction": "store_true",
        "_StoreFalseAction": "store_false",
        "_StoreConstAction": "store_const",
        "_AppendAction": "append",
        "_AppendConstAction": "append_const",
        "_CountAction": "count",
        "_HelpAction": "help",
        "_VersionAction": "version",
        "BooleanOptionalAction": "boolean",
        "EnableDisableAction": "enable_disable",
        "LoRAParserAction": "lora",
        "PromptAdapterParserAction": "prompt_adapter",
        "StoreBoolean": "store_boolean",
    }
    if name in kinds:
        return kinds[name]
    if "Deprecated" in name and isinstance(action, argparse.Action) and action.nargs is None:
        return "store"  # warns, then stores like a plain argument
    raise ValueError(f"unknown argparse action {name} for {action.dest}: teach schema_gen")


def _deprecation(action: argparse.Action, deprecated: set[Any]) -> str | None:
    help_text = " ".join((action.help or "").split())
    flagged = action in deprecated or getattr(action, "deprecated", False) or "Deprecated" in type(action).__name__
    sentences = [s.strip() for s in help_text.split(". ") if s.strip()]
    marked = [s for s in sentences if _DEPRECATION.search(s)]
    if not flagged and not marked:
        return None
    if "allow-deprecated" in " ".join(action.option_strings):
        return None  # --allow-deprecated-quantization is not itself deprecated
    return (marked[0] if marked else "deprecated").rstrip(".")[:240]


def describe_action(action: argparse.Action, parser: Any, deprecated: set[Any]) -> dict[str, Any]:
    kind = _action_kind(action)
    entry: dict[str, Any] = {"dest": action.dest}
    if action.option_strings:
        # Every string the parser answers to, hidden ones (--no-enable-x) included: argparse
        # matches abbreviations against all of them.
        registered = [s for s, a in parser._option_string_actions.items() if a is action]
        entry["options"] = list(dict.fromkeys([*action.option_strings, *registered]))
    else:
        entry["positional"] = True
    entry["action"] = kind
    negatives = getattr(action, "negative_option_strings", None)
    if kind == "boolean":
        negatives = [o for o in action.option_strings if o.startswith("--no-")]
    if negatives:
        entry["negatives"] = sorted(negatives)
    type_name, optional = describe_type(action.type)
    if type_name is not None:
        entry["type"] = type_name
    if optional:
        entry["optional"] = True
    entry.update(_fields_entry(action.type))
    if action.nargs is not None and kind not in ("store_true", "store_false", "boolean", "enable_disable", "help",
                                                 "version"):
        entry["nargs"] = action.nargs
    if action.const is not None and kind not in ("store_true", "store_false"):
        entry["const"] = _jsonable(action.const)
    if action.choices is not None:
        entry["choices"] = [_jsonable(c) for c in action.choices]
    if kind not in ("help", "version"):
        entry["default"] = _jsonable(action.default)
    if action.required:
        entry["required"] = True
    note = _deprecation(action, deprecated)
    if note:
        entry["deprecated"] = note
    return entry


# --- what FlexibleArgumentParser does before argparse -----------------------------------------


def semantics(flexible: Any) -> dict[str, Any]:
    """The pre-argparse behaviour of this version's FlexibleArgumentParser, read off its source."""
    parse = _source(flexible.parse_args)
    loader = getattr(flexible, "load_config_file", None) or flexible._load_config_file
    load = _source(loader)
    pull = _source(flexible._pull_args_from_config)
    if '"--no-' in load.replace("'", '"') or "no_key" in load:
        config_false = "no_flag"
    elif "store_boolean_arguments" in load:
        config_false = "store_boolean"
    else:
        config_false = "nothing"
    if "--optimization-level" in parse:
        opt = "optimization_level"
    elif "-O.level" in parse:
        opt = "dotted_level"
    else:
        opt = "split"
    return {
        "serve_model_option": "move" if "model_idx" in parse else "error",
        "serve_model_check": "served" if "served[-_]model[-_]name" in parse else None,
        "config_false": config_false,
        "config_list": "isinstance(value, list)" in load,
        "config_dict": "json" if "json.dumps(value)" in load else "str",
        "config_no_subcommand": "args[0].startswith" in pull,
        "snapshot_create": "snapshot" in pull,
        "dotted_json": "create_nested_dict" in parse,
        "dotted_human_int": "human_readable_int" in parse,
        "duplicate_warning": "regular_args_seen" in parse,
        "underscore": "first_segment" if "(?<=--)[^\\.]*" in parse else "whole",
        "opt_level": opt,
    }


def generate(v: dict[str, Any] | None = None) -> dict[str, Any]:
    """The table of the installed vLLM, as a JSON-ready dict."""
    v = v or load_vllm()
    top, serve, flat = build_parsers(v)
    deprecated = set(getattr(serve, "_deprecated", ()) or ()) | set(
        getattr(v["FlexibleArgumentParser"], "_deprecated", ()) or ()
    )
    arguments = [describe_action(a, serve, deprecated) for a in serve._actions]
    flat_dests = {a.dest for a in flat._actions}
    serve_dests = {a.dest for a in serve._actions}
    return {
        "schema": SCHEMA_VERSION,
        "vllm_version": v["version"],
        "python": platform.python_version(),
        "generated_by": "python -m costwarden.adapters.vllm.schema_gen",
        "semantics": semantics(v["FlexibleArgumentParser"]),
        "top_options": sorted(top._option_string_actions),
        "flat_only": sorted(flat_dests - serve_dests),
        "serve_only": sorted(serve_dests - flat_dests),
        "arguments": arguments,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--out", help="write the table here (default: stdout)")
    ns = ap.parse_args(argv)
    table = generate()
    text = json.dumps(table, indent=None, separators=(",", ":"), sort_keys=False)
    # One argument per line: small, and diffs between versions stay readable.
    text = text.replace(',{"dest"', ',\n{"dest"').replace('"arguments":[{', '"arguments":[\n{')
    if ns.out:
        Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.out).write_text(text + "\n", encoding="utf-8")
        print(f"vLLM {table['vllm_version']}: {len(table['arguments'])} arguments -> {ns.out}", file=sys.stderr)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
