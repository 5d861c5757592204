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

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import yaml

from costwarden.adapters.kubernetes import INSTANCE_TYPE_LABELS
from costwarden.adapters.kubernetes_accelerators import (
    ACCELERATOR_RESOURCES,
    ACCELERATOR_TYPE_LABELS,
    MIG_PREFIX,
    accelerator_family,
    container_gpus,
    mig_profile,
    neuron_cores,
    pod_gpus,
)
from costwarden.adapters.vllm.command import VllmInvocation, expand_kubernetes, find_invocation
from costwarden.adapters.vllm.config_file import (
    detect_in_config_file,
    is_vllm_config_file,
    serving_config_from_config_file,
)
from costwarden.adapters.vllm.crd import go_string, inference_service, vllm_runtime
from costwarden.adapters.vllm.diagnostics import Diagnostic
from costwarden.adapters.vllm.mounts import (
    ConfigMaps,
    config_map_at,
    container_path,
    describe_mount,
    mounted_files,
)
from costwarden.adapters.vllm.parser import Resolution, parse_argv, resolve_invocation
from costwarden.adapters.vllm.subject import (
    EMPTY,
    PARAMS_TAG,
    VERSION_TAG,
    Detected,
    as_map,
    build_subject,
    no_file,
    words,
)
from costwarden.adapters.vllm.table import image_entrypoint_is_serve, is_vllm_image, pick_version, version_hint
from costwarden.engine.patch import resolve
from costwarden.engine.subjects import Resource, ServingConfig, SourceLocation

_NO_CONFIG_MAPS = ConfigMaps()


def _env(container: Mapping[str, Any]) -> dict[str, str]:
    env = container.get("env")
    out: dict[str, str] = {}
    for item in env if isinstance(env, list) else ():
        item = as_map(item)
        if isinstance(item.get("name"), str) and "value" in item and item["value"] is not None:
            out[item["name"]] = str(item["value"])
    return out


def container_invocation(container: Mapping[str, Any], default_command: Sequence[str] = ()
                         ) -> VllmInvocation | None:
    """The vLLM invocation a container runs, if any. ``default_command`` is what runs when the
    container sets no command (a CRD's preset), before the image's entrypoint is considered."""
    image = str(container.get("image") or "")
    env = _env(container)
    unresolved: list[str] = []
    command = [expand_kubernetes(w, env, unresolved) for w in words(container.get("command")) or []]
    args = [expand_kubernetes(w, env, unresolved) for w in words(container.get("args")) or []]
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


# --- Kubernetes workloads -----------------------------------------------------------------------


def detect_in_resource(resource: Resource, config_maps: ConfigMaps | None = None) -> list[Detected]:
    """Every vLLM container in a workload, with resolutions (diagnostics included). ``--config``
    files mounted from a ConfigMap in ``config_maps`` are read from it."""
    if not isinstance(resource.raw, Mapping):
        return []
    out: list[Detected] = []
    for spec, pointer, multi_pod, container in _pod_containers(resource):
        found = _from_container(resource, container, _Pod(spec, pointer, multi_pod, config_maps or _NO_CONFIG_MAPS))
        if found:
            out.append(found)
    out += inference_service(resource)
    out += vllm_runtime(resource)
    return out


def _pod_containers(resource: Resource) -> Iterator[tuple[Mapping[str, Any], str, bool, Mapping[str, Any]]]:
    """``(pod spec, container pointer, several pods?, container)`` for every container of a workload."""
    raw = resource.raw
    if not isinstance(raw, Mapping):
        return
    multi_pod = len(resource.pod_spec_pointers) > 1
    for spec_pointer in resource.pod_spec_pointers:
        spec = as_map(resolve(raw, spec_pointer))
        for key in ("containers", "initContainers"):
            containers = spec.get(key)
            for i, container in enumerate(containers if isinstance(containers, list) else ()):
                yield spec, f"{spec_pointer}/{key}/{i}", multi_pod, as_map(container)


def config_maps_to_read(resource: Resource) -> list[str]:
    """The ConfigMaps (names, in the workload's namespace) holding a ``--config`` file one of its
    vLLM containers reads: what the admission webhook reads from the API server, since it sees
    the workload without them."""
    names: list[str] = []
    for spec, _, _, container in _pod_containers(resource):
        found = container_invocation(container, _preset_command(resource, container))
        if found is None:
            continue
        hint = resource.tags.get(VERSION_TAG) or version_hint(str(container.get("image") or ""))
        unread = _resolve_cached(found, hint, resource.source.file, resource.source.line).unread_config
        where = container_path(unread, container) if unread is not None else None
        source = config_map_at(spec, container, where) if where else None
        if source is not None and source[0] not in names:
            names.append(source[0])
    return names


class _Pod:
    """Where a container sits: its pod spec and pointer, and the ConfigMaps its volumes may name."""

    def __init__(self, spec: Mapping[str, Any], pointer: str, multi_pod: bool, config_maps: ConfigMaps) -> None:
        self.spec, self.pointer, self.multi_pod, self.config_maps = spec, pointer, multi_pod, config_maps


