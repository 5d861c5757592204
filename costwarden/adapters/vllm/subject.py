"""A resolution → a ``serving_config`` subject, the same for every source (containers, CRDs, Helm
values, config files).

A ``--config`` file that could not be read leaves every argument the command line did not set
unknown: those are ``None`` in the subject's ``args`` and ``args["config"]`` names the file, so
rules say "cannot judge" instead of judging vLLM's defaults. Otherwise ``args["config"]`` is
``None``: for ``--config=FILE`` vLLM's namespace keeps the name but loads nothing, so its defaults
are what runs (the resolution warns about that form).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from costwarden.adapters.vllm.resolution import Resolution
from costwarden.engine.subjects import ServingConfig, SourceLocation

PARAMS_TAG = "costwarden.dev/params-b"
VERSION_TAG = "costwarden.dev/vllm-version"
EMPTY: Mapping[str, Any] = {}


@dataclass(frozen=True, slots=True)
class Detected:
    """A serving-config subject and the resolution (with its diagnostics) it came from."""

    subject: ServingConfig
    resolution: Resolution
    argv: tuple[str, ...] = ()  # what was resolved: the words after `vllm serve` / the module
    mode: str = "serve"


def as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else EMPTY


def words(value: Any) -> list[str] | None:
    if isinstance(value, list):
        return [str(v) for v in value]
    return None


def no_file(path: str) -> str | None:
    return None  # a --config inside a container names a file in the container


def _params_b(tags: Mapping[str, str]) -> float | None:
    try:
        return float(tags[PARAMS_TAG]) if PARAMS_TAG in tags else None
    except ValueError:
        return None


def known_args(resolution: Resolution) -> dict[str, Any]:
    """The arguments as far as they are known: with an unread ``--config`` file, only what the
    command line set (it wins over the file); the rest may come from the file."""
    if resolution.unread_config is None:
        return {**resolution.args, "config": None} if resolution.args.get("config") else resolution.args
    known = {k: (v if k in resolution.explicit else None) for k, v in resolution.args.items()}
    known["config"] = resolution.unread_config
    return known


def build_subject(resolution: Resolution, *, name: str, namespace: str | None, tags: Mapping[str, str],
                  gpus: float, gpu_type: str | None, replicas: int, version: str | None, source: SourceLocation,
                  raw: Mapping[str, Any] | None, kind: str = "vllm",
                  neuron_cores: tuple[float, ...] = ()) -> ServingConfig:
    return ServingConfig(
        model=resolution.model or str(resolution.args.get("model_tag") or ""),
        engine="vllm",
        engine_version=version or resolution.version,
        args=known_args(resolution),
        gpus=gpus,
        gpu_type=gpu_type,
        neuron_cores=neuron_cores,
        replicas=replicas,
        params_b=_params_b(tags),
        kind=kind,
        name=name,
        namespace=namespace,
        tags=tags,
        deprecated_args=resolution.deprecated_args,
        arg_errors=tuple(d.render() for d in resolution.diagnostics if d.severity == "error"
                         and d.code != "deprecated-argument"),  # a removed argument: vLLM exits
        source=source,
        raw=raw,
    )


__all__ = ["PARAMS_TAG", "VERSION_TAG", "Detected", "as_map", "build_subject", "known_args", "no_file", "words"]
