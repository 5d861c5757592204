"""The parts of an ``admission.k8s.io/v1`` AdmissionReview request costwarden reads, checked as
they are read: a malformed review is an :class:`AdapterError` saying what is wrong with it (the
webhook answers 400). :mod:`costwarden.enforcers.admission` judges what this returns."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from costwarden.enforcers.scale_target import is_scale_request
from costwarden.errors import AdapterError

API_VERSION = "admission.k8s.io/v1"
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
# Kubernetes object names (DNS-1123 subdomain) and namespaces (DNS-1123 label).
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """The parts of ``AdmissionReview.request`` costwarden reads."""

    uid: str
    operation: str
    kind: str
    namespace: str | None = None
    name: str = ""
    sub_resource: str = ""
    resource: tuple[str, str, str] = ("", "", "")
    """``request.resource`` as (group, version, resource): the parent's for a subresource."""
    object: Mapping[str, Any] | None = None
    old_object: Mapping[str, Any] | None = None
    dry_run: bool = False


def parse(admission_review: Any) -> AdmissionRequest:
    """Read an AdmissionReview v1; raises :class:`AdapterError` saying what is wrong with it."""
    if not isinstance(admission_review, Mapping):
        raise AdapterError("an AdmissionReview must be a JSON object")
    api_version = admission_review.get("apiVersion")
    if api_version != API_VERSION:
        raise AdapterError(f"unsupported apiVersion {api_version!r}: costwarden answers {API_VERSION} only "
                           "(set admissionReviewVersions: [v1] on the webhook)")
    if admission_review.get("kind") != "AdmissionReview":
        raise AdapterError(f"expected kind AdmissionReview, got {admission_review.get('kind')!r}")
    request = admission_review.get("request")
    if not isinstance(request, Mapping):
        raise AdapterError("AdmissionReview.request is missing or not an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise AdapterError("AdmissionReview.request.uid is missing or not a string")
    operation = request.get("operation")
    if operation not in OPERATIONS:
        raise AdapterError(f"request.operation {operation!r} is not one of {', '.join(OPERATIONS)}")
    obj = request.get("object")
    if operation in ("CREATE", "UPDATE") and not isinstance(obj, Mapping):
        raise AdapterError(f"request.object must be an object for {operation}")
    kind = request.get("kind")
    kind_name = kind.get("kind") if isinstance(kind, Mapping) else None
    if not isinstance(kind_name, str):
        kind_name = str(obj.get("kind", "")) if isinstance(obj, Mapping) else ""
    old = request.get("oldObject")
    namespace = request.get("namespace")
    parsed = AdmissionRequest(
        uid=uid,
        operation=operation,
        kind=kind_name,
        namespace=namespace if isinstance(namespace, str) and namespace else None,
        name=_text(request, "name"),
        sub_resource=_text(request, "subResource"),
        resource=_resource(request.get("resource")),
        object=obj if isinstance(obj, Mapping) else None,
        old_object=old if isinstance(old, Mapping) else None,  # recorded events carry "None" strings
        dry_run=request.get("dryRun") is True,
    )
    if is_scale_request(parsed):
        _check_scale_target(parsed)
    return parsed


def _check_scale_target(request: AdmissionRequest) -> None:
    """A scale request names its parent, which the webhook then GETs from the API server: the
    name and namespace must be ones Kubernetes allows (never a path of another object)."""
    if not (len(request.name) <= 253 and _NAME.fullmatch(request.name)):
        raise AdapterError(f"request.name {request.name!r} of a scale request is not a Kubernetes object name")
    if not (request.namespace and len(request.namespace) <= 63 and _NAMESPACE.fullmatch(request.namespace)):
        raise AdapterError(f"request.namespace {request.namespace!r} of a scale request is not a namespace name")


def _text(request: Mapping[str, Any], key: str) -> str:
    value = request.get(key)
    return value if isinstance(value, str) else ""


def _resource(value: Any) -> tuple[str, str, str]:
    if not isinstance(value, Mapping):
        return "", "", ""
    return _text(value, "group"), _text(value, "version"), _text(value, "resource")


__all__ = ["API_VERSION", "OPERATIONS", "AdmissionRequest", "parse"]
