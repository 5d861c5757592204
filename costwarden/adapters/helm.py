"""Where ``helm template`` output came from: the ``# Source: <chart>/templates/<file>`` comment
Helm writes after each document's ``---``.

Helm renders whole documents, so a rendered object's line in its template is not known; only
its template is. :func:`template_sources` reads the comments off the rendered text and
:func:`template_at` names the template of the document that starts at a line. :func:`chart_file`
finds that template in the working tree (the path Helm prints starts with the chart's *name*, not
its folder), with the line of the document's ``kind:`` when the template has exactly one::

    >>> sources = template_sources("---\\n# Source: app/templates/job.yaml\\nkind: Job\\n")
    >>> template_at(sources, 3)
    'app/templates/job.yaml'
"""

from __future__ import annotations

import bisect
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

_SOURCE = "# Source: "
_SKIP_DIRS = frozenset({".git", ".venv", "node_modules", "__pycache__", ".terraform", ".mypy_cache"})
_CHART_NAME = re.compile(r"^name:\s*['\"]?([^'\"#\s]+)", re.M)


@dataclass(frozen=True, slots=True)
class HelmSource:
    """The template a rendered object came from: ``template`` as Helm names it, ``file`` that
    template in the working tree when found there, ``line`` its ``kind:`` line there when there
    is just one."""

    template: str
    file: str | None = None
    line: int | None = None


def template_sources(text: str) -> list[tuple[int, str | None]]:
    """Each point where the current template changes: ``(line, template)``; a ``---`` starts a
    document with none. Empty when the text has no ``# Source:`` comment."""
    if _SOURCE not in text:
        return []
    out: list[tuple[int, str | None]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("---"):
            out.append((number, None))
        elif line.startswith(_SOURCE):
            out.append((number, line[len(_SOURCE):].strip() or None))
    return out


def template_at(sources: list[tuple[int, str | None]], line: int | None) -> str | None:
    """The template of the document an object starting at ``line`` belongs to."""
    if not sources or line is None:
        return None
    index = bisect.bisect_left(sources, line, key=lambda s: s[0]) - 1
    return sources[index][1] if index >= 0 else None


def chart_file(template: str, kind: str, root: str = ".") -> HelmSource:
    """``template`` located below ``root`` (a chart whose ``Chart.yaml`` has its name), with
    the line of ``kind: <kind>`` in it when it appears once."""
    name, _, rest = template.partition("/")
    found = [p for d in _charts(os.path.abspath(root)).get(name, ()) if (p := Path(d, rest)).is_file()]
    if len(found) != 1:
        return HelmSource(template)
    path = found[0]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return HelmSource(template)
    kind_line = re.compile(rf"^kind:\s*['\"]?{re.escape(kind)}['\"]?\s*$")
    lines = [n for n, line in enumerate(text.splitlines(), start=1) if kind_line.match(line)]
    relative = os.path.relpath(path, root).replace(os.sep, "/")
    return HelmSource(template, relative, lines[0] if len(lines) == 1 else None)


@functools.lru_cache(maxsize=8)
def _charts(root: str) -> dict[str, tuple[str, ...]]:
    """Chart name → the folders below ``root`` holding a ``Chart.yaml`` of that name (walked once)."""
    charts: dict[str, list[str]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        if "Chart.yaml" not in files:
            continue
        try:
            match = _CHART_NAME.search(Path(folder, "Chart.yaml").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
        if match:
            charts.setdefault(match.group(1), []).append(folder)
    return {name: tuple(folders) for name, folders in charts.items()}


__all__ = ["HelmSource", "chart_file", "template_at", "template_sources"]
