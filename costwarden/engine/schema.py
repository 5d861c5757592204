"""The policy file schema: ``Policy``, ``Exemption`` and ``ModelCatalog`` documents.

pydantic models with ``extra="forbid"``; YAML keys are camelCase as in Kubernetes. Rule kinds
are a discriminated union keyed by which rule key a rule carries (``requireTags``, ``budget``...),
so a bad ``requireTags`` block reports only ``requireTags`` errors. ``json_schema()`` is what
``costwarden schema`` prints for editors.
"""

from __future__ import annotations

import functools
import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    create_model,
    field_validator,
    model_validator,
)

from costwarden.engine.decision import Effect, Severity
from costwarden.engine.rules import RULE_KINDS

API_VERSION = "costwarden.dev/v1"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
DOCUMENT_KINDS = ("Policy", "Exemption", "ModelCatalog")
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
RULE_NAME_PATTERN = r"^[a-zA-Z0-9]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metadata(Strict):
    name: Annotated[
        str,
        Field(
            pattern=NAME_PATTERN,
            max_length=253,
            description="kebab-case; in policies/ it equals the folder and file stem",
        ),
    ]
    title: str | None = None
    description: str | None = None
    severity: Severity = "medium"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class SelectorRequirement(Strict):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values_fit_the_operator(self) -> SelectorRequirement:
        """As Kubernetes: In and NotIn need values, Exists and DoesNotExist take none."""
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs a non-empty 'values' list")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no 'values'; remove them")
        return self


class LabelSelector(Strict):
    """Kubernetes label-selector semantics, applied to the subject's tags."""

    matchLabels: dict[str, str] = Field(default_factory=dict)
    matchExpressions: list[SelectorRequirement] = Field(default_factory=list)


class Match(Strict):
    """Which subjects a policy applies to. AND across keys, OR inside a list; globs allowed."""

    providers: list[str] | None = None
    kinds: list[str] | None = Field(default=None, description="globs on the kind or provider/kind")
    namespaces: list[str] | None = None
    names: list[str] | None = None
    selector: LabelSelector | None = None
    when: str | None = Field(default=None, description="a CEL condition over `subject`")


class ExemptionMatch(Strict):
    """What an exemption covers. No tag selector or CEL: a subject cannot exempt itself."""

    providers: list[str] | None = None
    kinds: list[str] | None = None
    namespaces: list[str] | None = None
    names: list[str] | None = None


class Enforcement(Strict):
    """The effect of a failure on each surface; unset surfaces use ``default``."""

    default: Effect = "deny"
    admission: Effect | None = None
    ci: Effect | None = None
    runtime: Effect | None = None
    audit: Effect | None = None

    def effect(self, surface: str) -> Effect:
        value: Effect | None = getattr(self, surface)
        return value if value is not None else self.default


class RuleBase(Strict):
    name: Annotated[str, Field(pattern=RULE_NAME_PATTERN, max_length=128)]
    message: str | None = Field(default=None, description="overrides the rule's failure message")
    severity: Severity | None = Field(default=None, description="overrides the policy's severity")


def _rule_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return next((key for key in value if key in RULE_KINDS), None)
    if isinstance(value, BaseModel):
        return next((key for key in RULE_KINDS if getattr(value, key, None) is not None), None)
    return None


RULE_MODELS: dict[str, type[RuleBase]] = {
    key: create_model(  # type: ignore[call-overload]
        f"{kind.params.__name__}Rule",
        __base__=RuleBase,
        **{key: (kind.params, Field(description=kind.summary))},
    )
    for key, kind in RULE_KINDS.items()
}

Rule: Any = Annotated[
    functools.reduce(lambda a, b: a | b, [Annotated[m, Tag(k)] for k, m in RULE_MODELS.items()]),
    Discriminator(_rule_tag),
]


def rule_kind_of(rule: BaseModel) -> str:
    """The YAML key of a validated rule's kind."""
    key = _rule_tag(rule)
    assert key is not None  # a validated rule always has exactly one kind
    return key


class PolicySpec(Strict):
    subject: Literal["resource", "llm_call", "serving_config"]
    match: Match = Field(default_factory=Match)
    exclude: Match | None = None
    enforcement: Enforcement = Field(default_factory=Enforcement)
    onError: Literal["deny", "allow"] = Field(
        default="deny", description="what an evaluation error does where the policy is enforced"
    )
    rules: Annotated[list[Rule], Field(min_length=1)]

    @field_validator("rules")
    @classmethod
    def _unique_rule_names(cls, rules: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"duplicate rule name {rule.name!r}")
            seen.add(rule.name)
        return rules


class PolicyDocument(Strict):
    apiVersion: Literal["costwarden.dev/v1"]
    kind: Literal["Policy"]
    metadata: Metadata
    spec: PolicySpec


class ExemptionTarget(Strict):
    policy: str
    rules: Annotated[list[str], Field(min_length=1)] | None = Field(
        default=None, description="rules waived; all rules when unset"
    )


