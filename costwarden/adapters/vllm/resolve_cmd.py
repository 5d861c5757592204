"""The body of ``costwarden vllm resolve``: "how will vLLM read this?" answered without a GPU.

::

    costwarden vllm resolve [--vllm-version V] FILE            # manifest, Helm values or config
    costwarden vllm resolve [--vllm-version V] --config FILE   # vllm serve MODEL --config FILE
    costwarden vllm resolve [--vllm-version V] -- ARGV...      # `vllm serve ...`, a shell line, or
                                                               # the words after `vllm serve`

>>> out = resolve(argv=["Qwen/Qwen3-8B", "--max-num-seq", "64"])
>>> out["results"][0]["args"]["max_num_seqs"], out["ok"]
(64, True)

Output: ``{"ok", "results": [{"source", "name", "vllm_version", "entrypoint", "ok", "args",
"explicit", "diagnostics"}]}`` with every argument keyed by vLLM's dest name. A FILE with
several vLLM servers (a multi-document manifest) gives one result per server. A ``--config``
file mounted from a ConfigMap is read from that ConfigMap when any FILE holds its manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from costwarden.adapters.vllm.command import SHELLS
from costwarden.adapters.vllm.detect import (
    Detected,
    detect_in_config_file,
    detect_in_helm_values,
    detect_in_resource,
    is_helm_values,
    is_vllm_config_file,
)
from costwarden.adapters.vllm.mounts import ConfigMaps
from costwarden.adapters.vllm.parser import Resolution, parse_argv, parse_command, parse_config_file
from costwarden.adapters.vllm.wrappers import PROGRAMS, program
from costwarden.errors import AdapterError, UnrecognizedInput

NOTHING_FOUND = "no vLLM server found (no vllm container, Helm modelSpec or vLLM config)"


def resolve(
    paths: Sequence[str | Path] = (),
    version: str | None = None,
    *,
    argv: Sequence[str] | None = None,
    config: str | Path | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """Resolve files (``paths``), a ``--config`` file, or an argument vector, as JSON-ready data.

    ``argv`` may be a whole command (``vllm serve M ...``, ``python -m
    vllm.entrypoints.openai.api_server ...``, ``sh -c "..."``) or just the words after
    ``vllm serve``. Raises :class:`AdapterError` for a file that holds no vLLM configuration."""
    results: list[dict[str, Any]] = []
    if argv is not None:
        results.append(_entry(_resolve_argv(list(argv), version), "argv", None))
    if config is not None:
        results.append(_entry(parse_config_file(str(config), version, model=model), str(config), None))
    read = [(str(path), *_documents(str(path))) for path in paths]
    config_maps = ConfigMaps.from_objects(doc for _, _, documents in read for doc, _, _ in documents)
    for path, text, documents in read:
        found = _detect(path, text, documents, version, config_maps)
        if not found and not (len(read) > 1 and _only_config_maps(documents)):  # given for the others
            raise UnrecognizedInput(NOTHING_FOUND, file=path)
        results += [_entry(d.resolution, path, d.subject.name) for d in found]
    return {"ok": all(r["ok"] for r in results), "results": results}


def _resolve_argv(argv: list[str], version: str | None) -> Resolution:
    """A whole command (argv list or one shell string) when it runs vLLM, else the words after
    ``vllm serve``."""
    command: str | list[str] = argv[0] if len(argv) == 1 and " " in argv[0] else argv
    found = parse_command(command, version) if argv and _launches(argv[0]) else None
    return found if found is not None else parse_argv(argv, version)


def _launches(word: str) -> bool:
    """Whether ``word`` starts a command line (``vllm``, a shell, python, a wrapper such as
    ``timeout``) rather than being the model of ``vllm serve MODEL ...``."""
    name = program(word.split()[0]) if word.strip() else ""
    return name in ("vllm", "eval", *SHELLS, *PROGRAMS) or name.startswith("python") or "=" in name


def _entry(resolution: Resolution, source: str, name: str | None) -> dict[str, Any]:
    return {"source": source, "name": name, **resolution.to_dict()}


def detect_file(path: str, version: str | None = None, config_maps: ConfigMaps | None = None) -> list[Detected]:
    """Every vLLM server a file describes: Kubernetes manifests, production-stack Helm values, or
    a ``vllm serve --config`` YAML file. ``--config`` files mounted from a ConfigMap are read
    from the ConfigMaps in the same file or in ``config_maps``."""
    text, documents = _documents(path)
    found = _detect(path, text, documents, version, config_maps or ConfigMaps())
    if not found:
        raise UnrecognizedInput(NOTHING_FOUND, file=path)
    return found


def _only_config_maps(documents: list[tuple[Any, int, str]]) -> bool:
    return bool(documents) and all(doc.get("kind") == "ConfigMap" for doc, _, _ in documents)


def _documents(path: str) -> tuple[str, list[tuple[Any, int, str]]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AdapterError(f"cannot read: {exc}", file=path) from exc
    from costwarden.adapters.kubernetes import read_manifests

    return text, list(read_manifests(text, path))


def _detect(path: str, text: str, documents: list[tuple[Any, int, str]], version: str | None,
            config_maps: ConfigMaps) -> list[Detected]:
    from costwarden.adapters.kubernetes import subjects_from_object

    config_maps = ConfigMaps({**ConfigMaps.from_objects(d for d, _, _ in documents).data, **config_maps.data})
    out: list[Detected] = []
    for doc, line, pointer in documents:
        if is_helm_values(doc):
            out += detect_in_helm_values(doc, path, text=text)
        elif "kind" in doc and "apiVersion" in doc:
            for resource in subjects_from_object(doc, file=path, line=line, pointer=pointer):
                out += detect_in_resource(resource, config_maps)
        elif is_vllm_config_file(doc, version) and len(documents) == 1:
            out.append(detect_in_config_file(path, version=version, text=text))
    return out


__all__ = ["detect_file", "resolve"]
