"""Detect what a file holds and turn it into subjects: the one place input types are recognised.

Recognised inputs:

* subject JSON (``{"type": "resource" | "llm_call" | "serving_config", ...}``), one or a list;
* LLM call records ``{"provider": "anthropic" | "openai", "feature", "user", "team", "tags",
  "request": <API request body>, "response": <optional response body>}`` in JSON or JSONL;
* Kubernetes manifests (multi-document YAML or JSON, ``List`` objects);
* Terraform plans (``terraform show -json``).

A vLLM ``--config`` file mounted from a ConfigMap is read from the ConfigMaps of the same input,
and from those :func:`config_maps_in` finds in the other files of a run (``check k8s/`` with the
ConfigMap in k8s/cm.yaml and the Deployment in k8s/deploy.yaml).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costwarden.engine.subjects import SUBJECT_TYPES, LlmCall, SourceLocation, Subject, subject_from_dict
from costwarden.errors import AdapterError, CostwardenError, SubjectError, UnrecognizedInput

if TYPE_CHECKING:
    from costwarden.adapters.vllm.mounts import ConfigMaps

LLM_PROVIDERS = ("anthropic", "openai")


def subjects_from_path(path: str | Path, *, include_all: bool = False) -> list[Subject]:
    """Every subject in a file; raises AdapterError naming the file (and line) on bad input."""
    return subjects_from_text(read_text(path), file=str(path), include_all=include_all)


def read_text(path: str | Path) -> str:
    """An input file's text (see :func:`decode_text`); AdapterError naming the file when unreadable."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise AdapterError(f"cannot read: {exc}", file=str(path)) from exc
    return decode_text(data, str(path))