def _from_container(resource: Resource, container: Mapping[str, Any], pod: _Pod) -> Detected | None:
    found = container_invocation(container, _preset_command(resource, container))
    if found is None:
        return None
    hint = resource.tags.get(VERSION_TAG) or version_hint(str(container.get("image") or ""))
    file, line = resource.source.file, resource.source.line
    files = mounted_files(pod.spec, container, resource.namespace, pod.config_maps) if pod.config_maps else {}
    resolution = _resolve_cached(found, hint, file, line, _reader(files, container))
    if resolution.unread_config is not None:
        resolution = _explain_unread(resolution, pod.spec, container)
    # A group of pods (LeaderWorkerSet, Ray head + workers) shares one engine: judge the group.
    gpus = resource.workload.gpus if pod.multi_pod else container_gpus(container)
    cores = _group_cores(neuron_cores(container, resource.workload.instance_type), container, gpus)
    name = resource.name if not container.get("name") else f"{resource.name}/{container['name']}"
    source = SourceLocation(file, line, (resource.source.pointer or "") + pod.pointer)
    subject = build_subject(resolution, name=name, namespace=resource.namespace, tags=resource.tags, gpus=gpus,
                            gpu_type=resource.workload.gpu_type, replicas=resource.workload.replicas,
                            version=hint, source=source, raw=container, neuron_cores=cores)
    return Detected(subject, resolution, tuple(found.argv), found.mode)


def _group_cores(cores: tuple[float, ...], container: Mapping[str, Any], gpus: float) -> tuple[float, ...]:
    """The container's NeuronCores scaled to ``gpus`` (a pod group's devices, when it is judged)."""
    own = container_gpus(container)
    return tuple(c * gpus / own for c in cores) if cores and own and gpus != own else cores


class _Reader:
    """Reads the files a container sees through ConfigMap mounts; hashable by their contents."""

    def __init__(self, files: Mapping[str, str], container: Mapping[str, Any]) -> None:
        self.files, self.container = files, container
        self.key = tuple(sorted(files.items()))

    def __call__(self, path: str) -> str | None:
        where = container_path(path, self.container)
        return self.files.get(where) if where else None


def _reader(files: Mapping[str, str], container: Mapping[str, Any]) -> _Reader | None:
    return _Reader(files, container) if files else None


def _explain_unread(resolution: Resolution, spec: Mapping[str, Any], container: Mapping[str, Any]) -> Resolution:
    """Say where the unread ``--config`` file comes from and how to give it."""
    path = str(resolution.unread_config)
    where = container_path(path, container)
    mount = describe_mount(spec, container, where) if where else None
    hint = (f"it is {mount}: check that ConfigMap's manifest together with the workload" if mount
            else "it is a file inside the container image: set the arguments on the command line instead")
    note = Diagnostic("config-not-loaded", f"arguments in {path} are unknown here; {hint}", "info", argument="config")
    return Resolution(resolution.version, resolution.mode, resolution.args, resolution.explicit,
                      [*resolution.diagnostics, note], resolution.locations, resolution.unrecognized, path)


_RESOLVED: dict[tuple[Any, ...], Resolution] = {}
_RESOLVED_LIMIT = 4096


def _resolve_cached(found: VllmInvocation, hint: str | None, file: str | None, line: int | None,
                    reader: _Reader | None = None) -> Resolution:
    """Parsing is most of a vLLM Deployment's cost and admission sees the same command lines over
    and over (every replica set, every update): resolve each distinct one once. Resolutions are
    read-only once built; the cache is bounded and keyed by everything the result depends on."""
    key = (found.mode, tuple(found.argv), found.unresolved, hint, file, line, reader.key if reader else None)
    cached = _RESOLVED.get(key)
    if cached is None:
        cached = resolve_invocation(found, hint, file=file, line=line, read_file=reader or no_file)
        if len(_RESOLVED) < _RESOLVED_LIMIT:
            _RESOLVED[key] = cached
    return cached


def _preset_command(resource: Resource, container: Mapping[str, Any]) -> list[str]:
    """KServe ``LLMInferenceService``: the ``main`` container's command comes from KServe's preset
    (``vllm serve /mnt/models --served-model-name <spec.model.name>``)."""
    if resource.kind != "LLMInferenceService" or container.get("name") != "main":
        return []
    model = as_map(as_map((resource.raw or EMPTY).get("spec")).get("model"))
    return ["vllm", "serve", str(model.get("name") or "/mnt/models")]


def serving_configs_from_resource(resource: Resource, config_maps: ConfigMaps | None = None
                                  ) -> list[ServingConfig]:
    """The ``serving_config`` subjects of one Kubernetes workload (none when it runs no vLLM);
    ``config_maps``: the ConfigMaps checked with it, for ``--config`` files mounted from them."""
    return [d.subject for d in detect_in_resource(resource, config_maps)]


# --- production-stack Helm values ---------------------------------------------------------------


