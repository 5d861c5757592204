"""An empty CEL string is a load error at its value, never read as "no condition": ``when: ""``
in ``match`` would apply the policy to every subject, in ``exclude`` it would silently drop a
condition the author meant to write; ``expr: {cel: ""}`` would fail on CEL's parser message."""

from __future__ import annotations

import pytest
from policy_support import CompilePolicies

from costwarden.engine.cel import CelCompileError, compile_cel
from costwarden.errors import PolicyError


def policy(block: str, rule: str = "requireTags: {keys: [team]}") -> str:
    """A policy whose ``block`` is on line 6 and ``rule`` on line 9."""
    return (
        "apiVersion: costwarden.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  subject: resource\n"
        f"  {block}\n  rules:\n    - name: r\n      {rule}\n"
    )


def only_error(compile_policies: CompilePolicies, text: str) -> tuple[int, int, int, str, str, str]:
    with pytest.raises(PolicyError) as info:
        compile_policies(text)
    [d] = info.value.diagnostics
    assert d.source_line is not None and d.hint is not None
    return d.line, d.column, d.length, d.code, d.message, d.hint


@pytest.mark.parametrize("block", ["match", "exclude"])
@pytest.mark.parametrize("written", ['""', "''", '"   "', '" \\t "'])
def test_a_blank_when_is_an_invalid_cel_error_at_its_value(
    compile_policies: CompilePolicies, block: str, written: str
) -> None:
    text = policy(f"{block}:\n    when: {written}")
    line, column, length, code, message, hint = only_error(compile_policies, text)
    assert (line, code) == (7, "invalid-cel")
    assert (column, length) == (11, len(written))  # the whole value is underlined
    assert "empty" in message
    assert "subject" in hint and "remove 'when'" in hint


def test_a_blank_when_in_a_flow_mapping_is_positioned_too(compile_policies: CompilePolicies) -> None:
    text = policy('exclude: {namespaces: [kube-system], when: ""}')
    line, column, length, code, _, _ = only_error(compile_policies, text)
    assert (line, column, length, code) == (6, 46, 2, "invalid-cel")


def test_a_blank_when_in_a_block_scalar_is_an_error(compile_policies: CompilePolicies) -> None:
    text = policy("match:\n    when: |")  # the next line is less indented: the scalar is empty
    line, _, _, code, message, _ = only_error(compile_policies, text)
    assert (line, code) == (7, "invalid-cel") and "empty" in message


def test_a_null_when_still_means_no_condition(compile_policies: CompilePolicies) -> None:
    """``when: null`` (or ``when:``) is YAML for "not given", as for every optional key."""
    assert len(compile_policies(policy("match: {when: null}"))) == 1


@pytest.mark.parametrize("written", ['""', '"  "'])
def test_a_blank_expr_rule_is_an_invalid_cel_error_with_a_hint(compile_policies: CompilePolicies, written: str) -> None:
    text = policy("match: {}", f"expr: {{message: m, cel: {written}}}")
    line, column, length, code, message, hint = only_error(compile_policies, text)
    assert (line, code) == (9, "invalid-cel")
    assert (column, length) == (31, len(written))
    assert message == "invalid CEL: the expression is empty"
    assert "subject" in hint


def test_compile_cel_rejects_a_blank_expression_with_a_hint() -> None:
    for source in ("", "  ", "\n"):
        with pytest.raises(CelCompileError) as info:
            compile_cel(source)
        assert info.value.message == "the expression is empty"
        assert info.value.hint is not None


def test_other_cel_errors_in_expr_rules_carry_a_hint(compile_policies: CompilePolicies) -> None:
    """Like those in ``when``: a syntax error says what expressions can see."""
    text = policy("match: {}", 'expr: {message: m, cel: "subject.name =="}')
    _, _, _, code, _, hint = only_error(compile_policies, text)
    assert code == "invalid-cel" and "subject" in hint
