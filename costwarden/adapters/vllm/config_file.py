"""Plain ``vllm serve --config`` YAML files: a flat map of vLLM option names to values, served
as ``vllm serve MODEL --config FILE`` (the model may come from the command line, not the file).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from costwarden.adapters.vllm.diagnostics import Diagnostic
from costwarden.adapters.vllm.parser import parse_config_file
from costwarden.adapters.vllm.subject import Detected, build_subject
from costwarden.adapters.vllm.table import load_table, pick_version
from costwarden.engine.subjects import ServingConfig, SourceLocation

_CLI_MODEL = "MODEL"  # stands for the model a config file is served with


def is_vllm_config_file(doc: Any, version: str | None = None) -> bool:
    """A flat YAML map whose keys are (mostly) vLLM options: what ``vllm serve --config`` reads."""
    if not isinstance(doc, Mapping) or not doc or "apiVersion" in doc or "kind" in doc:
        return False
    known = load_table(pick_version(version)[0])["by_dest"]
    keys = [str(k).removeprefix("no-").replace("-", "_") for k in doc]
    hits = sum(1 for k in keys if k in known)
    specific = any(k in known and k not in ("model", "port", "host", "name") for k in keys)
    return specific and hits * 2 >= len(keys)


def detect_in_config_file(path: str, *, version: str | None = None, text: str | None = None) -> Detected:
    """A config file is used as ``vllm serve MODEL --config FILE``; without ``model:`` in it the
    model comes from that command line, unknown here (the subject's ``model`` is empty)."""
    if text is None:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        doc = None
    has_model = isinstance(doc, Mapping) and "model" in doc
    resolution = parse_config_file(path, version, text=text, model=None if has_model else _CLI_MODEL)
    if not has_model:
        resolution.args["model"] = resolution.args["model_tag"] = None
        resolution.explicit -= {"model", "model_tag"}
        resolution.diagnostics.append(Diagnostic(
            "invalid-command", "no `model:` in the file: it comes from `vllm serve MODEL --config FILE`", "info",
            path))
    subject = build_subject(resolution, name=path.rsplit("/", 1)[-1], namespace=None, tags={}, gpus=0.0, gpu_type=None,
                       replicas=1, version=None, source=SourceLocation(path, 1, ""), raw=None, kind="config-file")
    return Detected(subject, resolution, (*([] if has_model else [_CLI_MODEL]), "--config", path))


def serving_config_from_config_file(path: str, *, version: str | None = None, text: str | None = None
                                    ) -> ServingConfig:
    """A ``vllm serve --config`` YAML file → its ``serving_config`` (GPUs unknown: 0)."""
    return detect_in_config_file(path, version=version, text=text).subject


__all__ = ["detect_in_config_file", "is_vllm_config_file", "serving_config_from_config_file"]
