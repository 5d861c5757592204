"""The loader: YAML 1.2 values, every problem as a positioned diagnostic with a stable code."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from costwarden.engine.diagnostics import Diagnostic, Position
from costwarden.engine.loader import LoadResult, load_bytes, load_documents, load_paths, load_text
from costwarden.engine.rules.budget import Budget
from costwarden.engine.schema import ExemptionDocument, PolicyDocument
from costwarden.engine.yamlsource import read_stream
from costwarden.errors import PolicyError

POLICY = """\
apiVersion: costwarden.dev/v1
kind: Policy
metadata:
  name: user-daily-budget
  title: No user spends more than $25 a day
  severity: high
spec:
  subject: llm_call
  rules:
  - name: daily
    budget:
      per: [user]
      window: day
      limitUsd: 25
"""

EXEMPTION = """\
apiVersion: costwarden.dev/v1
kind: Exemption
metadata:
  name: batch-jobs
spec:
  policies:
  - policy: user-daily-budget
  expires: 2026-12-31
  owner: finops@example.com
  reason: quarter-end batch
"""


def policy(*rules: str, name: str = "p", subject: str = "llm_call") -> str:
    """A policy document whose rules start on line 9."""
    body = "\n".join(textwrap.indent(textwrap.dedent(r).strip("\n"), "  ") for r in rules)
    return (f"apiVersion: costwarden.dev/v1\nkind: Policy\nmetadata:\n  name: {name}\n"
            f"spec:\n  subject: {subject}\n  rules:\n{body}\n")


def only(result: LoadResult) -> Diagnostic:
    assert len(result.diagnostics) == 1, [d.render() for d in result.diagnostics]
    return result.diagnostics[0]


def where(d: Diagnostic) -> tuple[str, int, int]:
    return d.code, d.line, d.column


# ---- loading -------------------------------------------------------------------------------


def test_valid_documents_load_with_their_place() -> None:
    result = load_text(POLICY + "---\n" + EXEMPTION, "two.yaml")
    assert result.diagnostics == []
    first, second = result.documents
    assert (first.file, first.index, first.kind, first.line) == ("two.yaml", 0, "Policy", 1)
    assert (second.index, second.kind, second.line) == (1, "Exemption", 16)
    assert isinstance(first.model, PolicyDocument)
    assert isinstance(second.model, ExemptionDocument)
    assert second.model.spec.expires.isoformat().startswith("2026-12-31")


def test_locate_points_at_keys_values_and_nearest_ancestor() -> None:
    doc = load_text(POLICY).documents[0]
    assert doc.locate(("spec", "rules", 0, "budget", "limitUsd")) == Position(14, 7, 8)
    assert doc.locate_value(("spec", "rules", 0, "budget", "limitUsd")) == Position(14, 17, 2)
    assert doc.locate(("spec", "rules", 0)) == Position(10, 5, 1)
    assert doc.locate(("spec", "rules", 0, "budget", "nope", 3)) == Position(11, 5, 6)
    assert doc.locate(()) == Position(1, 1, 1)
    assert doc.locate_value(("metadata", "title"), offset=3) == Position(5, 13, 1)
    d = doc.diagnostic(("spec", "subject"), "wrong-subject", "nope", "a hint", value=True)
    assert (d.line, d.column, d.length, d.source_line) == (8, 12, 8, "  subject: llm_call")


def test_yaml_1_2_core_scalars() -> None:
    text = ("a: yes\nb: on\nc: True\nd: FALSE\ne: 0x1F\nf: 0o17\ng: 1e3\nh: -.inf\ni: ~\nj:\n"
            "k: '1'\nl: 2026-12-31\nm: 1_000\nn: 1:30\no: null\np: \"true\"\nq: 012\n")
    (doc,) = read_stream(text).documents
    assert doc.data == {"a": "yes", "b": "on", "c": True, "d": False, "e": 31, "f": 15, "g": 1000.0,
                        "h": float("-inf"), "i": None, "j": None, "k": "1", "l": "2026-12-31",
                        "m": "1_000", "n": "1:30", "o": None, "p": "true", "q": 12}
    assert doc.yaml11_booleans == [("a",), ("b",)]


def test_yaml_1_1_words_in_string_fields_stay_strings() -> None:
    doc = load_text(POLICY.replace("title: No user spends more than $25 a day", "title: on")).documents[0]
    assert doc.model.metadata.title == "on"


def test_anchors_and_merge_keys() -> None:
    text = policy("""
        - name: a
          budget: &base {per: [user], window: day, limitUsd: 25}
        - name: b
          budget:
            <<: *base
            limitUsd: 50
        """)
    result = load_text(text)
    assert result.diagnostics == []
    rules = result.documents[0].model.spec.rules
    assert (rules[0].budget.limitUsd, rules[1].budget.limitUsd, rules[1].budget.window) == (25, 50, "day")


def test_empty_files_and_documents_load_nothing() -> None:
    for text in ("", "# only a comment\n", "---\n...\n", "---\n---\n"):
        assert load_text(text) == LoadResult([], [])
    assert [d.index for d in load_text("---\n" + POLICY).documents] == [0]
    assert [d.index for d in load_text("---\n---\n" + POLICY).documents] == [1]


def test_load_documents_raises_policy_error_with_every_diagnostic(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(POLICY)
    assert [d.kind for d in load_documents(good)] == ["Policy"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(POLICY.replace("severity: high", "severity: hihg").replace("per: [user]", "per: user"))
    with pytest.raises(PolicyError) as info:
        load_documents(good, bad)
    assert [where(d) for d in info.value.diagnostics] == [("invalid-value", 6, 13), ("invalid-type", 12, 12)]


# ---- rendering -----------------------------------------------------------------------------


def test_rendering_matches_the_style_guide() -> None:
    file = "policies/llm/user-daily-budget/user-daily-budget.yaml"
    d = only(load_text(POLICY.replace("limitUsd: 25", "limtUsd: 25"), file))
    fields = ", ".join(Budget.model_fields)
    assert d.render() == (
        f"{file}:14:7: error[unknown-field]: 'limtUsd' is not a field of 'budget'\n"
        "   14 |       limtUsd: 25\n"
        "      |       ^^^^^^^\n"
        f"   = hint: did you mean 'limitUsd'? fields: {fields}"
    )


# ---- codes ---------------------------------------------------------------------------------


def test_yaml_syntax() -> None:
    d = only(load_text("apiVersion: costwarden.dev/v1\nkind: a: b\n"))
    assert where(d) == ("yaml-syntax", 2, 8)
    assert "mapping values are not allowed" in d.message
    assert d.source_line == "kind: a: b"


def test_yaml_syntax_unclosed_flow_names_where_it_started() -> None:
    d = only(load_text("a: [1, 2\nb: 3\n"))
    assert d.code == "yaml-syntax"
    assert d.hint is not None and "line 1, column 4" in d.hint


def test_tabs_get_a_hint() -> None:
    d = only(load_text("metadata:\n\tname: x\n"))
    assert where(d) == ("yaml-syntax", 2, 1)
    assert d.hint == "YAML does not allow tabs for indentation; indent with spaces"


def test_duplicate_key_reports_the_second_and_names_the_first() -> None:
    d = only(load_text(POLICY.replace("  severity: high\n", "  severity: high\n  name: again\n")))
    assert where(d) == ("duplicate-key", 7, 3)
    assert "'name'" in d.message and "line 4" in d.message


def test_not_a_mapping() -> None:
    assert where(only(load_text("- a\n- b\n"))) == ("not-a-mapping", 1, 1)
    assert where(only(load_text(POLICY + "---\njust a string\n"))) == ("not-a-mapping", 16, 1)


def test_missing_field_points_at_the_parent_key() -> None:
    d = only(load_text(POLICY.replace("      limitUsd: 25\n", "")))
    assert where(d) == ("missing-field", 11, 5)
    assert d.message == "missing required field 'limitUsd' in 'budget'"
    assert d.hint == "required fields: per, limitUsd, window"
    d = only(load_text(POLICY.split("spec:")[0]))
    assert where(d) == ("missing-field", 1, 1)
    assert "'spec'" in d.message


def test_unknown_field() -> None:
    d = only(load_text(POLICY.replace("  severity: high", "  severty: high")))
    assert where(d) == ("unknown-field", 6, 3)
    assert d.message == "'severty' is not a field of 'metadata'"
    assert d.hint is not None and d.hint.startswith("did you mean 'severity'? fields: name, title")
    assert d.length == len("severty")


def test_invalid_type() -> None:
    d = only(load_text(POLICY.replace("limitUsd: 25", "limitUsd: lots")))
    assert where(d) == ("invalid-type", 14, 17)
    assert d.message == "'limitUsd' must be a number, got a string ('lots')"
    d = only(load_text(POLICY.replace("per: [user]", "per: user")))
    assert where(d) == ("invalid-type", 12, 12)
    assert d.hint == "write a list: [user]"
    d = only(load_text(POLICY.replace("  severity: high", "  labels: {team: 7}")))
    assert where(d) == ("invalid-type", 6, 18)
    assert d.hint == 'quote it to make it a string: "7"'


def test_invalid_value_lists_choices_and_patterns() -> None:
    d = only(load_text(POLICY.replace("severity: high", "severity: hihg")))
    assert where(d) == ("invalid-value", 6, 13)
    assert d.hint == "did you mean 'high'? valid values: info, low, medium, high, critical"
    d = only(load_text(POLICY.replace("name: user-daily-budget", "name: User_Budget")))
    assert where(d) == ("invalid-value", 4, 9)
    assert d.hint is not None and "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" in d.hint
    d = only(load_text(POLICY.replace("limitUsd: 25", "limitUsd: -1")))
    assert where(d) == ("invalid-value", 14, 17)


def test_unknown_api_version_and_kind() -> None:
    d = only(load_text(POLICY.replace("costwarden.dev/v1", "costwarden.dev/v2")))
    assert where(d) == ("unknown-api-version", 1, 13)
    assert d.hint == "use 'costwarden.dev/v1'"
    d = only(load_text(POLICY.replace("kind: Policy", "kind: Polcy")))
    assert where(d) == ("unknown-kind", 2, 7)
    assert d.hint == "did you mean 'Policy'? kinds: Policy, Exemption, ModelCatalog"


def test_rule_kind_problems() -> None:
    text = policy(
        "- name: a\n  requireTag: {keys: [team]}",  # lines 8-9
        "- name: b",  # line 10
        "- name: c\n  requireTags: {keys: [team]}\n  budget: {per: [user], window: day, limitUsd: 1}",
        "- name: a\n  maxOutputTokens: {limit: 10}",  # lines 14-15
    )
    result = load_text(text)
    assert [where(d) for d in result.diagnostics] == [
        ("unknown-rule-kind", 9, 5),
        ("missing-rule-kind", 10, 5),
        ("multiple-rule-kinds", 13, 5),
        ("duplicate-rule-name", 14, 11),
    ]
    unknown, missing, multiple, duplicate = result.diagnostics
    assert unknown.hint is not None and unknown.hint.startswith("did you mean 'requireTags'? rule kinds: ")
    assert missing.hint is not None and "requireTags" in missing.hint
    assert "requireTags, budget" in multiple.message
    assert duplicate.hint is not None and "line 8" in duplicate.hint


def test_unknown_key_beside_a_rule_kind_is_an_unknown_field() -> None:
    d = only(load_text(policy("- name: a\n  mesage: hi\n  maxOutputTokens: {limit: 10}")))
    assert where(d) == ("unknown-field", 9, 5)
    assert d.hint is not None and d.hint.startswith("did you mean 'message'?")


def test_a_rule_that_is_not_a_mapping() -> None:
    assert where(only(load_text(policy("- maxOutputTokens")))) == ("invalid-type", 8, 5)


def test_rule_parameter_errors_are_reported_inside_the_rule() -> None:
    d = only(load_text(policy("- name: a\n  requireTags: {keys: team}")))
    assert where(d) == ("invalid-type", 9, 25)


def test_invalid_date() -> None:
    d = only(load_text(EXEMPTION.replace("2026-12-31", "2026-13-45")))
    assert where(d) == ("invalid-date", 8, 12)
    assert "month" in d.message
    d = only(load_text(EXEMPTION.replace("2026-12-31", "20261231")))
    assert where(d) == ("invalid-date", 8, 12)


def test_yaml_1_1_boolean_in_a_boolean_field() -> None:
    d = only(load_text(policy("- name: a\n  requirePromptCaching: {fix: yes}")))
    assert where(d) == ("yaml-1.1-boolean", 9, 33)
    assert d.hint == "use true or false"
    assert load_text(policy("- name: a\n  requirePromptCaching: {fix: True}")).diagnostics == []


def test_non_string_keys() -> None:
    result = load_text(POLICY.replace("  severity: high\n", "  1: x\n  [a]: b\n  ? {a: 1}\n  : c\n"))
    assert [where(d) for d in result.diagnostics] == [
        ("invalid-type", 6, 3), ("invalid-type", 7, 3), ("invalid-type", 8, 5)]
    assert result.diagnostics[0].hint == 'quote it: "1"'


def test_every_error_in_a_file_is_reported() -> None:
    text = (POLICY.replace("severity: high", "severity: loud").replace("limitUsd: 25", "limtUsd: 25")
            .replace("subject: llm_call", "subject: llm") + "  enforcement: {default: block}\n")
    result = load_text(text)
    assert [where(d) for d in result.diagnostics] == [
        ("invalid-value", 6, 13), ("invalid-value", 8, 12), ("unknown-field", 14, 7), ("invalid-value", 15, 26)]
    assert result.documents == []


# ---- files ---------------------------------------------------------------------------------


def test_no_such_file() -> None:
    d = only(load_paths("/nonexistent/policy.yaml"))
    assert (d.file, d.line, d.column, d.code) == ("/nonexistent/policy.yaml", 1, 1, "no-such-file")


def test_a_bad_file_among_good_ones_contributes_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(POLICY)
    (tmp_path / "b.yaml").write_text(POLICY.replace("user-daily-budget", "b") + "---\n"
                                     + EXEMPTION.replace("owner: finops@example.com", "owner: ''"))
    (tmp_path / "c.yaml").write_text(EXEMPTION)
    result = load_paths(tmp_path)
    assert [(Path(d.file).name, d.kind) for d in result.documents] == [("a.yaml", "Policy"), ("c.yaml", "Exemption")]
    assert [(Path(d.file).name, *where(d)) for d in result.diagnostics] == [("b.yaml", "invalid-value", 24, 10)]


def test_duplicate_policy_name_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(POLICY)
    (tmp_path / "b.yaml").write_text(EXEMPTION.replace("batch-jobs", "user-daily-budget") + "---\n" + POLICY)
    result = load_paths(tmp_path)
    d = only(result)
    assert (Path(d.file).name, *where(d)) == ("b.yaml", "duplicate-policy-name", 15, 9)
    assert d.hint == f"first defined at {tmp_path / 'a.yaml'}:4"
    assert [Path(doc.file).name for doc in result.documents] == ["a.yaml"]  # same name, other kind: fine


def test_directories_recurse_sorted_and_skip_library_test_data(tmp_path: Path) -> None:
    for rel in ("z/z.yaml", "a/b/deep.yml", "a/a.yaml", "a/tests.yaml", "a/samples/denied-x.yaml",
                ".git/x.yaml", "a/notes.txt"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        name = rel.split("/")[-1].split(".")[0]
        path.write_text(POLICY.replace("user-daily-budget", name.replace("_", "-")))
    result = load_paths(tmp_path, tmp_path / "a" / "a.yaml")
    assert result.diagnostics == []
    assert [str(Path(d.file).relative_to(tmp_path)) for d in result.documents] == [
        "a/a.yaml", "a/b/deep.yml", "z/z.yaml"]


def test_nothing_but_diagnostics_escape_on_junk(tmp_path: Path) -> None:
    cases: dict[str, bytes] = {
        "utf8.yaml": b"name: ok\nbad: caf\xe9\n",
        "binary.yaml": bytes(range(256)),
        "nul.yaml": b"a: b\x00\n",
        "deep.yaml": b"a: " + b"[" * 5000 + b"]" * 5000,
        "deepblock.yaml": "".join(" " * i + "k:\n" for i in range(300)).encode(),
        "bigint.yaml": b"a: " + b"9" * 10000,
        "alias-loop.yaml": b"a: &a [*a]\n",
        "laughs.yaml": b"a: &a [x, x, x, x, x, x, x, x, x, x]\n" + b"".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n".encode() for i in range(8)),
        "tag.yaml": b"a: !python/object:os.system x\n",
        "surrogate.yaml": "a: \ud800\n".encode("utf-8", "surrogatepass"),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    result = load_paths(tmp_path)
    assert result.documents == []
    by_file = {Path(d.file).name: d for d in result.diagnostics}
    assert set(by_file) == set(cases)
    assert where(by_file["utf8.yaml"]) == ("invalid-encoding", 2, 9)
    assert where(by_file["nul.yaml"]) == ("yaml-syntax", 1, 5)
    assert by_file["bigint.yaml"].code == "invalid-value"
    assert "recursive" in by_file["alias-loop.yaml"].message
    assert "aliases" in by_file["laughs.yaml"].message
    assert all(d.line >= 1 and d.column >= 1 for d in result.diagnostics)


def test_load_bytes_reads_boms() -> None:
    assert load_bytes(POLICY.encode("utf-16")).diagnostics == []
    assert load_bytes(b"\xef\xbb\xbf" + POLICY.encode()).diagnostics == []


def test_crlf_files_keep_positions_and_clean_source_lines() -> None:
    d = only(load_text(POLICY.replace("severity: high", "severity: hihg").replace("\n", "\r\n")))
    assert (d.line, d.column, d.source_line) == (6, 13, "  severity: hihg")


# ---- parameters that would load but judge wrongly ------------------------------------------


def test_max_output_tokens_per_feature_cap_must_be_positive() -> None:
    """A cap of 0 or below would fail every call of the feature with a fix that clamps
    max_tokens to a value no provider accepts."""
    result = load_text(policy("- name: a\n  maxOutputTokens: {limit: 100, byFeature: {chat: 0, x: -5, ok: 1}}"))
    assert [where(d) for d in result.diagnostics] == [("invalid-value", 9, 53), ("invalid-value", 9, 59)]
    assert result.documents == []


def test_each_bad_budget_dimension_is_reported_at_its_own_place() -> None:
    result = load_text(policy("- name: a\n  budget: {per: [user, usr, 'tag:'], limitUsd: 5, window: day}"))
    assert [where(d) for d in result.diagnostics] == [("invalid-value", 9, 26), ("invalid-value", 9, 31)]
    assert ["'usr'" in d.message for d in result.diagnostics] == [True, False]
    assert result.documents == []


def test_an_exemption_with_an_empty_rule_list_is_an_error() -> None:
    """``rules: []`` names no rule; it must not waive every rule of the policy (as unset does)."""
    text = EXEMPTION.replace("  - policy: user-daily-budget\n", "  - policy: user-daily-budget\n    rules: []\n")
    d = only(load_text(text))
    assert where(d) == ("invalid-value", 8, 12)


def test_a_problem_in_a_merged_mapping_is_reported_once() -> None:
    text = policy("""
        - &base
          name: a
          maxOutputTokens: {limit: 100, bogus: 1}
        - <<: *base
          name: b
        """)
    assert where(only(load_text(text))) == ("unknown-field", 10, 35)


def test_allowed_models_problems_found_at_compile_time() -> None:
    from costwarden.engine.compile import compile_documents

    text = policy(
        "- name: a\n  allowedModels: {byFeature: {x: ['tier:standrd']}}",  # lines 8-9
        "- name: b\n  allowedModels: {default: ['*'], inputTokens: {below: 100, atLeast: 100}}",  # lines 10-11
    )
    result = load_text(text)
    assert result.diagnostics == []
    with pytest.raises(PolicyError) as info:
        compile_documents(result.documents)
    tier, size = info.value.diagnostics
    assert where(tier) == ("unknown-tier", 9, 37)
    assert tier.hint is not None and tier.hint.startswith("did you mean 'standard'?")
    assert where(size) == ("invalid-value", 11, 51)  # a range no call is in: the rule would never apply
    assert "selects no call" in size.message


def test_a_typo_in_a_patterned_word_gets_a_did_you_mean() -> None:
    d = only(load_text(POLICY.replace("window: day", "window: dya")))
    assert where(d) == ("invalid-value", 13, 15)
    assert d.hint is not None and d.hint.startswith("did you mean 'day'? it must match the pattern ")
    d = only(load_text(POLICY.replace("name: user-daily-budget", "name: User_Budget")))
    assert d.hint is not None and d.hint.startswith("it must match the pattern ")  # nothing close: no guess


def test_a_cel_negation_read_as_a_yaml_tag_says_to_quote_it() -> None:
    text = "apiVersion: costwarden.dev/v1\nkind: Policy\nmetadata: {name: neg}\nspec:\n  subject: resource\n" \
           "  match:\n    when: !has(subject.tags.team)\n  rules:\n    - {name: r, requireTags: {keys: [team]}}\n"
    result = load_text(text, file="p.yaml")
    [problem] = [d for d in result.diagnostics if d.code == "yaml-syntax"]
    assert (problem.line, problem.column) == (7, 11)
    assert problem.hint == (
        "a leading '!' starts a YAML tag; if this is an expression, quote it: '!has(subject.tags.team)'")
    other = load_text("apiVersion: !!binary aGk=\n", file="q.yaml")
    assert [d.hint for d in other.diagnostics if d.code == "yaml-syntax"] == [
        "remove the tag; policy files use plain YAML values"]


def test_a_policy_errors_summary_leads_with_an_error_not_a_note() -> None:
    note = Diagnostic("a.yaml", 1, 1, "exemption-expiring", "ends soon", level="note")
    error = Diagnostic("b.yaml", 9, 3, "invalid-cel", "bad CEL")
    assert str(PolicyError([note, error])).startswith("b.yaml:9:3")
