"""vLLM behind Kubernetes custom resources: KServe's ``InferenceService`` (a vLLM runtime's
predictor model) and the production-stack operator's ``VLLMRuntime``. Each maps its fields to
the command line the operator renders; the workloads those operators create are read as plain
containers by :mod:`.detect`.
"""

from __future__ import annotations

from typing import Any

from costwarden.adapters.kubernetes_workloads import container_gpus
from costwarden.adapters.vllm.parser import parse_argv
from costwarden.adapters.vllm.subject import EMPTY, Detected, as_map, build_subject, no_file, words
from costwarden.adapters.vllm.table import version_hint
from costwarden.engine.subjects import Resource, SourceLocation


def inference_service(resource: Resource) -> list[Detected]:
    """KServe ``InferenceService`` whose predictor model is served by a vLLM runtime: the model's
    args are appended to the runtime's (``python -m vllm.entrypoints.openai.api_server``)."""
    raw = resource.raw or EMPTY
    model = as_map(as_map(as_map(raw.get("spec")).get("predictor")).get("model"))
    fmt = str(as_map(model.get("modelFormat")).get("name") or "").lower()
    runtime = str(model.get("runtime") or "").lower()
    if resource.kind != "InferenceService" or not model or "vllm" not in (fmt + runtime):
        return []
    if model.get("command"):
        return []  # a command is a container we already read
    args = ["--model", "/mnt/models", *(words(model.get("args")) or [])]
    resolution = parse_argv(args, model.get("runtimeVersion") or None, mode="api_server",
                            file=resource.source.file, line=resource.source.line, read_file=no_file)
    source = SourceLocation(resource.source.file, resource.source.line, "/spec/predictor/model")
    subject = build_subject(resolution, name=resource.name, namespace=resource.namespace, tags=resource.tags,
                       gpus=container_gpus(model), gpu_type=resource.workload.gpu_type,
                       replicas=resource.workload.replicas, version=None, source=source, raw=model)
    return [Detected(subject, resolution, tuple(args), "api_server")]


_RUNTIME_FLAGS = {  # VLLMRuntime field → flag (the operator's mapping; booleans emit --x / --no-x)
    "maxModelLen": "--max-model-len", "dtype": "--dtype", "maxNumSeqs": "--max-num-seqs",
    "tensorParallelSize": "--tensor-parallel-size", "gpuMemoryUtilization": "--gpu-memory-utilization",
    "maxLoras": "--max-loras", "enablePrefixCaching": "--enable-prefix-caching",
    "enableChunkedPrefill": "--enable-chunked-prefill",
}


def vllm_runtime(resource: Resource) -> list[Detected]:
    if resource.kind != "VLLMRuntime":
        return []
    spec = as_map((resource.raw or EMPTY).get("spec"))
    model, config = as_map(spec.get("model")), as_map(spec.get("vllmConfig"))
    argv = [str(model.get("modelURL") or "")]
    for fields in (model, config):
        for key, flag in _RUNTIME_FLAGS.items():
            if key in fields:
                argv += _flag(flag, fields[key])
    argv += words(config.get("extraArgs")) or []
    image = version_hint(str(as_map(as_map(spec.get("deploymentConfig")).get("image")).get("name") or ""))
    resolution = parse_argv(argv, image, file=resource.source.file, line=resource.source.line, read_file=no_file)
    source = SourceLocation(resource.source.file, resource.source.line, "/spec/vllmConfig")
    subject = build_subject(resolution, name=resource.name, namespace=resource.namespace, tags=resource.tags,
                       gpus=resource.workload.gpus, gpu_type=resource.workload.gpu_type,
                       replicas=resource.workload.replicas, version=image, source=source, raw=spec)
    return [Detected(subject, resolution, tuple(argv))]


def _flag(flag: str, value: Any) -> list[str]:
    if isinstance(value, bool):
        return [flag] if value else ["--no-" + flag[2:]]
    return [flag, go_string(value)]


def go_string(value: Any) -> str:
    """A Helm ``| quote`` of a YAML scalar: ints and floats as Go prints them."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


__all__ = ["go_string", "inference_service", "vllm_runtime"]
