"""The ``serving_config`` subject: a model server's configuration (see :class:`ServingConfig`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

from costwarden.engine.subjects.base import _fields_on_instances, _Subject
from costwarden.engine.subjects.parts import _EMPTY, _NO_SOURCE, SourceLocation, _frozen_map


@_fields_on_instances
@dataclass(frozen=True, init=False)
class ServingConfig(_Subject):
    """A model server's configuration, with arguments resolved as the engine would read them.

    ``args`` is keyed by the engine's own destination names (``max_num_seqs``,
    ``enable_prefix_caching``...); ``gpus`` is what one replica requests.

    ``neuron_cores``: on AWS Neuron, the NeuronCores one replica gets, which is what vLLM's
    parallel sizes count there (``gpus`` counts devices, for prices). Several counts when the
    cores per device are not known (a device has 2 on Inf2/Trn1, 4 or 8 on Trn2); ``()``
    elsewhere. Other accelerators need none: vLLM counts TPU chips, Gaudi cards and GPUs as
    ``gpus`` does.
    """

    type: ClassVar[str] = "serving_config"
    model: str
    engine: str = "vllm"
    engine_version: str | None = None
    args: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    gpus: float = 0.0
    gpu_type: str | None = None
    neuron_cores: tuple[float, ...] = ()
    replicas: int = 1
    params_b: float | None = None
    provider: str = "kubernetes"
    kind: str = "vllm"
    name: str = ""
    namespace: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    deprecated_args: tuple[str, ...] = ()
    arg_errors: tuple[str, ...] = ()
    """Problems that make the engine refuse to start (unknown arguments, bad values), as messages."""
    source: SourceLocation = _NO_SOURCE
    raw: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def __init__(
        self,
        model: str,
        engine: str = "vllm",
        engine_version: str | None = None,
        args: Mapping[str, Any] = _EMPTY,
        gpus: float = 0.0,
        gpu_type: str | None = None,
        neuron_cores: tuple[float, ...] = (),
        replicas: int = 1,
        params_b: float | None = None,
        provider: str = "kubernetes",
        kind: str = "vllm",
        name: str = "",
        namespace: str | None = None,
        tags: Mapping[str, str] = _EMPTY,
        deprecated_args: tuple[str, ...] = (),
        arg_errors: tuple[str, ...] = (),
        source: SourceLocation = _NO_SOURCE,
        raw: Mapping[str, Any] | None = None,
    ) -> None:
        # As Resource: the instance dict directly, not object.__setattr__ per field.
        d = self.__dict__
        d["model"] = model
        d["engine"] = engine
        d["engine_version"] = engine_version
        d["args"] = _frozen_map(args)
        d["gpus"] = gpus
        d["gpu_type"] = gpu_type
        d["neuron_cores"] = neuron_cores
        d["replicas"] = replicas
        d["params_b"] = params_b
        d["provider"] = provider
        d["_plan_entry"] = None  # the evaluator's plan key and SubjectRef, once judged
        d["kind"] = kind
        d["name"] = name
        d["namespace"] = namespace
        d["tags"] = _frozen_map(tags)
        d["deprecated_args"] = deprecated_args
        d["arg_errors"] = arg_errors
        d["source"] = source
        d["raw"] = raw

    @cached_property
    def as_cel(self) -> dict[str, Any]:
        return self._build()

    def _build(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "provider": self.provider,
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
            "tags": dict(self.tags),
            "engine": self.engine,
            "engine_version": self.engine_version,
            "model": self.model,
            "args": dict(self.args),
            "gpus": self.gpus,
            "gpu_type": self.gpu_type,
            "neuron_cores": list(self.neuron_cores),
            "replicas": self.replicas,
            "params_b": self.params_b,
            "deprecated_args": list(self.deprecated_args),
            "arg_errors": list(self.arg_errors),
            "source": self.source.to_dict(),
        }
