"""A ModelCatalog price without ``outputPerMTok``: an embeddings model's, which never outputs. Its
input is priced; output tokens on it are a "no output-token price" PricingError, as a genai-prices
model without one raises (``adapters/pricing.py``), never output at $0."""

from __future__ import annotations

import pytest

from costwarden.engine.catalog import Catalog
from costwarden.engine.pricing import LlmPricer
from costwarden.engine.schema import ModelCatalogSpec, ModelPrice, json_schema
from costwarden.engine.subjects import TokenUsage
from costwarden.errors import PricingError


def pricer(**price: object) -> LlmPricer:
    spec = ModelCatalogSpec.model_validate({"prices": [{"model": "bge-*", "inputPerMTok": 0.02, **price}]})
    return Catalog.merge([spec]).pricer(None)


def test_input_alone_is_priced_without_an_output_price() -> None:
    million = TokenUsage(input_tokens=1_000_000)
    assert pricer().cost("vllm", "bge-m3", million) == pytest.approx(0.02)
    assert pricer().cost("vllm", "bge-m3", million, batch=True) == pytest.approx(0.01)


@pytest.mark.parametrize("usage", [TokenUsage(input_tokens=10, output_tokens=1),
                                   TokenUsage(output_tokens=5, output_audio_tokens=5)])
def test_output_tokens_without_an_output_price_are_an_error_not_zero(usage: TokenUsage) -> None:
    with pytest.raises(PricingError, match=r"'bge-m3'.*has no output-token price, yet the usage has output tokens"):
        pricer().cost("vllm", "bge-m3", usage)


def test_an_output_audio_price_prices_audio_output_alone() -> None:
    usage = TokenUsage(output_tokens=1_000_000, output_audio_tokens=1_000_000)
    assert pricer(outputAudioPerMTok=3).cost("vllm", "bge-m3", usage) == pytest.approx(3)
    with pytest.raises(PricingError, match="no output-token price"):
        pricer(outputAudioPerMTok=3).cost("vllm", "bge-m3", TokenUsage(output_tokens=2, output_audio_tokens=1))


def test_a_stated_zero_output_price_is_free_output() -> None:
    usage = TokenUsage(input_tokens=10, output_tokens=10)
    assert pricer(outputPerMTok=0).cost("vllm", "bge-m3", usage) == pytest.approx(10 * 0.02 / 1e6)


def test_the_schema_makes_output_price_optional() -> None:
    assert ModelPrice.model_validate({"model": "bge-*", "inputPerMTok": 1}).outputPerMTok is None
    price = json_schema()["$defs"]["ModelPrice"]
    assert "outputPerMTok" in price["properties"] and "outputPerMTok" not in price["required"]
    assert price["required"] == ["model", "inputPerMTok"]
