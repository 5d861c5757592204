"""The loader is total: any text or bytes either load or yield positioned diagnostics — nothing escapes."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costwarden.engine.loader import LoadResult, load_bytes, load_documents, load_text
from costwarden.engine.yamlsource import split_lines
from costwarden.errors import PolicyError

BASE = """\
apiVersion: costwarden.dev/v1
kind: Policy
metadata:
  name: daily
  severity: high
  labels: {team: search}
spec:
  subject: llm_call
  match: {providers: [anthropic], when: "subject.request.max_tokens > 0"}
  rules:
  - name: cap
    budget: &b {per: [user], window: day, limitUsd: 25, alertAt: [0.5]}
  - name: caching
    requirePromptCaching: {minTokens: 1000, fix: true}
  - name: tags
    requireTags:
      <<: {keys: [team]}
      values: {environment: "^(prod|dev)$"}
---
apiVersion: costwarden.dev/v1
kind: Exemption
metadata: {name: late}
spec: {policies: [{policy: daily}], expires: 2026-12-31, owner: me, reason: why}
""".splitlines()

KEYS = st.sampled_from(
    [
        "apiVersion",
        "kind",
        "metadata",
        "spec",
        "rules",
        "name",
        "budget",
        "limitUsd",
        "limtUsd",
        "fix",
        "expires",
        "<<",
        "yes",
        "on",
        "1",
        "~",
        "null",
        "? a",
        "[a]",
        "{a: 1}",
        "requireTag",
        "requireTags",
        "'quoted'",
        '"dq"',
        "a:b",
        "é",
        "💸",
        "-",
        "",
    ]
) | st.text(max_size=8)
VALUES = (
    st.sampled_from(
        [
            "costwarden.dev/v1",
            "Policy",
            "Exemption",
            "ModelCatalog",
            "yes",
            "no",
            "~",
            "true",
            "TRUE",
            "1e999",
            "0x",
            "0x1F",
            "0o9",
            "-.inf",
            ".nan",
            "2026-13-45",
            "2026-12-31",
            "[a, b]",
            "{a: 1}",
            "[",
            "{",
            "&a x",
            "*a",
            "*b",
            "!!int x",
            "!!str 1",
            "!foo x",
            "!!binary aGk=",
            "'unterminated",
            '"bad \\q escape"',
            "|",
            ">-",
            "a: b: c",
            "- x",
            "#",
            "\t",
            "\x00",
            "\x85",
            "\u2028",
            "\ufeff",
            "\udc80",
        ]
    )
    | st.text(max_size=12)
    | st.builds(lambda: "9" * 5000)
)
GENERATED = st.builds(
    lambda indent, dash, key, sep, value: f"{' ' * indent}{dash}{key}{sep}{value}",
    st.integers(0, 10),
    st.sampled_from(["", "- ", "-", "? ", ": "]),
    KEYS,
    st.sampled_from([": ", ":", " : ", "", ":\t"]),
    VALUES,
)
LINES = GENERATED | st.sampled_from(BASE) | st.sampled_from(["---", "...", "%YAML 1.2", "%TAG ! x"])
TEXTS = st.lists(LINES, max_size=25).map("\n".join)
EDITS = st.lists(
    st.tuples(st.sampled_from(["drop", "dup", "insert", "replace"]), st.integers(0, 60), LINES), max_size=6
)


def mutate(edits: list[tuple[str, int, str]]) -> str:
    lines = list(BASE)
    for op, at, line in edits:
        at %= len(lines) + 1
        if op == "drop" and at < len(lines):
            del lines[at]
        elif op == "dup" and at < len(lines):
            lines.insert(at, lines[at])
        elif op == "insert":
            lines.insert(at, line)
        elif at < len(lines):
            lines[at] = line
    return "\n".join(lines)


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # keep lone surrogates as (invalid) bytes


def assert_positioned(result: LoadResult, text: str | None) -> None:
    assert isinstance(result, LoadResult)
    if result.diagnostics:
        assert result.documents == []  # one file: with any error it contributes nothing
    limit = len(split_lines(text)) if text is not None else None
    for d in result.diagnostics:
        assert d.line >= 1 and d.column >= 1 and d.length >= 1, d
        assert d.code and d.message
        if limit is not None:
            assert d.line <= limit, (d, limit)
        d.render()


@settings(max_examples=120, deadline=None)
@given(TEXTS)
def test_any_text_loads_or_reports_positions(text: str) -> None:
    assert_positioned(load_text(text, "fuzz.yaml"), text)


@settings(max_examples=100, deadline=None)
@given(EDITS)
def test_mutated_policies_load_or_report_positions(edits: list[tuple[str, int, str]]) -> None:
    text = mutate(edits)
    assert_positioned(load_text(text, "mutated.yaml"), text)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=300),
        TEXTS.map(encode),
        st.tuples(EDITS, st.binary(max_size=4)).map(lambda e: encode(mutate(e[0])) + e[1]),
    )
)
def test_any_bytes_load_or_raise_policy_error(data: bytes) -> None:
    assert_positioned(load_bytes(data, "fuzz.yaml"), None)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_bytes(data)
        try:
            documents = load_documents(path)
        except PolicyError as exc:
            assert exc.diagnostics
            assert all(d.line >= 1 and d.column >= 1 for d in exc.diagnostics)
        else:
            assert all(doc.file == str(path) for doc in documents)