def decode_text(data: bytes, file: str) -> str:
    """An input file's bytes as text: UTF-8 (a byte order mark dropped), or UTF-16 with its byte order
    mark (what Windows PowerShell's ``>`` writes). Binary data (NUL bytes) is UnrecognizedInput,
    skipped when walking a folder (a git-crypt secret, say); other bytes are an AdapterError."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise AdapterError(f"cannot read: not UTF-16 text ({exc})", file=file) from exc
    if b"\0" in data[:8192]:  # no YAML or JSON text holds a NUL
        raise UnrecognizedInput("a binary file, not text", file=file)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AdapterError(f"cannot read: not UTF-8 text ({exc})", file=file) from exc


def config_maps_in(paths: Iterable[str | Path]) -> ConfigMaps:
    """The ConfigMaps in the given files, for the workloads of the other files to read their
    ``--config`` files from. A cheap first pass over a run's inputs: only the YAML documents that
    say ``kind: ConfigMap`` are parsed (a JSON file that says it, whole); what cannot be read or
    parsed is left to the pass that reports it."""
    from costwarden.adapters.kubernetes import read_manifests
    from costwarden.adapters.vllm.mounts import ConfigMaps

    objects: list[Any] = []
    for path in paths:
        try:
            text = read_text(path)
        except CostwardenError:
            continue
        if not _CONFIG_MAP.search(text):
            continue
        whole = text.lstrip().startswith(("{", "["))
        for chunk in [text] if whole else _DOCUMENT_START.split(text):
            try:
                if _CONFIG_MAP.search(chunk):
                    objects += [obj for obj, _, _ in read_manifests(chunk, str(path))]
            except CostwardenError:
                continue
    return ConfigMaps.from_objects(objects)


_CONFIG_MAP = re.compile(r"""kind["']?\s*:\s*["']?ConfigMap\b""")
_DOCUMENT_START = re.compile(r"^---(?=\s|$)", re.MULTILINE)


def subjects_from_text(text: str, *, file: str = "<stdin>", include_all: bool = False,
                       config_maps: ConfigMaps | None = None) -> list[Subject]:
    """Every subject in an input's text. ``config_maps``: ConfigMaps given with it in other files
    (:func:`config_maps_in`); those of the text itself are always read."""
    text = text.removeprefix("\ufeff")  # a byte order mark (PowerShell's Out-File -Encoding utf8)
    stripped = text.lstrip()
    if file.endswith(".jsonl"):
        return _jsonl(text, file)
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            if stripped.startswith("{") and "\n{" in text.strip():
                return _jsonl(text, file)
            raise AdapterError(f"invalid JSON: {exc.msg}", file=file, line=exc.lineno) from exc
        if isinstance(data, Mapping) and _is_plan(data):
            from costwarden.adapters.terraform import subjects_from_plan_text

            return list(subjects_from_plan_text(text, file=file, include_all=include_all))
        if _is_manifest(data) or (isinstance(data, list) and data and all(map(_is_manifest, data))):
            # `kubectl get -o json`: List objects are expanded into their items, each with its pointer
            from costwarden.adapters.kubernetes import read_manifests

            return _manifest_subjects(list(read_manifests(text, file)), file, config_maps)
        return subjects_from_data(data, file=file, include_all=include_all)
    return _kubernetes(text, file, config_maps)


def _is_manifest(data: Any) -> bool:
    return (
        isinstance(data, Mapping) and "apiVersion" in data and "kind" in data and data.get("type") not in SUBJECT_TYPES
    )


def _is_plan(data: Mapping[str, Any]) -> bool:
    return "format_version" in data and ("planned_values" in data or "resource_changes" in data)


def subjects_from_data(
    data: Any, *, file: str = "<data>", line: int | None = None, include_all: bool = False
) -> list[Subject]:
    """Subjects from already-parsed JSON data of any recognised shape."""
    if isinstance(data, list):
        out: list[Subject] = []
        for item in data:
            out += subjects_from_data(item, file=file, line=line, include_all=include_all)
        return out
    if not isinstance(data, Mapping):
        # no input costwarden knows (a JSON list of names, say): skipped when walking a folder
        raise UnrecognizedInput("expected a JSON object or a list of objects", file=file, line=line)
    if data.get("type") in SUBJECT_TYPES:
        return [_subject(data, file, line)]
    if "request" in data and data.get("provider") in LLM_PROVIDERS:
        return [llm_call_from_record(data, file=file, line=line)]
    if _is_plan(data):
        from costwarden.adapters.terraform import subjects_from_plan

        return list(subjects_from_plan(data, file=file, include_all=include_all))
    if "apiVersion" in data and "kind" in data:
        return kubernetes_object_subjects(data, file=file, line=line)
    raise UnrecognizedInput(
        "unrecognised input: not a subject, an LLM call record, a Terraform plan or a Kubernetes object",
        file=file,
        line=line,
    )


def _subject(data: Mapping[str, Any], file: str, line: int | None) -> Subject:
    try:
        subject = subject_from_dict(data)
    except SubjectError as exc:
        raise AdapterError(f"invalid subject: {exc}", file=file, line=line) from exc
    if subject.source.file is None:
        from costwarden.engine.subjects import replace

        subject = replace(subject, source=SourceLocation(file, line, subject.source.pointer))
    return subject


def llm_call_from_record(record: Mapping[str, Any], *, file: str | None = None, line: int | None = None) -> LlmCall:
    """An LLM call record → an ``llm_call`` subject (post-call when it carries a response)."""
    provider = record.get("provider")
    request = record.get("request")
    if not isinstance(request, Mapping):
        raise AdapterError("'request' must be the API request body (an object)", file=file, line=line)
    tags = record.get("tags") or {}
    if not isinstance(tags, Mapping):
        raise AdapterError("'tags' must be an object", file=file, line=line)
    response = record.get("response")
    kwargs: dict[str, Any] = {
        "feature": _opt_str(record, "feature", file, line),
        "user": _opt_str(record, "user", file, line),
        "team": _opt_str(record, "team", file, line),
        "tags": {str(k): str(v) for k, v in tags.items()},
        "response": response if isinstance(response, Mapping) else None,
        "batch": bool(record.get("batch", False)),
        "source": SourceLocation(file, line, None),
    }
    if provider == "anthropic":
        from costwarden.adapters.anthropic import subject_from_request as anthropic_subject

        return anthropic_subject(request, **kwargs)
    if provider == "openai":
        from costwarden.adapters.openai import subject_from_request as openai_subject

        return openai_subject(request, **kwargs)
    raise AdapterError(f"unknown provider {provider!r}; known: {', '.join(LLM_PROVIDERS)}", file=file, line=line)


def _opt_str(record: Mapping[str, Any], key: str, file: str | None, line: int | None) -> str | None:
    value = record.get(key)
    if value is None or isinstance(value, str):
        return value
    raise AdapterError(f"'{key}' must be a string", file=file, line=line)


def _jsonl(text: str, file: str) -> list[Subject]:
    out: list[Subject] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise AdapterError(f"invalid JSON: {exc.msg}", file=file, line=number) from exc
        out += subjects_from_data(data, file=file, line=number)
    return out


def _kubernetes(text: str, file: str, config_maps: ConfigMaps | None = None) -> list[Subject]:
    import yaml

    from costwarden.adapters.kubernetes import read_manifests

    try:
        documents = read_manifests(text, file)
    except AdapterError as exc:
        cause = exc.__cause__
        if isinstance(cause, yaml.constructor.ConstructorError) and str(cause.problem).startswith(
            "could not determine a constructor for the tag"
        ):
            # Application tags (CloudFormation's !Ref, mkdocs' !!python/name): valid YAML that no
            # Kubernetes manifest holds. Skipped when walking a folder, an error when named.
            raise UnrecognizedInput(f"not a Kubernetes manifest: {cause.problem}", file=file, line=exc.line) from exc
        raise
    objects = [
        (obj, line, pointer)
        for obj, line, pointer in documents
        if isinstance(obj, Mapping) and "kind" in obj and "apiVersion" in obj
    ]
    if not objects:
        if not documents and _empty_lists_only(text):
            return []  # `kubectl get jobs -o yaml` where there are none: nothing to judge, nothing wrong
        return _serving_files(text, file, [obj for obj, _, _ in documents])
    return _manifest_subjects(objects, file, config_maps)


def _manifest_subjects(objects: list[tuple[Any, int, str]], file: str, config_maps: ConfigMaps | None
                       ) -> list[Subject]:
    """The subjects of one input's Kubernetes objects, its ConfigMaps read with ``config_maps``
    (those of the input win: it is what is applied together)."""
    from costwarden.adapters.vllm.mounts import ConfigMaps

    own = ConfigMaps.from_objects(obj for obj, _, _ in objects)
    maps = ConfigMaps({**config_maps.data, **own.data}) if own and config_maps else own or config_maps
    out: list[Subject] = []
    for obj, line, pointer in objects:
        if "kind" in obj and "apiVersion" in obj:
            out += kubernetes_object_subjects(obj, file=file, line=line, pointer=pointer, config_maps=maps)
    return out


def _empty_lists_only(text: str) -> bool:
    """The text holds only ``List`` objects (``PodList``...) with no items."""
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError:
        return False
    return bool(docs) and all(
        isinstance(d, Mapping) and "apiVersion" in d and str(d.get("kind", "")).endswith("List")
        and d.get("items") == []
        for d in docs
    )


def kubernetes_object_subjects(
    obj: Mapping[str, Any], *, file: str | None = None, line: int | None = None, pointer: str = "",
    config_maps: ConfigMaps | None = None,
) -> list[Subject]:
    """The subjects of one Kubernetes object, the same for ``check`` and the admission webhook:
    its ``resource`` and, for every container running vLLM, a ``serving_config`` (``--config``
    files mounted from a ConfigMap in ``config_maps`` read from it)."""
    from costwarden.adapters.kubernetes import subjects_from_object
    from costwarden.adapters.vllm.detect import serving_configs_from_resource

    out: list[Subject] = []
    for resource in subjects_from_object(dict(obj), file=file, line=line, pointer=pointer):
        out.append(resource)
        if resource.raw is not None:
            out += serving_configs_from_resource(resource, config_maps)
    return out


def _serving_files(text: str, file: str, documents: list[Any]) -> list[Subject]:
    """YAML that is not a manifest: vLLM ``--config`` files and production-stack Helm values."""
    from costwarden.adapters.vllm.detect import (
        is_helm_values,
        is_vllm_config_file,
        serving_config_from_config_file,
        serving_configs_from_helm_values,
    )

    out: list[Subject] = []
    for doc in documents:
        if is_helm_values(doc):
            out += serving_configs_from_helm_values(doc, file, text=text)
        elif is_vllm_config_file(doc):
            out.append(serving_config_from_config_file(file, text=text))
    if not out:
        raise UnrecognizedInput("no Kubernetes object, vLLM config or vLLM Helm values in this YAML", file=file, line=1)
    return out


__all__ = [
    "config_maps_in",
    "decode_text",
    "kubernetes_object_subjects",
    "llm_call_from_record",
    "read_text",
    "subjects_from_data",
    "subjects_from_path",
    "subjects_from_text",
]
