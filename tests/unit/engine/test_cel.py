"""CEL: compiled once at load with positioned errors; unknown names rejected; evaluation errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from costwarden.engine.cel import MAX_LENGTH, MAX_NESTING, CelCompileError, CelEvalError, CelProgram, compile_cel
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.subjects import subject_from_dict
from costwarden.errors import PolicyError

CompilePolicies = Callable[..., PolicySet]

SUBJECT = subject_from_dict(
    {
        "type": "resource",
        "provider": "kubernetes",
        "kind": "Job",
        "name": "train-7b",
        "namespace": "ml",
        "tags": {"team": "ml", "env": "prod"},
        "workload": {"class": "batch", "gpus": 4, "gpu_type": "H100"},
    }
).as_cel


class TestCompile:
    def test_returns_a_program(self) -> None:
        program = compile_cel("subject.workload.gpus > 2.0")
        assert isinstance(program, CelProgram)
        assert program.source == "subject.workload.gpus > 2.0"
        assert program.evaluate_bool(SUBJECT) is True

    @pytest.mark.parametrize(
        ("source", "offset"),
        [
            ("subject.name ==", 15),  # at the end of the input
            (") == 1", 0),
            ("1 == 1 1", 7),
            ('subject.name == "a" &&\n  )', 25),  # line 2, third character
        ],
    )
    def test_syntax_errors_carry_a_zero_based_offset(self, source: str, offset: int) -> None:
        with pytest.raises(CelCompileError) as info:
            compile_cel(source)
        assert "Syntax error" in info.value.message
        assert info.value.offset == offset

    @pytest.mark.parametrize(
        ("source", "name", "offset"),
        [
            ("foo.bar == 1", "foo", 0),
            ("subject.name == other", "other", 16),
            ("request.max_tokens > 10", "request", 0),
        ],
    )
    def test_unknown_variables_are_rejected(self, source: str, name: str, offset: int) -> None:
        with pytest.raises(CelCompileError) as info:
            compile_cel(source)
        assert info.value.message == f"unknown variable '{name}': expressions see only 'subject'"
        assert info.value.offset == offset

    @pytest.mark.parametrize(
        ("source", "name", "offset"),
        [
            ("myfn(subject)", "myfn", 0),
            ("subject.name.frob()", "frob", 13),
            ("subject.x && nope(1)", "nope", 13),
        ],
    )
    def test_unknown_functions_are_rejected(self, source: str, name: str, offset: int) -> None:
        with pytest.raises(CelCompileError) as info:
            compile_cel(source)
        assert info.value.message == f"unknown function '{name}'"
        assert info.value.offset == offset

    @pytest.mark.parametrize(
        "source",
        [
            'subject.name.startsWith("train") && subject.name.endsWith("7b") && subject.name.contains("-")',
            'subject.name.matches("^train-[0-9]+b$")',
            "size(subject.tags) == 2 && subject.tags.size() == 2",
            '"team" in subject.tags && has(subject.tags.env)',
            "int(subject.workload.gpus) == 4 && double(4) == subject.workload.gpus",
            'string(subject.workload.gpus) == "4"',
            'subject.namespace != null ? subject.namespace == "ml" : false',
            'timestamp("2026-01-01T00:00:00Z") < timestamp("2027-01-01T00:00:00Z")',
            'duration("1h") > duration("59m")',
        ],
    )
    def test_allowed_functions_compile_and_hold(self, source: str) -> None:
        assert compile_cel(source).evaluate_bool(SUBJECT) is True

    @pytest.mark.parametrize(
        "source",
        [
            "!(subject.workload.gpus > 8.0)",
            "-subject.workload.gpus < 0.0",
        ],
    )
    def test_unary_operators_are_not_unknown_functions(self, source: str) -> None:
        assert compile_cel(source).evaluate_bool(SUBJECT) is True

    @pytest.mark.parametrize(
        "source",
        [
            'subject.tags.exists(k, k == "team")',
            'subject.tags.all(k, subject.tags[k] != "")',
            'subject.tags.exists_one(k, k.startsWith("t"))',
            "subject.tags.map(k, k).size() == 2",
            'subject.tags.filter(k, k == "env").size() == 1',
        ],
    )
    def test_comprehension_variables_are_not_unknown_variables(self, source: str) -> None:
        """The module docstring promises comprehensions over the subject's lists and maps."""
        assert compile_cel(source).evaluate_bool(SUBJECT) is True

    @pytest.mark.parametrize(
        "source",
        [
            'subject.name.lowerAscii() == "train-7b"',
            'subject.name.upperAscii() == "TRAIN-7B"',
            '" a ".trim() == "a"',
            '"a,b".split(",") == ["a", "b"]',
            '["a", "b"].join(",") == "a,b"',
            '"aa".replace("a", "b") == "bb"',
            "max(1, 2) == 2",
            "min(1, 2) == 1",
            'bool("true")',
        ],
    )
    def test_what_loads_also_runs(self, source: str) -> None:
        """A function accepted at load time must exist at run time; otherwise every subject the
        policy sees becomes an ``error`` result (a deny under the default ``onError``)."""
        try:
            program = compile_cel(source)
        except CelCompileError:
            return  # rejecting it at load time is fine too
        assert program.evaluate_bool(SUBJECT) is True

    def test_length_limit(self) -> None:
        source = "subject.name == '" + "a" * MAX_LENGTH + "'"
        with pytest.raises(CelCompileError, match="characters long"):
            compile_cel(source)

    def test_nesting_limit(self) -> None:
        depth = MAX_NESTING + 1
        source = "(" * depth + "true" + ")" * depth
        with pytest.raises(CelCompileError, match="nests"):
            compile_cel(source)
        ok = "(" * MAX_NESTING + "true" + ")" * MAX_NESTING
        assert compile_cel(ok).evaluate_bool({}) is True


