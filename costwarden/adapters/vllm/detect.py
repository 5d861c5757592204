"""Find vLLM servers and turn them into ``serving_config`` subjects.

Sources: containers of any workload the Kubernetes adapter knows (a ``Resource`` with its ``raw``
object and ``pod_spec_pointers``), KServe ``InferenceService`` model args, the production-stack
operator's ``VLLMRuntime``, production-stack Helm values (``servingEngineSpec.modelSpec[]``) and
plain ``vllm serve --config`` files::

    >>> from costwarden.adapters.kubernetes import subjects_from_object
    >>> dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "llm"},
    ...        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "vllm",
    ...        "image": "vllm/vllm-openai:v0.11.0", "command": ["vllm", "serve", "Qwen/Qwen3-8B"],
    ...        "args": ["-tp", "2"], "resources": {"limits": {"nvidia.com/gpu": 4}}}]}}}}
    >>> [(s.model, s.args["tensor_parallel_size"], s.gpus, s.replicas)
    ...  for s in serving_configs_from_resource(subjects_from_object(dep)[0])]
    [('Qwen/Qwen3-8B', 2, 4.0, 2)]

A container runs vLLM when its command line does (``vllm serve``, the api_server module, inside
``sh -c``), or when it has no command and its image is a vLLM OpenAI image (whose entrypoint is
``vllm serve`` from 0.15, the api_server module before). ``$(VAR)`` in command and args is
expanded from the container's literal ``env`` values, as the kubelet does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from costwarden.adapters.kubernetes_workloads import container_gpus
from costwarden.adapters.vllm.command import VllmInvocation, expand_kubernetes, find_invocation
from costwarden.adapters.vllm.diagnostics import Diagnostic
from costwarden.adapters.vllm.parser import Resolution, parse_argv, parse_config_file, resolve_invocation
from costwarden.adapters.vllm.table import image_entrypoint_is_serve, load_table, pick_version, version_from_hint
from costwarden.engine.patch import resolve
from costwarden.engine.subjects import Resource, ServingConfig, SourceLocation

PARAMS_TAG = "costwarden.dev/params-b"
_CLI_MODEL = "MODEL"  # stands for the model a config file is served with
VERSION_TAG = "costwarden.dev/vllm-version"
GPU_TYPE_LABELS = ("cloud.google.com/gke-accelerator", "nvidia.com/gpu.product",
                   "karpenter.k8s.aws/instance-gpu-name", "karpenter.azure.com/sku-gpu-name")
_EMPTY: Mapping[str, Any] = {}


@dataclass(frozen=True, slots=True)
class Detected:
    """A serving-config subject and the resolution (with its diagnostics) it came from."""

    subject: ServingConfig
    resolution: Resolution
    argv: tuple[str, ...] = ()  # what was resolved: the words after `vllm serve` / the module
    mode: str = "serve"


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else _EMPTY


def _words(value: Any) -> list[str] | None:
    if isinstance(value, list):
        return [str(v) for v in value]
    return None


def _env(container: Mapping[str, Any]) -> dict[str, str]:
    env = container.get("env")
    out: dict[str, str] = {}
    for item in env if isinstance(env, list) else ():
        item = _map(item)
        if isinstance(item.get("name"), str) and "value" in item and item["value"] is not None:
            out[item["name"]] = str(item["value"])
    return out


def is_vllm_image(image: str) -> bool:
    """``vllm/vllm-openai:...`` and rebuilds of it (``lmcache/vllm-openai``, ``.../vllm-openai:tag``)."""
    name = image.rsplit("@", 1)[0].rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    return "vllm-openai" in name.rsplit("/", 1)[-1]


def version_hint(image: str) -> str | None:
    """The vLLM version an image tag names, for images that carry vLLM's version in the tag
    (``vllm/vllm-openai:v0.11.0``, ``aibrix/vllm-openai:v0.7.3...``); LMCache's and ROCm's
    images tag their own versions, and other images (``ubuntu:22.04``) say nothing about vLLM."""
    name = image.rsplit("@", 1)[0]
    repo = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    if "vllm" not in repo.rsplit("/", 1)[-1] or "lmcache/" in repo or "rocm/" in repo:
        return None
    return version_from_hint(image)


def container_invocation(container: Mapping[str, Any], default_command: Sequence[str] = ()
                         ) -> VllmInvocation | None:
    """The vLLM invocation a container runs, if any. ``default_command`` is what runs when the
    container sets no command (a CRD's preset), before the image's entrypoint is considered."""
    image = str(container.get("image") or "")
    env = _env(container)
    unresolved: list[str] = []
    command = [expand_kubernetes(w, env, unresolved) for w in _words(container.get("command")) or []]
    args = [expand_kubernetes(w, env, unresolved) for w in _words(container.get("args")) or []]
    if command or default_command:
        found = find_invocation((command or list(default_command)) + args, env)
    elif is_vllm_image(image):
        hint = version_hint(image)
        mode = "serve" if image_entrypoint_is_serve(hint, pick_version(hint)[0]) else "api_server"
        found = VllmInvocation(mode, args)
    else:
        found = find_invocation(args, env) if args and "vllm" in " ".join(args) else None
    if found is None:
        return None
    return VllmInvocation(found.mode, found.argv, tuple(dict.fromkeys([*unresolved, *found.unresolved])))


def _params_b(tags: Mapping[str, str]) -> float | None:
    try:
        return float(tags[PARAMS_TAG]) if PARAMS_TAG in tags else None
    except ValueError:
        return None


def _subject(resolution: Resolution, *, name: str, namespace: str | None, tags: Mapping[str, str], gpus: float,
             gpu_type: str | None, replicas: int, version: str | None, source: SourceLocation,
             raw: Mapping[str, Any] | None, kind: str = "vllm") -> ServingConfig:
    return ServingConfig(
        model=resolution.model or str(resolution.args.get("model_tag") or ""),
        engine="vllm",
        engine_version=version or resolution.version,
        args=resolution.args,
        gpus=gpus,
        gpu_type=gpu_type,
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


# --- Kubernetes workloads -----------------------------------------------------------------------


def detect_in_resource(resource: Resource) -> list[Detected]:
    """Every vLLM container in a workload, with resolutions (diagnostics included)."""
    raw = resource.raw
    if not isinstance(raw, Mapping):
        return []
    out: list[Detected] = []
    multi_pod = len(resource.pod_spec_pointers) > 1
    for spec_pointer in resource.pod_spec_pointers:
        spec = _map(resolve(raw, spec_pointer))
        for key in ("containers", "initContainers"):
            containers = spec.get(key)
            for i, container in enumerate(containers if isinstance(containers, list) else ()):
                found = _from_container(resource, _map(container), f"{spec_pointer}/{key}/{i}", multi_pod)
                if found:
                    out.append(found)
    out += _inference_service(resource)
    out += _vllm_runtime(resource)
    return out


def _from_container(resource: Resource, container: Mapping[str, Any], pointer: str, multi_pod: bool
                    ) -> Detected | None:
    found = container_invocation(container, _preset_command(resource, container))
    if found is None:
        return None
    hint = resource.tags.get(VERSION_TAG) or version_hint(str(container.get("image") or ""))
    file, line = resource.source.file, resource.source.line
    resolution = _resolve_cached(found, hint, file, line)
    # A group of pods (LeaderWorkerSet, Ray head + workers) shares one engine: judge the group.
    gpus = resource.workload.gpus if multi_pod else container_gpus(container)
    name = resource.name if not container.get("name") else f"{resource.name}/{container['name']}"
    source = SourceLocation(file, line, (resource.source.pointer or "") + pointer)
    subject = _subject(resolution, name=name, namespace=resource.namespace, tags=resource.tags, gpus=gpus,
                       gpu_type=resource.workload.gpu_type, replicas=resource.workload.replicas,
                       version=hint, source=source, raw=container)
    return Detected(subject, resolution, tuple(found.argv), found.mode)


_RESOLVED: dict[tuple[Any, ...], Resolution] = {}
_RESOLVED_LIMIT = 4096


def _resolve_cached(found: VllmInvocation, hint: str | None, file: str | None, line: int | None) -> Resolution:
    """Parsing is most of a vLLM Deployment's cost and admission sees the same command lines over
    and over (every replica set, every update): resolve each distinct one once. Resolutions are
    read-only once built; the cache is bounded and keyed by everything the result depends on."""
    key = (found.mode, tuple(found.argv), found.unresolved, hint, file, line)
    cached = _RESOLVED.get(key)
    if cached is None:
        cached = resolve_invocation(found, hint, file=file, line=line, read_file=_no_file)
        if len(_RESOLVED) < _RESOLVED_LIMIT:
            _RESOLVED[key] = cached
    return cached


def _preset_command(resource: Resource, container: Mapping[str, Any]) -> list[str]:
    """KServe ``LLMInferenceService``: the ``main`` container's command comes from KServe's preset
    (``vllm serve /mnt/models --served-model-name <spec.model.name>``)."""
    if resource.kind != "LLMInferenceService" or container.get("name") != "main":
        return []
    model = _map(_map((resource.raw or _EMPTY).get("spec")).get("model"))
    return ["vllm", "serve", str(model.get("name") or "/mnt/models")]


def _no_file(path: str) -> str | None:
    return None  # a --config inside a container names a file in the container


def _inference_service(resource: Resource) -> list[Detected]:
    """KServe ``InferenceService`` whose predictor model is served by a vLLM runtime: the model's
    args are appended to the runtime's (``python -m vllm.entrypoints.openai.api_server``)."""
    raw = resource.raw or _EMPTY
    model = _map(_map(_map(raw.get("spec")).get("predictor")).get("model"))
    fmt = str(_map(model.get("modelFormat")).get("name") or "").lower()
    runtime = str(model.get("runtime") or "").lower()
    if resource.kind != "InferenceService" or not model or "vllm" not in (fmt + runtime):
        return []
    if model.get("command"):
        return []  # a command is a container we already read
    args = ["--model", "/mnt/models", *(_words(model.get("args")) or [])]
    resolution = parse_argv(args, model.get("runtimeVersion") or None, mode="api_server",
                            file=resource.source.file, line=resource.source.line, read_file=_no_file)
    source = SourceLocation(resource.source.file, resource.source.line, "/spec/predictor/model")
    subject = _subject(resolution, name=resource.name, namespace=resource.namespace, tags=resource.tags,
                       gpus=container_gpus(model), gpu_type=resource.workload.gpu_type,
                       replicas=resource.workload.replicas, version=None, source=source, raw=model)
    return [Detected(subject, resolution, tuple(args), "api_server")]


_RUNTIME_FLAGS = {  # VLLMRuntime field → flag (the operator's mapping; booleans emit --x / --no-x)
    "maxModelLen": "--max-model-len", "dtype": "--dtype", "maxNumSeqs": "--max-num-seqs",
    "tensorParallelSize": "--tensor-parallel-size", "gpuMemoryUtilization": "--gpu-memory-utilization",
    "maxLoras": "--max-loras", "enablePrefixCaching": "--enable-prefix-caching",
    "enableChunkedPrefill": "--enable-chunked-prefill",
}


def _vllm_runtime(resource: Resource) -> list[Detected]:
    if resource.kind != "VLLMRuntime":
        return []
    spec = _map((resource.raw or _EMPTY).get("spec"))
    model, config = _map(spec.get("model")), _map(spec.get("vllmConfig"))
    argv = [str(model.get("modelURL") or "")]
    for fields in (model, config):
        for key, flag in _RUNTIME_FLAGS.items():
            if key in fields:
                argv += _flag(flag, fields[key])
    argv += _words(config.get("extraArgs")) or []
    image = version_hint(str(_map(_map(spec.get("deploymentConfig")).get("image")).get("name") or ""))
    resolution = parse_argv(argv, image, file=resource.source.file, line=resource.source.line, read_file=_no_file)
    source = SourceLocation(resource.source.file, resource.source.line, "/spec/vllmConfig")
    subject = _subject(resolution, name=resource.name, namespace=resource.namespace, tags=resource.tags,
                       gpus=resource.workload.gpus, gpu_type=resource.workload.gpu_type,
                       replicas=resource.workload.replicas, version=image, source=source, raw=spec)
    return [Detected(subject, resolution, tuple(argv))]


def _flag(flag: str, value: Any) -> list[str]:
    if isinstance(value, bool):
        return [flag] if value else ["--no-" + flag[2:]]
    return [flag, _go_string(value)]


def _go_string(value: Any) -> str:
    """A Helm ``| quote`` of a YAML scalar: ints and floats as Go prints them."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def serving_configs_from_resource(resource: Resource) -> list[ServingConfig]:
    """The ``serving_config`` subjects of one Kubernetes workload (none when it runs no vLLM)."""
    return [d.subject for d in detect_in_resource(resource)]


# --- production-stack Helm values ---------------------------------------------------------------


def helm_model_argv(spec: Mapping[str, Any], container_port: Any = 8000) -> list[str]:
    """The ``vllm serve`` words the production-stack chart renders for one ``modelSpec`` (its
    ``deployment-vllm-multi.yaml``): prefix caching is turned *off* unless
    ``vllmConfig.enablePrefixCaching`` is true."""
    argv = [str(spec.get("modelURL") or ""), "--host", "0.0.0.0", "--port", _go_string(container_port)]
    if spec.get("enableLoRA"):
        argv.append("--enable-lora")
    if spec.get("enableTool"):
        argv.append("--enable-auto-tool-choice")
    if spec.get("toolCallParser"):
        argv += ["--tool-call-parser", str(spec["toolCallParser"])]
    config = spec.get("vllmConfig")
    if isinstance(config, Mapping) and config:
        if "enableChunkedPrefill" in config:
            argv.append("--enable-chunked-prefill" if config["enableChunkedPrefill"] else "--no-enable-chunked-prefill")
        argv.append("--enable-prefix-caching" if config.get("enablePrefixCaching") else "--no-enable-prefix-caching")
        for key, flag in (("maxModelLen", "--max-model-len"), ("dtype", "--dtype"),
                          ("tensorParallelSize", "--tensor-parallel-size"), ("maxNumSeqs", "--max-num-seqs"),
                          ("gpuMemoryUtilization", "--gpu_memory_utilization"), ("maxLoras", "--max_loras")):
            if key in config:
                argv += [flag, _go_string(config[key])]
        argv += [str(a) for a in config.get("extraArgs") or []]
    lmcache = _map(spec.get("lmcacheConfig"))
    if lmcache.get("enabled"):
        role = lmcache.get("kvRole") or "kv_both"
        v0 = isinstance(config, Mapping) and str(config.get("v0")) == "1" and "enablePD" not in lmcache
        connector = "LMCacheConnector" if v0 else "LMCacheConnectorV1"
        argv += ["--kv-transfer-config", f'{{"kv_connector":"{connector}","kv_role":"{role}"}}']
    if spec.get("chatTemplate"):
        argv += ["--chat-template", f"/templates/{spec['chatTemplate']}"]
    return argv


def _helm_gpus(spec: Mapping[str, Any]) -> tuple[float, str | None]:
    resource = str(spec.get("requestGPUType") or "nvidia.com/gpu")
    count = spec.get("requestGPU") or 0
    gpus = container_gpus({"resources": {"limits": {resource: count}}}) if resource.count("/") == 1 else 0.0
    gpu_type = resource.removeprefix("nvidia.com/") if "mig-" in resource else None
    if resource not in ("nvidia.com/gpu", "amd.com/gpu") and "mig-" not in resource:
        gpu_type, gpus = resource, float(count) if isinstance(count, (int, float)) else 0.0
    return gpus, gpu_type or _helm_gpu_label(spec)


def _helm_gpu_label(spec: Mapping[str, Any]) -> str | None:
    selector = _map(spec.get("nodeSelector"))
    for key in GPU_TYPE_LABELS:
        if selector.get(key):
            return str(selector[key])
    for term in spec.get("nodeSelectorTerms") or []:
        for expr in _map(term).get("matchExpressions") or []:
            expr = _map(expr)
            if expr.get("key") in GPU_TYPE_LABELS and expr.get("operator") == "In" and expr.get("values"):
                return str(expr["values"][0])
    return None


def detect_in_helm_values(doc: Mapping[str, Any], file: str | None = None, *, text: str | None = None
                          ) -> list[Detected]:
    """Every ``servingEngineSpec.modelSpec[]`` of production-stack Helm values."""
    engine = _map(doc.get("servingEngineSpec"))
    specs = engine.get("modelSpec")
    if not isinstance(specs, list) or engine.get("enableEngine") is False:
        return []
    lines = _item_lines(text, ("servingEngineSpec", "modelSpec")) if text else {}
    labels = {str(k): str(v) for k, v in _map(engine.get("labels")).items()}
    out: list[Detected] = []
    for i, spec in enumerate(specs):
        spec = _map(spec)
        if not spec or spec.get("enabled") is False:
            continue
        image = version_hint(f"{spec.get('repository') or ''}:{spec.get('tag') or ''}")
        argv = helm_model_argv(spec, engine.get("containerPort", 8000))
        line = lines.get(i)
        resolution = parse_argv(argv, image, file=file, line=line, read_file=_no_file)
        gpus, gpu_type = _helm_gpus(spec)
        tags = {**labels, "model": str(spec.get("name") or ""),
                **{str(k): str(v) for k, v in _map(spec.get("podLabels")).items()}}
        replicas = spec.get("replicaCount", 1)
        source = SourceLocation(file, line, f"/servingEngineSpec/modelSpec/{i}")
        subject = _subject(resolution, name=str(spec.get("name") or i), namespace=None, tags=tags, gpus=gpus,
                           gpu_type=gpu_type, replicas=replicas if isinstance(replicas, int) else 1,
                           version=image, source=source, raw=spec, kind="helm/modelSpec")
        out.append(Detected(subject, resolution, tuple(argv)))
    return out


def serving_configs_from_helm_values(doc: Mapping[str, Any], file: str | None = None, *,
                                     text: str | None = None) -> list[ServingConfig]:
    """production-stack Helm values → one ``serving_config`` per enabled ``modelSpec``."""
    return [d.subject for d in detect_in_helm_values(doc, file, text=text)]


def is_helm_values(doc: Any) -> bool:
    return isinstance(doc, Mapping) and isinstance(_map(doc.get("servingEngineSpec")).get("modelSpec"), list)


def _item_lines(text: str, path: Sequence[str]) -> dict[int, int]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    for key in path:
        if not isinstance(node, yaml.MappingNode):
            return {}
        node = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
    if not isinstance(node, yaml.SequenceNode):
        return {}
    return {i: item.start_mark.line + 1 for i, item in enumerate(node.value)}


# --- plain config files -------------------------------------------------------------------------


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
    subject = _subject(resolution, name=path.rsplit("/", 1)[-1], namespace=None, tags={}, gpus=0.0, gpu_type=None,
                       replicas=1, version=None, source=SourceLocation(path, 1, ""), raw=None, kind="config-file")
    return Detected(subject, resolution, (*([] if has_model else [_CLI_MODEL]), "--config", path))


def serving_config_from_config_file(path: str, *, version: str | None = None, text: str | None = None
                                    ) -> ServingConfig:
    """A ``vllm serve --config`` YAML file → its ``serving_config`` (GPUs unknown: 0)."""
    return detect_in_config_file(path, version=version, text=text).subject


__all__ = [
    "Detected",
    "container_invocation",
    "detect_in_config_file",
    "detect_in_helm_values",
    "detect_in_resource",
    "helm_model_argv",
    "is_helm_values",
    "is_vllm_config_file",
    "is_vllm_image",
    "serving_config_from_config_file",
    "serving_configs_from_helm_values",
    "serving_configs_from_resource",
]
