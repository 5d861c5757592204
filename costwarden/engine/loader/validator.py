"""One policy document checked: its header, rule kinds and names, ``expires`` and YAML 1.1
booleans, which the schema cannot say well, then its pydantic model (whose errors
:mod:`.pydantic_errors` maps); every problem found becomes a positioned Diagnostic."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from costwarden.engine import yamlposition, yamlsource
from costwarden.engine.diagnostics import Diagnostic, did_you_mean
from costwarden.engine.loader.issue import _DATE_HINT, _describe, _Issue, _label
from costwarden.engine.loader.pydantic_errors import _PydanticErrors
from costwarden.engine.loader.schema_paths import _get, _members, _types_at
from costwarden.engine.rules import RULE_KINDS
from costwarden.engine.schema import API_VERSION, DOCUMENT_KINDS, DOCUMENT_MODELS, RuleBase, document_adapter
from costwarden.engine.yamlsource import Path


def _check(ydoc: yamlsource.YamlDocument, file: str, lines: Sequence[str], found: list[Diagnostic]) -> tuple[Any, str]:
    def line_of(loc: Path) -> int:
        return yamlposition.locate(ydoc.node, loc, value=True).line

    validator = _Validator(ydoc.data, ydoc.yaml11_booleans, line_of)
    model = validator.run()
    for issue in validator.issues:
        pos = yamlposition.locate(ydoc.node, issue.loc, value=issue.at_value)
        found.append(yamlsource.diagnostic_at(file, lines, pos, issue.code, issue.message, issue.hint))
    return model, validator.kind or ""


_RULE_FIELDS = tuple(RuleBase.model_fields)
_HEADER_HINT = f"a document starts with 'apiVersion: {API_VERSION}' and 'kind: <{'|'.join(DOCUMENT_KINDS)}>'"


class _Validator:
    """One document: header, rule kinds and names, YAML 1.1 booleans, then its pydantic model."""

    def __init__(self, data: Any, yaml11: list[Path], line_of: Callable[[Path], int]) -> None:
        self.data = data
        self.yaml11 = yaml11
        self.line_of = line_of
        self.kind: str | None = None
        self.issues: list[_Issue] = []
        self.muted_under: list[Path] = []  # our own checks reported these; pydantic's would be noise
        self.muted_at: set[Path] = {("apiVersion",), ("kind",)}

    def run(self) -> Any:
        if not isinstance(self.data, dict):
            self.issue(
                (),
                "not-a-mapping",
                f"a document must be a mapping, got {_describe(self.data)}",
                _HEADER_HINT,
                at_value=True,
            )
            return None
        self.kind = self.header(self.data)
        if self.kind is None:
            return None
        if self.kind == "Policy":
            self.rules(self.data)
        elif self.kind == "Exemption":
            self.expires(self.data)
        self.yaml11_booleans()
        try:
            return document_adapter(self.kind).validate_python(self.data)
        except ValidationError as exc:
            errors = _PydanticErrors(self.data, self.kind, self.muted_at, self.muted_under)
            errors.map_errors(exc.errors(include_url=False))
            self.issues.extend(errors.issues)
        except Exception as exc:  # noqa: BLE001 - e.g. RecursionError; still a positioned diagnostic
            self.issue((), "invalid-value", f"document could not be validated: {exc!r}")
        return None

    def issue(self, loc: Path, code: str, message: str, hint: str | None = None, *, at_value: bool = False) -> None:
        self.issues.append(_Issue(loc, code, message, hint, at_value))

    def header(self, data: dict[str, Any]) -> str | None:
        if "apiVersion" not in data:
            self.issue((), "missing-field", "missing required field 'apiVersion'", f"add 'apiVersion: {API_VERSION}'")
        elif data["apiVersion"] != API_VERSION:
            self.issue(
                ("apiVersion",),
                "unknown-api-version",
                f"unknown apiVersion {data['apiVersion']!r}",
                f"use '{API_VERSION}'",
                at_value=True,
            )
        kind = data.get("kind")
        if "kind" not in data:
            self.issue((), "missing-field", "missing required field 'kind'", _HEADER_HINT)
        elif not isinstance(kind, str) or kind not in DOCUMENT_KINDS:
            self.issue(
                ("kind",),
                "unknown-kind",
                f"unknown kind {kind!r}",
                did_you_mean(str(kind), DOCUMENT_KINDS, what="kinds"),
                at_value=True,
            )
        else:
            return kind
        return None

    def rules(self, data: dict[str, Any]) -> None:
        spec = data.get("spec")
        rules = spec.get("rules") if isinstance(spec, dict) else None
        if not isinstance(rules, list):
            return
        first: dict[str, Path] = {}
        for i, rule in enumerate(rules):
            at: Path = ("spec", "rules", i)
            if not isinstance(rule, dict):
                self.muted_under.append(at)
                self.issue(
                    at,
                    "invalid-type",
                    f"a rule must be a mapping, got {_describe(rule)}",
                    f"write '- name: <name>' and one of: {', '.join(RULE_KINDS)}",
                    at_value=True,
                )
                continue
            self.rule_kind(at, rule)
            name = rule.get("name")
            if isinstance(name, str) and name in first:
                self.muted_at.add(("spec", "rules"))  # the schema's own duplicate-name check
                self.issue(
                    (*at, "name"),
                    "duplicate-rule-name",
                    f"rule name {name!r} is used twice in this policy",
                    f"first used on line {self.line_of(first[name])}; rule names are unique",
                    at_value=True,
                )
            elif isinstance(name, str):
                first[name] = (*at, "name")

    def rule_kind(self, at: Path, rule: dict[str, Any]) -> None:
        kinds = [key for key in rule if key in RULE_KINDS]
        unknown = [key for key in rule if key not in RULE_KINDS and key not in _RULE_FIELDS]
        for key in unknown:
            self.muted_under.append((*at, key))
            if kinds:
                self.issue(
                    (*at, key),
                    "unknown-field",
                    f"{key!r} is not a field of a rule",
                    did_you_mean(key, [*_RULE_FIELDS, *kinds], what="fields"),
                )
            else:
                self.issue(
                    (*at, key),
                    "unknown-rule-kind",
                    f"unknown rule kind {key!r}",
                    did_you_mean(key, RULE_KINDS, what="rule kinds"),
                )
        if len(kinds) > 1:
            self.muted_under.extend((*at, key) for key in kinds[1:])
            self.issue(
                (*at, kinds[1]),
                "multiple-rule-kinds",
                f"a rule has exactly one kind; this one has {len(kinds)}: {', '.join(kinds)}",
                "split it into one rule per kind",
            )
        if not kinds:
            self.muted_under.append(at)
            if not unknown:
                self.issue(at, "missing-rule-kind", "rule has no kind", f"add one of: {', '.join(RULE_KINDS)}")
            if "name" not in rule:
                self.issue(
                    at,
                    "missing-field",
                    "missing required field 'name' in a rule",
                    f"required fields: name and one of {', '.join(RULE_KINDS)}",
                )

    def expires(self, data: dict[str, Any]) -> None:
        spec = data.get("spec")
        value = spec.get("expires") if isinstance(spec, dict) else None
        if value is not None and not isinstance(value, str):  # pydantic would take 1 as a Unix time
            self.muted_under.append(("spec", "expires"))
            self.issue(
                ("spec", "expires"),
                "invalid-date",
                f"'expires' must be a date, got {_describe(value)}",
                _DATE_HINT,
                at_value=True,
            )

    def yaml11_booleans(self) -> None:
        root = DOCUMENT_MODELS.get(self.kind or "")
        for path in self.yaml11:
            members = [m for t in _types_at(root, path) for m in _members(t)]
            if bool in members and str not in members:
                self.muted_at.add(path)
                label, written = _label(path, self.kind or "document"), _get(self.data, path)
                self.issue(
                    path,
                    "yaml-1.1-boolean",
                    f"{label!r} takes true or false; {written!r} is a boolean only in YAML 1.1",
                    "use true or false",
                    at_value=True,
                )