def helm_model_argv(spec: Mapping[str, Any], container_port: Any = 8000) -> list[str]:
    """The ``vllm serve`` words the production-stack chart renders for one ``modelSpec`` (its
    ``deployment-vllm-multi.yaml``): prefix caching is turned *off* unless
    ``vllmConfig.enablePrefixCaching`` is true."""
    argv = [str(spec.get("modelURL") or ""), "--host", "0.0.0.0", "--port", go_string(container_port)]
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
                argv += [flag, go_string(config[key])]
        argv += [str(a) for a in config.get("extraArgs") or []]
    lmcache = as_map(spec.get("lmcacheConfig"))
    if lmcache.get("enabled"):
        role = lmcache.get("kvRole") or "kv_both"
        v0 = isinstance(config, Mapping) and str(config.get("v0")) == "1" and "enablePD" not in lmcache
        connector = "LMCacheConnector" if v0 else "LMCacheConnectorV1"
        argv += ["--kv-transfer-config", f'{{"kv_connector":"{connector}","kv_role":"{role}"}}']
    if spec.get("chatTemplate"):
        argv += ["--chat-template", f"/templates/{spec['chatTemplate']}"]
    return argv


def _helm_gpus(spec: Mapping[str, Any]) -> tuple[float, str | None, tuple[float, ...]]:
    """Devices, type and NeuronCores of one ``modelSpec``: the chart puts ``requestGPU`` of
    ``requestGPUType`` in the container's limits, counted as the Kubernetes adapter counts a
    container's. A resource that adapter does not know is taken at its word: whole devices of
    that name."""
    resource = str(spec.get("requestGPUType") or "nvidia.com/gpu")
    count = spec.get("requestGPU") or 0
    container = {"resources": {"limits": {resource: count}}}
    pod = {"containers": [container], "nodeSelector": as_map(spec.get("nodeSelector"))}
    if resource in ACCELERATOR_RESOURCES or resource.startswith(MIG_PREFIX):
        gpus, gpu_type = pod_gpus(pod), mig_profile(pod) or accelerator_family(pod)
    else:
        gpus = float(count) if isinstance(count, (int, float)) and not isinstance(count, bool) else 0.0
        gpu_type = resource
    label = _helm_label(spec, ACCELERATOR_TYPE_LABELS)
    cores = neuron_cores(container, _helm_label(spec, INSTANCE_TYPE_LABELS))
    return gpus, label or gpu_type, cores


def _helm_label(spec: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    """The first of ``keys`` the modelSpec pins, by ``nodeSelector`` or ``nodeSelectorTerms``."""
    selector = as_map(spec.get("nodeSelector"))
    for key in keys:
        if selector.get(key):
            return str(selector[key])
    for term in spec.get("nodeSelectorTerms") or []:
        for expr in as_map(term).get("matchExpressions") or []:
            expr = as_map(expr)
            if expr.get("key") in keys and expr.get("operator") == "In" and expr.get("values"):
                return str(expr["values"][0])
    return None


def detect_in_helm_values(doc: Mapping[str, Any], file: str | None = None, *, text: str | None = None
                          ) -> list[Detected]:
    """Every ``servingEngineSpec.modelSpec[]`` of production-stack Helm values."""
    engine = as_map(doc.get("servingEngineSpec"))
    specs = engine.get("modelSpec")
    if not isinstance(specs, list) or engine.get("enableEngine") is False:
        return []
    lines = _item_lines(text, ("servingEngineSpec", "modelSpec")) if text else {}
    labels = {str(k): str(v) for k, v in as_map(engine.get("labels")).items()}
    out: list[Detected] = []
    for i, spec in enumerate(specs):
        spec = as_map(spec)
        if not spec or spec.get("enabled") is False:
            continue
        image = version_hint(f"{spec.get('repository') or ''}:{spec.get('tag') or ''}")
        argv = helm_model_argv(spec, engine.get("containerPort", 8000))
        line = lines.get(i)
        resolution = parse_argv(argv, image, file=file, line=line, read_file=no_file)
        gpus, gpu_type, cores = _helm_gpus(spec)
        tags = {**labels, "model": str(spec.get("name") or ""),
                **{str(k): str(v) for k, v in as_map(spec.get("podLabels")).items()}}
        replicas = spec.get("replicaCount", 1)
        source = SourceLocation(file, line, f"/servingEngineSpec/modelSpec/{i}")
        subject = build_subject(resolution, name=str(spec.get("name") or i), namespace=None, tags=tags, gpus=gpus,
                           gpu_type=gpu_type, replicas=replicas if isinstance(replicas, int) else 1,
                           version=image, source=source, raw=spec, kind="helm/modelSpec", neuron_cores=cores)
        out.append(Detected(subject, resolution, tuple(argv)))
    return out


def serving_configs_from_helm_values(doc: Mapping[str, Any], file: str | None = None, *,
                                     text: str | None = None) -> list[ServingConfig]:
    """production-stack Helm values → one ``serving_config`` per enabled ``modelSpec``."""
    return [d.subject for d in detect_in_helm_values(doc, file, text=text)]


def is_helm_values(doc: Any) -> bool:
    return isinstance(doc, Mapping) and isinstance(as_map(doc.get("servingEngineSpec")).get("modelSpec"), list)


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


__all__ = [
    "PARAMS_TAG",
    "VERSION_TAG",
    "Detected",
    "config_maps_to_read",
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
    "version_hint",
]