class ExemptionSpec(Strict):
    policies: Annotated[list[ExemptionTarget], Field(min_length=1)]
    match: ExemptionMatch = Field(default_factory=ExemptionMatch)
    expires: datetime | date = Field(
        description="required: an exemption always ends; a date runs to the end of that day (UTC when no zone)"
    )
    owner: Annotated[str, Field(min_length=1)]
    reason: Annotated[str, Field(min_length=1)]

    @field_validator("expires", mode="before")
    @classmethod
    def _plain_date(cls, value: Any) -> Any:
        """``2026-12-31`` is a date (valid through that day), not midnight at its start."""
        if isinstance(value, str) and _DATE.fullmatch(value.strip()):
            try:
                return date.fromisoformat(value.strip())
            except ValueError:
                return value  # pydantic reports it as an invalid date, positioned
        return value


class ExemptionMetadata(Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=253)]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ExemptionDocument(Strict):
    apiVersion: Literal["costwarden.dev/v1"]
    kind: Literal["Exemption"]
    metadata: ExemptionMetadata
    spec: ExemptionSpec


class ModelTier(Strict):
    """A named tier of models, listed cheapest first in the catalog."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    models: list[str] = Field(
        description="model globs: claude-haiku-* matches the name after the last '/', meta-llama/* the whole id"
    )
    downgradeTo: dict[str, str] = Field(
        default_factory=dict, description="provider -> the model a call is downgraded to in this tier"
    )
    replace: bool = Field(
        default=False,
        description="redefine a tier an earlier catalog (the built-in one) has: its models and downgradeTo "
        "are dropped; by default they are kept and these added",
    )


class ModelPrice(Strict):
    """Per-million-token prices for a model genai-prices does not know (self-hosted, private)."""

    model: str = Field(description="model glob (with a '/', it matches the whole id: meta-llama/*)")
    provider: str | None = None
    inputPerMTok: Annotated[float, Field(ge=0)]
    outputPerMTok: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="unset: no output price (an embeddings model); output tokens then fail to "
        "price, as for a genai-prices model without one, never at $0"
    )
    cacheReadPerMTok: Annotated[float, Field(ge=0)] | None = None
    cacheWritePerMTok: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="5-minute cache writes; unset: the input price, 1.25x it for provider anthropic"
    )
    cacheWrite1hPerMTok: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="1-hour cache writes; unset: cacheWritePerMTok, 2x the input price for anthropic"
    )
    inputAudioPerMTok: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="the audio share of uncached input; the input price when unset"
    )
    outputAudioPerMTok: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="the audio share of output; the output price when unset"
    )
    webSearchPerRequest: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="USD per server-side web search (not batch-discounted); free when unset"
    )


class CacheMinimum(Strict):
    """The smallest prefix a provider caches for matching models (below it, nothing is cached)."""

    models: list[str]
    minTokens: Annotated[int, Field(ge=0)]


class HourlyPrice(Strict):
    """On-demand and typical spot USD per hour for one GPU or instance type."""

    onDemandUsd: Annotated[float, Field(ge=0)]
    spotUsd: Annotated[float, Field(ge=0)] | None = None
    gpus: Annotated[float, Field(ge=0)] | None = Field(default=None, description="GPUs per instance")
    gpuType: str | None = None


class ModelCatalogSpec(Strict):
    pricesAsOf: date | None = Field(default=None, description="when the GPU prices were read")
    tiers: list[ModelTier] = Field(default_factory=list)
    prices: list[ModelPrice] = Field(default_factory=list)
    cacheMinimums: list[CacheMinimum] = Field(default_factory=list)
    gpuPrices: dict[str, HourlyPrice] = Field(default_factory=dict, description="per GPU, by type")
    instancePrices: dict[str, HourlyPrice] = Field(default_factory=dict, description="per instance type")
    modelSizes: dict[str, float] = Field(default_factory=dict, description="model glob -> billions of params")
    attentionHeads: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="model glob -> attention heads (config.json num_attention_heads); "
        "the first glob that matches wins"
    )


class ModelCatalogDocument(Strict):
    apiVersion: Literal["costwarden.dev/v1"]
    kind: Literal["ModelCatalog"]
    metadata: ExemptionMetadata
    spec: ModelCatalogSpec


DOCUMENT_MODELS: dict[str, type[BaseModel]] = {
    "Policy": PolicyDocument,
    "Exemption": ExemptionDocument,
    "ModelCatalog": ModelCatalogDocument,
}

Document = PolicyDocument | ExemptionDocument | ModelCatalogDocument


@functools.cache
def document_adapter(kind: str) -> TypeAdapter[Any]:
    """The validator for one document kind, built once."""
    return TypeAdapter(DOCUMENT_MODELS[kind])


def json_schema() -> dict[str, Any]:
    """JSON Schema for a costwarden policy file document (any of the three kinds)."""
    adapter: TypeAdapter[Any] = TypeAdapter(Annotated[Document, Field(discriminator="kind")])
    schema = adapter.json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://costwarden.dev/schemas/v1/policy.json"
    schema["title"] = "costwarden policy document"
    return schema


__all__ = [
    "API_VERSION",
    "DOCUMENT_KINDS",
    "DOCUMENT_MODELS",
    "Document",
    "Enforcement",
    "ExemptionDocument",
    "LabelSelector",
    "Match",
    "ModelCatalogDocument",
    "PolicyDocument",
    "RULE_MODELS",
    "document_adapter",
    "json_schema",
    "rule_kind_of",
]
