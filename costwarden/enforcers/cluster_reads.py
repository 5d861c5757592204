"""What judging at admission reads from the cluster besides the request: the ConfigMaps that vLLM
servers read their ``--config`` file from.

``costwarden check`` reads a ``vllm serve --config /etc/vllm/config.yaml`` file from the
ConfigMap manifest given with the workload (:mod:`costwarden.adapters.vllm.mounts`). The API
server sends the webhook the workload only, so ``/validate`` reads the ConfigMap from the
workload's namespace through a :data:`ConfigMapReader` — supplied by the webhook
(:meth:`costwarden.webhook.kube_api.KubeApi.config_map`), so the enforcers never open a
connection — and judges with it, as ``check`` would with both manifests.

Only the ConfigMaps mounted where a vLLM container's ``--config`` file is are read, only when a
``serving_config`` policy is judged at admission, and only by ``/validate`` (``/mutate`` never
fixes vLLM arguments). Nothing is cached across requests: a ConfigMap edited between two
deployments is read again. A ConfigMap that cannot be read (no access, 403, 404, a timeout) leaves
the file unread, so the policies report the arguments it may set as "cannot be judged", and the
answer says why the ConfigMap was not read.

>>> maps, notes = read_config_maps(policies, subjects, read)        # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from costwarden.engine.subjects import Resource, ServingConfig, Subject
from costwarden.errors import AdapterError, describe

if TYPE_CHECKING:
    from costwarden.adapters.vllm.mounts import ConfigMaps
    from costwarden.engine.compile import CompiledPolicy

NO_API = "the webhook has no API server access (no service account token mounted)"
# ConfigMap names (DNS-1123 subdomain) and namespaces (DNS-1123 label), as the API server allows.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

ConfigMapReader = Callable[[str, str], Mapping[str, Any]]
"""Reads the ConfigMap ``(namespace, name)``; raises (any exception, with a message that says
why) when it cannot::

    def read(namespace: str, name: str) -> Mapping[str, Any]:
        return api.get(config_map_path(namespace, name))
"""


def config_map_path(namespace: str, name: str) -> str:
    """The GET path of a ConfigMap. The names come from the judged object, which anyone who
    reaches the webhook's Service can make up: only names Kubernetes allows are read (an encoded
    ``/`` would be decoded by the API server into the path of another object)."""
    if not (len(name) <= 253 and _NAME.fullmatch(name)):
        raise AdapterError(f"{name!r} is not a ConfigMap name")
    if not (len(namespace) <= 63 and _NAMESPACE.fullmatch(namespace)):
        raise AdapterError(f"{namespace!r} is not a namespace name")
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/configmaps/{quote(name, safe='')}"


def reads_config_maps(policy: CompiledPolicy) -> bool:
    """Whether ``policy`` judges vLLM serving configs at admission (then their ConfigMaps are read)."""
    return (policy.subject_type == "serving_config" and policy.effects["admission"] != "off"
            and policy.match.matches_kind("kubernetes", "vllm"))


def wanted_config_maps(policies: Iterable[CompiledPolicy], subjects: Sequence[Subject]) -> list[tuple[str, str]]:
    """``(namespace, name)`` of each ConfigMap holding a vLLM ``--config`` file the subjects could
    not read, when some policy judges it at admission; usually none (a cheap check first)."""
    if not any(isinstance(s, ServingConfig) and s.args.get("config") for s in subjects):
        return []
    if not any(reads_config_maps(p) for p in policies):
        return []
    from costwarden.adapters.vllm.detect import config_maps_to_read

    wanted: list[tuple[str, str]] = []
    for resource in subjects:
        if isinstance(resource, Resource) and resource.raw is not None and resource.namespace:
            wanted += [(resource.namespace, name) for name in config_maps_to_read(resource)
                       if (resource.namespace, name) not in wanted]
    return wanted


def read_config_maps(policies: Iterable[CompiledPolicy], subjects: Sequence[Subject],
                     read: ConfigMapReader | None) -> tuple[ConfigMaps | None, tuple[str, ...]]:
    """The ConfigMaps the subjects' vLLM containers read ``--config`` from (None when none is
    wanted or none could be read), and a note for each one that could not be read, saying why."""
    from costwarden.adapters.vllm.mounts import ConfigMaps

    found: dict[tuple[str | None, str], Mapping[str, str]] = {}
    notes: list[str] = []
    for namespace, name in wanted_config_maps(policies, subjects):
        try:
            found[(namespace, name)] = _data(_read(read, namespace, name))
        except Exception as exc:
            notes.append(f"cannot read ConfigMap {namespace}/{name} (a vLLM --config): {describe(exc)}")
    return (ConfigMaps(found) if found else None), tuple(notes)


def _read(read: ConfigMapReader | None, namespace: str, name: str) -> Mapping[str, Any]:
    config_map_path(namespace, name)  # refuse names that are not Kubernetes names before any read
    if read is None:
        raise AdapterError(NO_API)
    obj = read(namespace, name)
    if not isinstance(obj, Mapping) or obj.get("kind") != "ConfigMap":
        raise AdapterError("the API server answered with no ConfigMap")
    return obj


def _data(config_map: Mapping[str, Any]) -> dict[str, str]:
    """The text ``data`` (``binaryData`` is no YAML file vLLM could read)."""
    data = config_map.get("data")
    if not isinstance(data, Mapping):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, str)}


__all__ = ["NO_API", "ConfigMapReader", "config_map_path", "read_config_maps", "reads_config_maps",
           "wanted_config_maps"]
