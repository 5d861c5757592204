"""Resolve arguments with vLLM's own parser (``vllm`` must be importable): exact mode and the
oracle of the parity tests. Imports only the standard library and vLLM.

The parsers are built as ``vllm serve`` and the api_server module build them
(:func:`.schema_gen.build_parsers`); argparse's ``parse_args`` is swapped for
``parse_known_args`` while parsing so unknown arguments are reported next to the namespace
rather than ending the process, and ``error()`` raises instead of exiting. Values are made
JSON-ready: config objects become ``{"$type": name, ...fields}``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import enum
import io
from collections.abc import Iterator
from functools import cache
from typing import Any

from costwarden.adapters.vllm import schema_gen


class _Refused(Exception):
    pass


@cache
def _parsers() -> tuple[Any, Any, str]:
    v = schema_gen.load_vllm()
    top, _serve, flat = schema_gen.build_parsers(v)
    return top, flat, str(v["version"])


@contextlib.contextmanager
def _lenient() -> Iterator[dict[str, Any]]:
    seen: dict[str, Any] = {"extras": []}
    original_parse, original_error = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.error

    def parse_args(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> Any:
        ns, extras = self.parse_known_args(args, namespace)
        seen["extras"] = list(extras)
        return ns

    def error(self: argparse.ArgumentParser, message: str) -> Any:
        raise _Refused(message)

    argparse.ArgumentParser.parse_args = parse_args  # type: ignore[method-assign]
    argparse.ArgumentParser.error = error  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        argparse.ArgumentParser.parse_args = original_parse  # type: ignore[method-assign]
        argparse.ArgumentParser.error = original_error  # type: ignore[method-assign]


def jsonable(value: Any) -> Any:
    """A namespace value as JSON data (config objects as ``{"$type": ..., fields...}``)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=repr)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
        return {"$type": type(value).__name__, **{k: jsonable(v) for k, v in fields.items()}}
    if hasattr(value, "model_dump"):
        return {"$type": type(value).__name__, **jsonable(value.model_dump())}
    return {"$repr": repr(value)}


def resolve(argv: list[str], mode: str = "serve") -> dict[str, Any]:
    """``{"version", "args", "unrecognized", "error"}`` as vLLM's parser resolves ``argv`` (the
    words after ``vllm serve``, or after the api_server module when ``mode="api_server"``)."""
    top, flat, version = _parsers()
    out: dict[str, Any] = {"version": version, "args": None, "unrecognized": [], "error": None}
    sink = io.StringIO()
    try:
        with _lenient() as seen, contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
            ns = top.parse_args(["serve", *argv]) if mode == "serve" else flat.parse_args(list(argv))
    except Exception as exc:  # _Refused, or whatever a type converter raises: vLLM exits either way
        out["error"] = f"{type(exc).__name__}: {exc}"
        return out
    except SystemExit as exc:  # -h, -v
        out["error"] = f"exit {exc.code}"
        return out
    args = {k: v for k, v in vars(ns).items() if k not in ("subparser", "dispatch_function")}
    if mode == "serve" and args.get("model_tag") is not None:
        args["model"] = args["model_tag"]  # what `vllm serve` does first
    out["args"] = {k: jsonable(v) for k, v in args.items()}
    out["unrecognized"] = seen["extras"]
    return out


__all__ = ["jsonable", "resolve"]
