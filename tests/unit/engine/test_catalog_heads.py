"""Attention heads are model catalog data beside ``modelSizes``: the built-in catalog holds the
table the ``servingConfig`` rule used to carry (same globs, same values, same order: first match
wins), a ModelCatalog document extends it, and the rule parameter ``attentionHeads`` still wins."""

from __future__ import annotations

from typing import Any

import pytest
from policy_support import CompilePolicies

from costwarden.engine.catalog import Catalog
from costwarden.engine.compile import BUILTIN_CATALOG
from costwarden.engine.loader import load_paths
from costwarden.engine.schema import ModelCatalogDocument, ModelCatalogSpec
from costwarden.engine.subjects import ServingConfig
from costwarden.errors import PolicyError

# The table as it stood in engine/rules/serving_config.py (num_attention_heads of each checkpoint's
# config.json), in its order.
TABLE = (
    ("*deepseek-r1-distill-qwen-1.5b*", 12), ("*deepseek-r1-distill-qwen-7b*", 28),
    ("*deepseek-r1-distill-qwen-14b*", 40), ("*deepseek-r1-distill-qwen-32b*", 40),
    ("*deepseek-r1-distill-llama-8b*", 32), ("*deepseek-r1-distill-llama-70b*", 64),
    ("*deepseek-v3*", 128), ("*deepseek-r1*", 128),
    ("*llama-3*-405b*", 128), ("*llama-3*-70b*", 64), ("*llama-3.2-1b*", 32), ("*llama-3.2-3b*", 24),
    ("*llama-3*-8b*", 32), ("*llama-2-70b*", 64), ("*llama-2-13b*", 40), ("*llama-2-7b*", 32),
    ("*mixtral-8x22b*", 48), ("*mixtral-8x7b*", 32), ("*mistral-7b*", 32), ("*mistral-large*", 96),
    ("*qwen2.5-72b*", 64), ("*qwen2.5-32b*", 40), ("*qwen2.5-14b*", 40), ("*qwen2.5-7b*", 28),
    ("*qwen2.5-3b*", 16), ("*qwen2.5-1.5b*", 12), ("*qwen2.5-0.5b*", 14),
    ("*qwen3-235b-a22b*", 64), ("*qwen3-30b-a3b*", 32), ("*qwen3-32b*", 64), ("*qwen3-14b*", 40),
    ("*qwen3-8b*", 32), ("*qwen3-4b*", 32), ("*qwen3-1.7b*", 16), ("*qwen3-0.6b*", 16),
    ("*gpt-oss-120b*", 64), ("*gpt-oss-20b*", 64),
)


@pytest.fixture(scope="module")
def builtin_spec() -> ModelCatalogSpec:
    result = load_paths(BUILTIN_CATALOG)
    assert result.diagnostics == []
    [doc] = result.documents
    assert isinstance(doc.model, ModelCatalogDocument)
    return doc.model.spec


def test_the_builtin_catalog_holds_the_table_unchanged(builtin_spec: ModelCatalogSpec) -> None:
    assert tuple(builtin_spec.attentionHeads.items()) == TABLE


@pytest.mark.parametrize(
    ("model", "heads"),
    [
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", 28),  # the distill before the R1 family
        ("deepseek-ai/DeepSeek-R1", 128),
        ("meta-llama/Llama-3.1-70B-Instruct", 64),
        ("meta-llama/Llama-3.2-1B-Instruct", 32),
        ("Qwen/Qwen2.5-7B-Instruct-AWQ", 28),
        ("Qwen/Qwen3-30B-A3B-FP8", 32),
        ("/models/qwen3-8b/", 32),  # a local path as vllm serve is given it
        ("my-org/private-model", None),
    ],
)
def test_attention_heads_lookup(builtin_spec: ModelCatalogSpec, model: str, heads: int | None) -> None:
    assert Catalog.merge([builtin_spec]).attention_heads(model) == heads


def test_a_later_document_extends_and_overrides(builtin_spec: ModelCatalogSpec) -> None:
    mine = ModelCatalogSpec.model_validate({"attentionHeads": {"my-org/*": 20, "*qwen3-8b*": 8}})
    catalog = Catalog.merge([builtin_spec, mine])
    assert catalog.attention_heads("my-org/private-model") == 20
    assert catalog.attention_heads("Qwen/Qwen3-8B") == 8
    assert catalog.attention_heads("Qwen/Qwen3-14B") == 40


@pytest.mark.parametrize("bad", [0, -4, "many"])
def test_heads_must_be_positive_integers(bad: Any, compile_policies: CompilePolicies) -> None:
    with pytest.raises(PolicyError) as info:
        compile_policies(_catalog(f'"my-org/*": {bad}'))
    message = str(info.value)
    assert message.startswith("inline.yaml:5:") and "'my-org/*'" in message and "unknown-field" not in message


POLICY = (
    "apiVersion: costwarden.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  subject: serving_config\n"
    "  rules:\n    - name: r\n      servingConfig: {requirePrefixCaching: false%s}\n"
)


def _catalog(entries: str) -> str:
    return ("apiVersion: costwarden.dev/v1\nkind: ModelCatalog\nmetadata: {name: heads}\nspec:\n"
            f"  attentionHeads: {{{entries}}}\n")


def _subject(model: str, tp: int, gpus: float = 8) -> ServingConfig:
    return ServingConfig(model=model, args={"tensor_parallel_size": tp}, gpus=gpus)


def test_the_rule_reads_heads_from_a_model_catalog_document(compile_policies: CompilePolicies) -> None:
    ps = compile_policies(POLICY % "", _catalog('"my-org/*": 20'))
    [result] = ps.evaluate(_subject("my-org/private-model", 8)).results
    assert result.result == "fail" and "20 attention heads" in result.message
    assert result.fix is not None and result.fix.description == "set --tensor-parallel-size 4 --data-parallel-size 2"


def test_the_rule_parameter_wins_over_the_catalog(compile_policies: CompilePolicies) -> None:
    ps = compile_policies(POLICY % ', attentionHeads: {"my-org/*": 24}', _catalog('"my-org/*": 20'))
    [result] = ps.evaluate(_subject("my-org/private-model", 8)).results
    assert result.result == "pass"  # 24 heads divide by 8; the catalog's 20 would not


def test_builtin_heads_still_judge_without_any_document(compile_policies: CompilePolicies) -> None:
    [result] = compile_policies(POLICY % "").evaluate(_subject("Qwen/Qwen2.5-7B-Instruct", 8)).results
    assert result.result == "fail" and "28 attention heads" in result.message