class TestEvaluate:
    def test_value_and_boolean(self) -> None:
        program = compile_cel("subject.name")
        assert program.evaluate(SUBJECT) == "train-7b"
        with pytest.raises(CelEvalError, match="expression returned str, expected a boolean"):
            program.evaluate_bool(SUBJECT)

    @pytest.mark.parametrize(
        "source",
        [
            "subject.workload.gpus / 0.0 > 1.0 && 1 / 0 == 1",
            "subject.tags.owner == 'x'",
            "subject.name > 1",
            "subject.missing.deeper == 1",
            "subject.workload.gpus + 'x' == 'y'",
        ],
    )
    def test_runtime_errors(self, source: str) -> None:
        program = compile_cel(source)
        with pytest.raises(CelEvalError) as info:
            program.evaluate_bool(SUBJECT)
        assert str(info.value)
        assert "\n" not in str(info.value)

    def test_null_fields_compare(self) -> None:
        assert compile_cel("subject.region == null").evaluate_bool(SUBJECT) is True

    def test_programs_are_reusable(self) -> None:
        program = compile_cel('subject.tags.team == "ml"')
        assert [program.evaluate_bool({"tags": {"team": t}}) for t in ("ml", "ds", "ml")] == [True, False, True]


def _policy(when: str) -> str:
    return f"""apiVersion: costwarden.dev/v1
kind: Policy
metadata: {{name: p}}
spec:
  subject: resource
  match:
    when: {when}
  rules:
    - name: r
      expr: {{cel: {when}, message: m}}
"""


class TestAtLoadTime:
    @pytest.mark.parametrize(
        ("when", "needle"),
        [
            ('"subject.x && nope(1)"', "nope"),
            ("subject.x && nope(1)", "nope"),
            ('"foo.bar == 1"', "foo"),
            ("'subject.name == 1 1'", "1'"),
            ('"subject.name == zed"', "zed"),
        ],
    )
    def test_errors_point_into_the_expression(self, compile_policies: CompilePolicies, when: str, needle: str) -> None:
        with pytest.raises(PolicyError) as info:
            compile_policies(_policy(when))
        diagnostics = info.value.diagnostics
        assert [d.code for d in diagnostics] == ["invalid-cel", "invalid-cel"]
        assert [d.line for d in diagnostics] == [7, 10]
        for d in diagnostics:
            assert d.message.startswith("invalid CEL: ")
            assert d.source_line is not None
            expected = d.source_line.rindex(needle) + 1 if needle == "1'" else d.source_line.index(needle) + 1
            assert d.column == expected, d.render()

    def test_every_bad_expression_is_reported(self, compile_policies: CompilePolicies) -> None:
        with pytest.raises(PolicyError) as info:
            compile_policies(_policy('"a.b"'), _policy('"subject.x &&"').replace("name: p", "name: q"))
        assert len(info.value.diagnostics) == 4

    def test_non_boolean_when_is_an_error_result(self, compile_policies: CompilePolicies) -> None:
        ps = compile_policies(_policy('"subject.name"'))
        [r] = ps.evaluate(subject_from_dict({"type": "resource", "provider": "aws", "kind": "x"})).results
        assert (r.result, r.rule) == ("error", "match")
        assert "expected a boolean" in r.message


class TestPositionsOfUnknownNames:
    """An unknown name is pointed at where it is used, not inside a longer name or a string."""

    @pytest.mark.parametrize(
        ("source", "offset"),
        [
            ("subject.model == 'x' && s > 1", 24),  # not the 's' that starts 'subject'
            ('subject.model == "foo" || foo', 26),  # not the 'foo' inside the string literal
        ],
    )
    def test_unknown_variable_offset(self, source: str, offset: int) -> None:
        with pytest.raises(CelCompileError) as info:
            compile_cel(source)
        assert info.value.message.startswith("unknown variable")
        assert info.value.offset == offset, source[info.value.offset :]

    def test_unknown_function_offset_is_the_call_not_a_longer_name(self) -> None:
        source = "subject.x + sub(1)"
        with pytest.raises(CelCompileError) as info:
            compile_cel(source)
        assert info.value.message == "unknown function 'sub'"
        assert info.value.offset == 12


