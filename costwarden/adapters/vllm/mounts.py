"""Files a container sees through ConfigMap volumes, so ``vllm serve --config /etc/vllm/c.yaml``
can be read when the ConfigMap's manifest is checked with the workload::

    >>> maps = ConfigMaps.from_objects([{"apiVersion": "v1", "kind": "ConfigMap",
    ...     "metadata": {"name": "cfg"}, "data": {"c.yaml": "tensor-parallel-size: 2"}}])
    >>> pod = {"volumes": [{"name": "v", "configMap": {"name": "cfg"}}]}
    >>> container = {"volumeMounts": [{"name": "v", "mountPath": "/etc/vllm"}]}
    >>> mounted_files(pod, container, None, maps)
    {'/etc/vllm/c.yaml': 'tensor-parallel-size: 2'}

As the kubelet projects them: a ``configMap`` or ``projected`` volume holds one file per ``data``
key, or only the listed ``items`` at their ``path``; a ``subPath`` mount is one file of the
volume. :func:`describe_mount` names where an unavailable file would come from, for messages, and
:func:`config_map_at` which ConfigMap and key hold it (for the admission webhook to read).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

_EMPTY: Mapping[str, Any] = {}


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else _EMPTY


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


class ConfigMaps:
    """ConfigMaps' text ``data`` by (namespace, name). A ConfigMap or workload without a
    namespace (plain manifests before ``kubectl apply -n``) matches by name alone."""

    def __init__(self, data: Mapping[tuple[str | None, str], Mapping[str, str]] | None = None) -> None:
        self.data = dict(data or {})

    @classmethod
    def from_objects(cls, objects: Iterable[Any]) -> ConfigMaps:
        found: dict[tuple[str | None, str], Mapping[str, str]] = {}
        for obj in objects:
            obj = _map(obj)
            meta = _map(obj.get("metadata"))
            if obj.get("kind") == "ConfigMap" and isinstance(meta.get("name"), str):
                data = {str(k): v for k, v in _map(obj.get("data")).items() if isinstance(v, str)}
                found[(meta.get("namespace") if isinstance(meta.get("namespace"), str) else None, meta["name"])] = data
        return cls(found)

    def get(self, namespace: str | None, name: str) -> Mapping[str, str] | None:
        if (namespace, name) in self.data:
            return self.data[(namespace, name)]
        loose = [d for (ns, n), d in self.data.items() if n == name and (ns is None or namespace is None)]
        return loose[0] if len(loose) == 1 else None

    def __bool__(self) -> bool:
        return bool(self.data)


def _volume_files(volume: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(ConfigMap name, key, path in the volume)`` for each file a volume would hold, as far as
    the volume says (keys without ``items`` are the ConfigMap's: ``path`` ``*``)."""
    sources = [_map(volume.get("configMap"))]
    sources += [_map(_map(s).get("configMap")) for s in _list(_map(volume.get("projected")).get("sources"))]
    out: list[tuple[str, str, str]] = []
    for source in sources:
        name = source.get("name")
        if not isinstance(name, str):
            continue
        items = [_map(i) for i in _list(source.get("items"))]
        if not items:
            out.append((name, "*", "*"))
        out += [(name, str(i.get("key")), str(i.get("path") or i.get("key"))) for i in items if i.get("key")]
    return out


_Mount = tuple[str, str, list[tuple[str, str, str]]]


def _mounts(pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> list[_Mount]:
    """``(mountPath, subPath, files of the volume)`` for every ConfigMap-backed mount."""
    volumes = {_map(v).get("name"): _volume_files(_map(v)) for v in _list(pod_spec.get("volumes"))}
    out: list[_Mount] = []
    for mount in _list(container.get("volumeMounts")):
        mount = _map(mount)
        files = volumes.get(mount.get("name"))
        if files and isinstance(mount.get("mountPath"), str):
            out.append((posixpath.normpath(mount["mountPath"]), str(mount.get("subPath") or ""), files))
    return out


def mounted_files(pod_spec: Mapping[str, Any], container: Mapping[str, Any], namespace: str | None,
                  config_maps: ConfigMaps) -> dict[str, str]:
    """Every file path the container sees through a ConfigMap in ``config_maps``, with its text."""
    out: dict[str, str] = {}
    for mount_path, sub_path, files in _mounts(pod_spec, container):
        for name, key, path in files:
            data = config_maps.get(namespace, name) or {}
            pairs = data.items() if key == "*" else [(path, data[key])] if key in data else []
            for rel, text in pairs:
                if not sub_path:
                    out[posixpath.join(mount_path, rel)] = text
                elif rel == sub_path:
                    out[mount_path] = text
    return out


def config_map_at(pod_spec: Mapping[str, Any], container: Mapping[str, Any], path: str) -> tuple[str, str] | None:
    """``(ConfigMap name, key)`` of the file at ``path`` when a ConfigMap volume is mounted there;
    None when no ConfigMap mount covers it. The admission webhook reads that ConfigMap."""
    path = posixpath.normpath(path)
    for mount_path, sub_path, files in _mounts(pod_spec, container):
        rel = sub_path if path == mount_path else posixpath.relpath(path, mount_path)
        if rel.startswith("..") or (sub_path and path != mount_path):
            continue
        for name, key, item_path in files:
            if key == "*" or item_path == rel:
                return name, rel if key == "*" else key
    return None


def describe_mount(pod_spec: Mapping[str, Any], container: Mapping[str, Any], path: str) -> str | None:
    """Where ``path`` comes from when a ConfigMap volume is mounted there: ``ConfigMap 'cfg' (key
    'c.yaml')``; None when no ConfigMap mount covers it."""
    found = config_map_at(pod_spec, container, path)
    return None if found is None else f"ConfigMap '{found[0]}' (key '{found[1]}')"


def container_path(path: str, container: Mapping[str, Any]) -> str | None:
    """A path as the container resolves it: relative paths from its ``workingDir``; None for a
    relative path when the working directory is the image's (unknown here)."""
    base = container.get("workingDir")
    if not path.startswith("/") and not isinstance(base, str):
        return None
    return posixpath.normpath(posixpath.join(str(base or "/"), path))


__all__ = ["ConfigMaps", "config_map_at", "container_path", "describe_mount", "mounted_files"]
