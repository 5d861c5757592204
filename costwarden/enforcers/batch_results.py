"""Reading a batch's results: the JSON Lines tap and the tally of what they cost.

``batch_settle.py`` settles a batch from a :class:`ResultsTally`, filled line by line from a results
download (:class:`JsonlTap`) or from lines read some other way. Only ``succeeded`` lines are
billed: each is priced from its usage at the batch rate (cache reads and writes included);
``errored``, ``canceled`` and ``expired`` lines are counted, and cost nothing.

What a line says is the provider's: a :data:`LineReader` tells its result type, model and usage
(:func:`anthropic_line` for Message Batches results; the OpenAI Batch API's output lines are read
by ``openai_batches.openai_line``). The tally prices them as its ``provider``'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from costwarden.adapters import anthropic as adapter
from costwarden.enforcers.bodytap import BodyTap, EndCallback
from costwarden.engine.pricing import LlmPricer
from costwarden.engine.subjects import TokenUsage

RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")

LineReader = Callable[[Mapping[str, Any]], tuple[str, str, TokenUsage | None] | None]
"""(result type — one of :data:`RESULT_TYPES` —, model, usage) of one results line; None when the
line is not understood. Model and usage matter for ``succeeded`` lines only (usage None: unpriced)."""


def anthropic_line(line: Mapping[str, Any]) -> tuple[str, str, TokenUsage | None] | None:
    """A Message Batches results line: ``{custom_id, result: {type, message}}``."""
    result = line.get("result")
    kind = result.get("type") if isinstance(result, Mapping) else None
    if not isinstance(result, Mapping) or kind not in RESULT_TYPES:
        return None
    if kind != "succeeded":
        return kind, "", None
    message = result.get("message")
    model = message.get("model") if isinstance(message, Mapping) else None
    usage: TokenUsage | None
    try:
        usage = adapter.usage_from_response(line)
    except Exception:
        usage = None
    return kind, model if isinstance(model, str) else "", usage


class JsonlTap(BodyTap):
    """A :class:`BodyTap` for JSON Lines: each complete line goes to ``on_line``, nothing is kept."""

    def __init__(
        self, *, content_encoding: str | None, on_line: Any, on_end: EndCallback, blocking: bool = False
    ) -> None:
        super().__init__(sse=False, content_encoding=content_encoding, on_end=on_end, blocking=blocking)
        self._on_line = on_line

    def feed(self, chunk: bytes) -> bytes:
        data = self.decode(chunk)  # every content coding the client undoes (br and zstd too)
        if data is None:
            return chunk
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self._on_line(line)
        return chunk

    def flush(self) -> bytes:
        if not self.ended and not self.undecodable and self._partial:
            self._on_line(self._partial)
            self._partial = b""
        return b""


@dataclass
class ResultsTally:
    """The billable part of a batch's results: usage per succeeded line, counts per result type."""

    provider: str = adapter.PROVIDER
    """Whose prices the succeeded lines are priced at."""
    read: LineReader = anthropic_line
    used: list[tuple[str, TokenUsage | None]] = field(default_factory=list)
    """(model, usage) per succeeded line; usage None when the line has none readable (priced as unpriced)."""
    counts: dict[str, int] = field(default_factory=dict)
    unreadable: int = 0

    def add_line(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            line = json.loads(raw)
        except ValueError:
            self.unreadable += 1
            return
        self.add(line)

    def add(self, line: Mapping[str, Any]) -> None:
        got = self.read(line) if isinstance(line, Mapping) else None
        if got is None:
            self.unreadable += 1
            return
        kind, model, usage = got
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "succeeded":
            self.used.append((model, usage))

    @property
    def lines(self) -> int:
        return sum(self.counts.values())

    def usage(self) -> TokenUsage:
        total = TokenUsage()
        for _, u in self.used:
            if u is None:
                continue
            total = total.plus(u)
        return total

    def cost(self, pricer: LlmPricer, fallback_model: str | None) -> tuple[float, int]:
        """USD at the batch rate, and how many succeeded lines had no usage or no price (under their
        model or ``fallback_model``)."""
        total, unpriced = 0.0, 0
        for model, usage in self.used:
            price = None
            for candidate in dict.fromkeys(m for m in (model, fallback_model) if m):
                if usage is None:
                    break
                try:
                    price = pricer.cost(self.provider, candidate, usage, batch=True)
                    break
                except Exception:
                    continue
            if price is None:
                unpriced += 1
            else:
                total += price
        return total, unpriced


__all__ = ["RESULT_TYPES", "JsonlTap", "LineReader", "ResultsTally", "anthropic_line"]