class TestPositionsInsideScalars:
    """A CEL syntax error is pointed at the offending character in any YAML scalar style."""

    @staticmethod
    def _error(compile_policies: CompilePolicies, cel_lines: str) -> tuple[int, int, str]:
        text = (
            "apiVersion: costwarden.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  subject: llm_call\n"
            "  rules:\n    - name: r\n      expr:\n        message: m\n" + cel_lines
        )
        with pytest.raises(PolicyError) as info:
            compile_policies(text)
        [d] = info.value.diagnostics
        assert d.code == "invalid-cel"
        assert d.source_line is not None
        return d.line, d.column, d.source_line

    def test_literal_block(self, compile_policies: CompilePolicies) -> None:
        line, column, source = self._error(
            compile_policies, '        cel: |\n          subject.model == "a" &&\n            subject.model ==== "b"\n'
        )
        assert (line, source[column - 1 :]) == (12, '== "b"')

    def test_folded_plain_scalar(self, compile_policies: CompilePolicies) -> None:
        line, column, source = self._error(
            compile_policies, "        cel: subject.model == 'a' &&\n          subject.model ==== 1\n"
        )
        assert (line, source[column - 1 :]) == (11, "== 1")

    def test_double_quoted_with_escapes(self, compile_policies: CompilePolicies) -> None:
        line, column, source = self._error(
            compile_policies, '        cel: "subject.model == \\"a\\" && subject.model ==== 1"\n'
        )
        assert (line, source[column - 1 :]) == (10, '== 1"')

    def test_single_quoted_with_escapes(self, compile_policies: CompilePolicies) -> None:
        line, column, source = self._error(
            compile_policies, "        cel: 'subject.model == ''a'' && subject.model ==== 1'\n"
        )
        assert (line, source[column - 1 :]) == (10, "== 1'")

    def test_folded_block_with_crlf(self, compile_policies: CompilePolicies) -> None:
        text = "        cel: >-\n          subject.model == 'a' &&\n          subject.model ==== 1\n"
        line, column, source = self._error(compile_policies, text.replace("\n", "\r\n"))
        assert (line, source[column - 1 :]) == (12, "== 1")


class TestMisspeltFields:
    """A field the subject type does not have fails on every subject (an enforced policy would deny
    them all): it is an error when the policy loads, at the field, with the closest real name."""

    def _errors(self, compile_policies: CompilePolicies, when: str, subject: str = "resource") -> list[str]:
        text = _policy(when).replace("subject: resource", f"subject: {subject}")
        try:
            compile_policies(text)
        except PolicyError as exc:
            return [d.render() for d in exc.diagnostics]
        return []

    def test_a_misspelt_field_is_an_error_with_the_closest_name(self, compile_policies: CompilePolicies) -> None:
        errors = self._errors(compile_policies, '"subject.workloads.gpus > 0"')
        assert len(errors) == 2  # in the match and in the rule
        assert errors[0].startswith("inline.yaml:7:20: error[invalid-cel]: invalid CEL: resource subjects have "
                                    "no field 'workloads'")
        assert "hint: did you mean 'workload'? resource subjects have: annotations, capacity" in errors[0]

    def test_a_misspelt_field_of_a_record_is_caught_too(self, compile_policies: CompilePolicies) -> None:
        [error, _] = self._errors(compile_policies, '"subject.workload.gpu > 0"')
        assert "resource subjects have no field 'workload.gpu'" in error
        assert "did you mean 'gpus'? subject.workload has: class, gpu_type, gpus, instance_type, replicas" in error
        [error, _] = self._errors(compile_policies, '"subject.usage.input_token > 0"', "llm_call")
        assert "did you mean 'input_tokens'?" in error

    @pytest.mark.parametrize(
        ("when", "subject"),
        [
            ('"subject.tags.anything == \\"x\\""', "resource"),  # maps of the subject's own keys
            ('"subject.annotations.x == \\"y\\""', "resource"),
            ('"subject.args.max_num_seqs > 1"', "serving_config"),
            ('"subject.usage.input_tokens > 0 && subject.request.max_tokens > 0"', "llm_call"),
            ('"subject.tags.exists(k, k == \\"subject.nope\\")"', "resource"),  # a string, not a read
            ('"subject.unknown_tags.values.size() == 0"', "resource"),
            ('"subject.size() > 3 && subject.workload.size() > 0"', "resource"),  # methods, not fields
        ],
    )
    def test_real_fields_and_map_keys_load(self, compile_policies: CompilePolicies, when: str, subject: str) -> None:
        assert self._errors(compile_policies, when, subject) == []


def test_a_method_called_on_the_subject_reads_all_of_it() -> None:
    # subject.size() was taken for a field named 'size': the expression saw an empty subject
    from costwarden.engine.cel import compile_cel

    program = compile_cel("subject.size() > 3")
    assert program.fields is None
    assert program.evaluate({"a": 1, "b": 2, "c": 3, "d": 4}) is True
    assert compile_cel("subject.tags.team == 'x' && subject.workload.gpus > 0").fields == ("tags", "workload")
