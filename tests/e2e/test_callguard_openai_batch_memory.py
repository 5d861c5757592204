"""A finished Batch API creation lets go of its parsed input file: the real ``openai`` SDK creating a
batch of many requests through the guarded transport (the fake Batch API, ``fake_openai_batches.py``).

The guard keeps the last call it started in a context variable so an SDK retry finds it; a batch
creation's call judged every line of the input file, so once it is settled or deferred (and can no
longer be retried) it must not keep those requests, their subjects and decisions alive until the
next guarded call. Retries of a creation that is not finished are covered in
``test_callguard_openai_batches.py``."""

from __future__ import annotations

import contextvars
import gc
import io
import json
import sys
import uuid
from typing import Any

import pytest

openai = pytest.importorskip("openai")
from fake_llm_server import FakeLlmServer, ListSink, budget_policy, compile_policies  # noqa: E402

from costwarden.adapters.ledger.memory import MemoryLedger  # noqa: E402
from costwarden.enforcers.callguard import CallGuard, attribution  # noqa: E402
from costwarden.enforcers.openai_guard import openai_http_client  # noqa: E402
from costwarden.engine.decision import RuleResult  # noqa: E402
from costwarden.engine.subjects import LlmCall  # noqa: E402

LINES = 2000


def input_file(tag: str) -> bytes:
    return b"".join(json.dumps({
        "custom_id": f"{tag}-{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "gpt-4.1-nano", "max_tokens": 50, "messages": [{"role": "user", "content": f"Label {i}"}]},
    }).encode() + b"\n" for i in range(LINES))


def reachable(*roots: Any) -> list[Any]:
    """Every object reachable from ``roots`` through references, modules' globals left out (they
    reach everything loaded, the fake server's records of the uploaded file included)."""
    skip = {id(m.__dict__) for m in list(sys.modules.values()) if hasattr(m, "__dict__")}
    seen: set[int] = set()
    found: list[Any] = []
    todo = list(roots)
    while todo:
        obj = todo.pop()
        if id(obj) in seen or id(obj) in skip or isinstance(obj, type(sys)):
            continue
        seen.add(id(obj))
        found.append(obj)
        todo.extend(gc.get_referents(obj))
    return found


def input_lines_held(tag: str, *roots: Any) -> tuple[int, int, int]:
    """(the input file's requests, ``llm_call`` subjects, rule results) reachable from ``roots``."""
    objects = reachable(*roots)
    requests = sum(1 for o in objects if isinstance(o, dict) and str(o.get("custom_id", "")).startswith(tag))
    subjects = sum(1 for o in objects if isinstance(o, LlmCall))
    results = sum(1 for o in objects if isinstance(o, RuleResult))
    return requests, subjects, results


@pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
def test_a_created_batch_leaves_nothing_of_its_input_file_reachable_from_the_guard(
    server: FakeLlmServer, background: bool
) -> None:
    tag = f"mem-{uuid.uuid4().hex[:8]}"
    sink = ListSink()
    guard = CallGuard(compile_policies(budget_policy(50.0)), ledger=MemoryLedger(), sinks=[sink],
                      settle_in_background=background)
    context = contextvars.Context()  # the thread's own holds the calls of earlier tests' guards

    def create(client: Any) -> Any:
        with attribution(user="u-mem"):
            uploaded = client.files.create(file=("b.jsonl", io.BytesIO(input_file(tag))), purpose="batch")
            return client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                         completion_window="24h")

    with openai.OpenAI(base_url=server.url + "/v1", api_key="test", max_retries=2,
                       http_client=openai_http_client(guard, max_retries=2)) as client:
        batch = context.run(create, client)
        assert guard.flush(10)
        (event,) = sink.events
        assert (event.batch_requests, event.reservation_id) == (LINES, f"cw-oai-batch-{batch.id}")
        assert event.estimated_cost_usd is not None and event.estimated_cost_usd > 0
        assert len(list(context.values())) >= 1  # the guard's last call is kept there, for an SDK retry
        gc.collect()
        requests, subjects, results = input_lines_held(tag, guard, context)
    guard.close()
    assert requests == 0, f"{requests} input-file requests still reachable from the guard"
    assert subjects <= 1 and results <= 1, (subjects, results)  # not one per line
