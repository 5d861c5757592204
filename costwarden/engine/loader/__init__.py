"""Policy files → validated documents, or every problem in them as a positioned Diagnostic.

::

    result = load_paths("policies/")            # never raises; result.diagnostics lists every problem
    documents = load_documents("policies/")     # raises PolicyError(diagnostics) if there is any

YAML is read by :mod:`costwarden.engine.yamlsource` (YAML 1.2 core schema, node marks kept), each
document is checked for what the schema cannot say well (apiVersion, kind, rule kinds, duplicate
names, YAML 1.1 booleans) and then validated by its pydantic model; pydantic's errors are mapped
to stable codes and to the line and column of the key or value they are about. A file with any
error contributes no documents.
"""

from __future__ import annotations

# files: loading text, bytes, files and folders; walk: which files in a folder are policies;
# validator: one document's own checks; pydantic_errors: pydantic's errors turned into issues;
# issue, schema_paths: what those two share.
# Names with a leading underscore are shared between these modules only.
from costwarden.engine.loader.files import LoadResult, SourceDocument, load_bytes, load_documents, load_paths, load_text
from costwarden.engine.loader.walk import Skipped

__all__ = [
    "LoadResult",
    "Skipped",
    "SourceDocument",
    "load_bytes",
    "load_documents",
    "load_paths",
    "load_text",
]
