"""The public entry points that wire the engine to its default adapters."""

from __future__ import annotations

import os
from pathlib import Path

from costwarden.engine.compile import compile_documents
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.loader import LoadResult, load_paths
from costwarden.engine.pricing import LlmPricer

_DEFAULT = object()


def builtin_library_path() -> Path:
    """The folder of the built-in policy library (``policies/`` in the source tree)."""
    packaged = Path(__file__).parent / "library"
    return packaged.resolve()


def load_policies(*paths: str | os.PathLike[str], pricer: LlmPricer | None | object = _DEFAULT) -> PolicySet:
    """Load and compile policy files or folders; with no paths, the built-in library.

    Raises :class:`~costwarden.errors.PolicyError` carrying every positioned diagnostic when any
    file is invalid — nothing is loaded partly. ``pricer`` defaults to ``genai-prices``' offline
    data; pass ``None`` to price only from ``ModelCatalog`` overrides.
    """
    return load_with_sources(*paths, pricer=pricer)[0]


def load_with_sources(
    *paths: str | os.PathLike[str], pricer: LlmPricer | None | object = _DEFAULT
) -> tuple[PolicySet, LoadResult]:
    """:func:`load_policies`, and what was read to build the set: the documents (``costwarden
    validate`` checks their exemptions' expiry), the loader's diagnostics that are not errors, and
    the library test data a folder walk skipped. Raises ``PolicyError`` as ``load_policies`` does."""
    if pricer is _DEFAULT:
        from costwarden.adapters.pricing import GenaiPricer

        pricer = GenaiPricer()
    result = load_paths(*(paths or (builtin_library_path(),)))
    policies = compile_documents(
        result.documents,
        pricer=pricer,  # type: ignore[arg-type]
        diagnostics=result.diagnostics,
    )
    return policies, result


__all__ = ["builtin_library_path", "load_policies", "load_with_sources"]
