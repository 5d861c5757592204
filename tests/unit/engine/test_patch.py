"""JSON Patch building blocks, checked against the ``jsonpatch`` library's RFC 6902 implementation."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costwarden.engine import patch


def apply(doc: Any, ops: list[dict[str, Any]]) -> Any:
    return jsonpatch.apply_patch(copy.deepcopy(doc), ops)


class TestPointers:
    @pytest.mark.parametrize(
        ("token", "escaped"),
        [("a", "a"), ("a/b", "a~1b"), ("m~n", "m~0n"), ("~1", "~01"), ("/~", "~1~0"), ("", "")],
    )
    def test_escape_round_trip(self, token: str, escaped: str) -> None:
        assert patch.escape(token) == escaped
        assert patch.unescape(escaped) == token

    def test_join_and_split(self) -> None:
        pointer = patch.join("/metadata", "labels", "app.kubernetes.io/name")
        assert pointer == "/metadata/labels/app.kubernetes.io~1name"
        assert patch.split(pointer) == ["metadata", "labels", "app.kubernetes.io/name"]
        assert patch.join("", "spec", 0, "x") == "/spec/0/x"
        assert patch.split("") == []
        assert patch.split("/") == [""]

    def test_resolve(self) -> None:
        doc = {"a": {"b/c": [{"d": 1}, {"e": None}]}, "f": "text", "g": 0, "": "root-empty"}
        assert patch.resolve(doc, "") is doc
        assert patch.resolve(doc, "/a/b~1c/0/d") == 1
        assert patch.resolve(doc, "/a/b~1c/1") == {"e": None}
        assert patch.resolve(doc, "/a/b~1c/1/e") is None
        assert patch.resolve(doc, "/a/b~1c/2") is None
        assert patch.resolve(doc, "/a/b~1c/x") is None
        assert patch.resolve(doc, "/f/0") is None
        assert patch.resolve(doc, "/g") == 0
        assert patch.resolve(doc, "/missing/deeper") is None
        assert patch.resolve(doc, "/") == "root-empty"

    def test_resolve_agrees_with_jsonpointer(self) -> None:
        import jsonpointer

        doc = {"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}}, "k~/": 1}
        for pointer in ("/spec/template/spec/containers/1/name", "/k~0~1", "/spec/template"):
            assert patch.resolve(doc, pointer) == jsonpointer.resolve_pointer(doc, pointer)


class TestSetEntries:
    def test_adds_missing_keys(self) -> None:
        doc = {"metadata": {"labels": {"app": "x"}}}
        ops = patch.set_entries(doc, "/metadata/labels", {"team": "ml", "app": "x"})
        assert ops == [{"op": "add", "path": "/metadata/labels/team", "value": "ml"}]
        assert apply(doc, ops) == {"metadata": {"labels": {"app": "x", "team": "ml"}}}

    def test_replaces_different_values(self) -> None:
        doc = {"metadata": {"labels": {"env": "qa"}}}
        ops = patch.set_entries(doc, "/metadata/labels", {"env": "dev"})
        assert ops == [{"op": "replace", "path": "/metadata/labels/env", "value": "dev"}]
        assert apply(doc, ops)["metadata"]["labels"] == {"env": "dev"}

    @pytest.mark.parametrize(
        ("doc", "expected_path"),
        [
            ({"metadata": {}}, "/metadata/labels"),
            ({}, "/metadata"),
            ({"spec": {"template": {}}}, "/spec/template/metadata"),
            ({"spec": {"template": {"metadata": {"labels": None}}}}, "/spec/template/metadata/labels"),
        ],
    )
    def test_creates_missing_parents(self, doc: dict[str, Any], expected_path: str) -> None:
        pointer = "/metadata/labels" if "spec" not in doc else "/spec/template/metadata/labels"
        ops = patch.set_entries(doc, pointer, {"team": "ml"})
        assert len(ops) == 1
        assert ops[0]["path"] == expected_path
        fixed = apply(doc, ops)
        assert patch.resolve(fixed, pointer) == {"team": "ml"}
        assert patch.set_entries(fixed, pointer, {"team": "ml"}) == []

    def test_keys_with_slashes_and_tildes(self) -> None:
        doc: dict[str, Any] = {"metadata": {"labels": {}}}
        entries = {"karpenter.sh/capacity-type": "spot", "a~b": "c"}
        ops = patch.set_entries(doc, "/metadata/labels", entries)
        assert {op["path"] for op in ops} == {"/metadata/labels/karpenter.sh~1capacity-type", "/metadata/labels/a~0b"}
        assert apply(doc, ops)["metadata"]["labels"] == entries

    def test_replaces_a_non_mapping(self) -> None:
        doc = {"metadata": {"labels": "oops"}}
        ops = patch.set_entries(doc, "/metadata/labels", {"team": "ml"})
        assert ops == [{"op": "replace", "path": "/metadata/labels", "value": {"team": "ml"}}]
        assert apply(doc, ops) == {"metadata": {"labels": {"team": "ml"}}}

    def test_does_not_mutate_the_document(self) -> None:
        doc = {"metadata": {"labels": {"a": "b"}}}
        before = copy.deepcopy(doc)
        patch.set_entries(doc, "/metadata/labels", {"c": "d"})
        assert doc == before


class TestAppendItems:
    def test_creates_the_list(self) -> None:
        doc: dict[str, Any] = {"spec": {}}
        ops = patch.append_items(doc, "/spec/tolerations", [{"key": "a"}])
        assert apply(doc, ops) == {"spec": {"tolerations": [{"key": "a"}]}}

    def test_creates_missing_parents(self) -> None:
        doc: dict[str, Any] = {}
        ops = patch.append_items(doc, "/spec/template/spec/tolerations", [{"key": "a"}])
        assert apply(doc, ops) == {"spec": {"template": {"spec": {"tolerations": [{"key": "a"}]}}}}

    def test_top_level_list(self) -> None:
        ops = patch.append_items({}, "/items", [1, 2])
        assert apply({}, ops) == {"items": [1, 2]}

    def test_appends_only_missing_items(self) -> None:
        doc = {"tolerations": [{"key": "a"}, {"key": "b"}]}
        ops = patch.append_items(doc, "/tolerations", [{"key": "b"}, {"key": "c"}])
        assert ops == [{"op": "add", "path": "/tolerations/-", "value": {"key": "c"}}]
        fixed = apply(doc, ops)
        assert fixed["tolerations"] == [{"key": "a"}, {"key": "b"}, {"key": "c"}]
        assert patch.append_items(fixed, "/tolerations", [{"key": "b"}, {"key": "c"}]) == []


_keys = st.text(alphabet="ab/~.-", min_size=1, max_size=4)
_values = st.text(alphabet="xyz", max_size=3)
_docs = st.recursive(
    st.dictionaries(_keys, _values, max_size=3),
    lambda children: st.dictionaries(_keys, children | _values, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(doc=_docs, path=st.lists(_keys, min_size=1, max_size=3), entries=st.dictionaries(_keys, _values, max_size=3))
def test_set_entries_makes_the_map_contain_the_entries(
    doc: dict[str, Any], path: list[str], entries: dict[str, str]
) -> None:
    pointer = patch.join("", *path)
    # the walk only descends through mappings; a string on the way has no place to add to
    parent: Any = doc
    for token in path[:-1]:
        if not isinstance(parent, dict):
            break
        parent = parent.get(token)
    if parent is not None and not isinstance(parent, dict):
        return
    ops = patch.set_entries(doc, pointer, entries)
    fixed = apply(doc, ops)
    target = patch.resolve(fixed, pointer)
    assert isinstance(target, dict)
    for key, value in entries.items():
        assert target[key] == value
    assert patch.set_entries(fixed, pointer, entries) == []
    assert apply(fixed, ops) == fixed
