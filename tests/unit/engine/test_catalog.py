"""The model catalog: tiers, cache minimums, model sizes, GPU and instance prices, layering."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from costwarden.engine.catalog import Catalog, ModelGlobs, normalize_gpu, normalize_model
from costwarden.engine.compile import BUILTIN_CATALOG
from costwarden.engine.evaluate import PolicySet
from costwarden.engine.loader import load_paths
from costwarden.engine.schema import ModelCatalogDocument, ModelCatalogSpec
from costwarden.engine.subjects import TokenUsage, Workload, subject_from_dict
from costwarden.errors import PolicyError, PricingError

CompilePolicies = Callable[..., PolicySet]


@pytest.fixture(scope="module")
def builtin() -> Catalog:
    result = load_paths(BUILTIN_CATALOG)
    assert result.diagnostics == []
    [doc] = result.documents
    assert isinstance(doc.model, ModelCatalogDocument)
    return Catalog.merge([doc.model.spec])


def spec(**fields: Any) -> ModelCatalogSpec:
    return ModelCatalogSpec.model_validate(fields)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("anthropic/Claude-Sonnet-4-5", "claude-sonnet-4-5"),
        ("  GPT-4.1 ", "gpt-4.1"),
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
    ],
)
def test_normalize_model(given: str, expected: str) -> None:
    assert normalize_model(given) == expected


@pytest.mark.parametrize(
    ("model", "matches"),
    [
        ("claude-haiku-4-5", True),
        ("anthropic/Claude-Haiku-4-5", True),  # a glob without '/' matches the name after the last '/'
        ("meta-llama/Llama-3.1-8B-Instruct", True),  # one with '/' matches the whole id
        ("META-LLAMA/x", True),
        ("other-org/llama-3", False),
        ("meta-llama-3", False),
        ("mirror/meta-llama/x", False),
    ],
)
def test_model_globs_match_names_and_whole_ids(model: str, matches: bool) -> None:
    assert ModelGlobs(["claude-haiku-*", "meta-llama/*"]).match(model) is matches


def test_a_glob_without_a_slash_never_matches_the_organisation() -> None:
    assert not ModelGlobs(["meta-*"]).match("meta-llama/llama-3")
    assert ModelGlobs(["llama-3*"]).match("meta-llama/llama-3")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("nvidia-h100-80gb", "H100-80GB"),
        ("NVIDIA-H100-80GB-HBM3", "H100-80GB-HBM3"),
        ("nvidia-tesla-t4", "T4"),
        ("Tesla V100", "V100"),
        ("amd-instinct-mi300x", "MI300X"),
        ("nvidia_l40s", "L40S"),
        ("H200", "H200"),
    ],
)
def test_normalize_gpu(given: str, expected: str) -> None:
    assert normalize_gpu(given) == expected


class TestTiers:
    def test_builtin_tiers_cheapest_first(self, builtin: Catalog) -> None:
        assert [(t.name, t.rank) for t in builtin.tiers] == [("simple", 0), ("standard", 1), ("complex", 2)]
        simple = builtin.tier("simple")
        assert simple is not None
        assert simple.downgrade_to["anthropic"] == "claude-haiku-4-5"
        assert builtin.tier("premium") is None

    @pytest.mark.parametrize(
        ("model", "tier"),
        [
            ("claude-haiku-4-5", "simple"),
            ("claude-3-5-haiku-20241022", "simple"),
            ("gpt-4.1-mini", "simple"),
            ("gpt-4.1", "standard"),
            ("anthropic/Claude-Sonnet-4-5", "standard"),
            ("gemini-2.5-flash", "standard"),
            ("gemini-2.5-flash-lite", "simple"),
            ("claude-opus-4-1", "complex"),
            ("o3-mini", "complex"),
            ("gemini-2.5-pro", "complex"),
            ("gpt-5-pro", "complex"),  # gpt-5-pro* beats standard's gpt-5* (it was shadowed by it)
            ("gpt-5-mini", "simple"),
            ("gpt-5", "standard"),
            ("llama-3-70b", None),
        ],
    )
    def test_tier_of(self, builtin: Catalog, model: str, tier: str | None) -> None:
        found = builtin.tier_of(model)
        assert (found.name if found else None) == tier

    def test_lookups_are_memoised(self, builtin: Catalog) -> None:
        first = builtin.tier_of("claude-sonnet-4-5")
        assert ("tier", "claude-sonnet-4-5") in builtin._memo
        assert builtin.tier_of("Claude-Sonnet-4-5") is first


class TestCacheMinimums:
    @pytest.mark.parametrize(
        ("model", "tokens"),
        [
            ("claude-opus-4-5", 4096),  # the specific glob wins over claude-opus-4*
            ("claude-opus-4-1", 1024),
            ("claude-haiku-4-5-20251001", 4096),
            ("claude-3-5-haiku-latest", 2048),
            ("claude-sonnet-4-5", 1024),
            ("gpt-4o", 1024),
            ("o3", 1024),
            ("mistral-large", None),
        ],
    )
    def test_min_cacheable_tokens(self, builtin: Catalog, model: str, tokens: int | None) -> None:
        assert builtin.min_cacheable_tokens(model) == tokens


class TestModelSizes:
    @pytest.mark.parametrize(
        ("model", "size"),
        [
            ("deepseek-ai/DeepSeek-R1", 671.0),
            ("openai/gpt-oss-120b", 117.0),
            ("meta-llama/Llama-3.1-70B-Instruct", 70.0),
            ("Qwen/Qwen2.5-1.5B-Instruct", 1.5),
            ("mistralai/Mixtral-8x7B-Instruct-v0.1", 56.0),
            ("Qwen/Qwen3-30B-A3B", 30.0),
            ("some-model", None),
            ("Qwen/Qwen3-8B-AWQ", 8.0),
        ],
    )
    def test_params_b(self, builtin: Catalog, model: str, size: float | None) -> None:
        assert builtin.params_b(model) == size


class TestHourlyPrices:
    @pytest.mark.parametrize(
        ("gpu", "on_demand"),
        [
            ("H100", 6.88),
            ("nvidia-h100-80gb-hbm3", 6.88),
            ("A100-80GB", 3.43),  # the longest known name inside the given one wins
            ("nvidia-tesla-a100", 2.75),
            ("NVIDIA-A100-SXM4-80GB", 3.43),  # nvidia.com/gpu.product: the form factor between name and memory
            ("NVIDIA-A100-PCIE-80GB", 3.43),
            ("NVIDIA-A100-SXM4-40GB", 2.75),
            ("L40S", 1.86),
            ("nvidia-l40", 1.70),
            ("nvidia-l4", 0.81),
            ("tpu-v5e", 1.20),
        ],
    )
    def test_gpu_price(self, builtin: Catalog, gpu: str, on_demand: float) -> None:
        price = builtin.gpu_price(gpu)
        assert price is not None
        assert price.onDemandUsd == on_demand

    @pytest.mark.parametrize("gpu", [None, "", "Z9000"])
    def test_unknown_gpu(self, builtin: Catalog, gpu: str | None) -> None:
        assert builtin.gpu_price(gpu) is None

    def test_instance_price_is_case_insensitive(self, builtin: Catalog) -> None:
        price = builtin.instance_price("P5.48XLARGE")
        assert price is not None
        assert (price.onDemandUsd, price.spotUsd, price.gpus, price.gpuType) == (55.04, 24.77, 8, "H100")
        assert builtin.instance_price(None) is None
        assert builtin.instance_price("x1.nope") is None

    def test_hourly_usd(self, builtin: Catalog) -> None:
        assert builtin.hourly_usd(Workload(gpus=2, gpu_type="H100", replicas=3), spot=False) == pytest.approx(41.28)
        assert builtin.hourly_usd(Workload(gpus=2, gpu_type="H100", replicas=3), spot=True) == pytest.approx(18.6)
        # an instance type is priced as a whole, before its GPUs
        assert builtin.hourly_usd(Workload(gpus=8, gpu_type="H100", instance_type="p5.48xlarge"), spot=False) == 55.04
        assert builtin.hourly_usd(Workload(instance_type="m5.xlarge", replicas=0), spot=False) == 0.0  # scaled to zero
        assert builtin.hourly_usd(Workload(gpus=0, gpu_type="H100"), spot=False) is None
        assert builtin.hourly_usd(Workload(gpus=1, gpu_type="Z9000"), spot=False) is None

    def test_spot_hourly_usd(self, builtin: Catalog) -> None:
        assert builtin.spot_hourly_usd(Workload(gpus=4, gpu_type="L4", replicas=2)) == pytest.approx(4 * 0.36 * 2)
        assert builtin.spot_hourly_usd(Workload(instance_type="g5.xlarge")) == 0.45
        assert builtin.spot_hourly_usd(Workload(gpus=1, gpu_type="Z9000")) is None

    def test_prices_are_dated(self, builtin: Catalog) -> None:
        assert builtin.prices_as_of is not None
        assert builtin.prices_as_of.year >= 2025


class TestMerge:
    def test_later_specs_win(self, builtin: Catalog) -> None:
        base = spec(
            tiers=[{"name": "cheap", "models": ["a-*"]}, {"name": "dear", "models": ["b-*"]}],
            gpuPrices={"H100": {"onDemandUsd": 6.0}},
            cacheMinimums=[{"models": ["a-*"], "minTokens": 100}],
            modelSizes={"a-*": 7},
            prices=[{"model": "a-*", "inputPerMTok": 1, "outputPerMTok": 2}],
            pricesAsOf="2025-01-01",
        )
        override = spec(
            tiers=[{"name": "cheap", "models": ["c-*"]}],
            gpuPrices={"nvidia-h100": {"onDemandUsd": 5.0}},
            cacheMinimums=[{"models": ["a-1*"], "minTokens": 50}],
            modelSizes={"a-1*": 9},
            prices=[{"model": "a-1*", "inputPerMTok": 10, "outputPerMTok": 20}],
        )
        merged = Catalog.merge([base, override])
        # a tier of a name that exists keeps its place in the order, and its models are added
        assert [t.name for t in merged.tiers] == ["cheap", "dear"]
        assert merged.tier_of("c-model").name == "cheap"  # type: ignore[union-attr]
        assert merged.tier_of("a-model").name == "cheap"  # type: ignore[union-attr]
        assert merged.gpu_price("H100").onDemandUsd == 5.0  # type: ignore[union-attr]
        assert merged.min_cacheable_tokens("a-1x") == 50
        assert merged.min_cacheable_tokens("a-2x") == 100
        assert merged.params_b("a-1x") == 9
        assert merged.params_b("a-2x") == 7
        assert merged.price_override("any", "a-1x").inputPerMTok == 10  # type: ignore[union-attr]
        assert merged.price_override("any", "a-2x").inputPerMTok == 1  # type: ignore[union-attr]
        assert str(merged.prices_as_of) == "2025-01-01"

    def test_a_tier_of_an_existing_name_adds_models_and_downgrade_targets(self) -> None:
        """A self-hosted model added to the built-in ``simple`` tier must not take Haiku out of it
        (before, the later tier replaced the earlier one and moved to the end of the order, after
        the dearer tiers, so downgrades went the wrong way)."""
        base = spec(tiers=[{"name": "simple", "models": ["claude-haiku-*"], "downgradeTo": {"anthropic": "h"}},
                           {"name": "standard", "models": ["claude-sonnet-*"], "downgradeTo": {"anthropic": "s"}}])
        mine = spec(tiers=[{"name": "simple", "models": ["meta-llama/*"], "downgradeTo": {"vllm": "meta-llama/8b"}}])
        merged = Catalog.merge([base, mine])
        simple = merged.tier("simple")
        assert simple is not None
        assert [t.name for t in merged.tiers] == ["simple", "standard"]
        assert simple.rank == 0
        assert dict(simple.downgrade_to) == {"anthropic": "h", "vllm": "meta-llama/8b"}
        assert merged.tier_of("claude-haiku-4-5") is simple
        assert merged.tier_of("meta-llama/Llama-3.1-8B") is simple

    def test_replace_redefines_a_tier_in_its_place(self) -> None:
        base = spec(tiers=[{"name": "simple", "models": ["claude-haiku-*"], "downgradeTo": {"anthropic": "h"}},
                           {"name": "standard", "models": ["claude-sonnet-*"]}])
        mine = spec(tiers=[{"name": "simple", "models": ["mini-*"], "downgradeTo": {"vllm": "mini-1"},
                            "replace": True}])
        merged = Catalog.merge([base, mine])
        assert [(t.name, t.rank) for t in merged.tiers] == [("simple", 0), ("standard", 1)]
        assert dict(merged.tiers[0].downgrade_to) == {"vllm": "mini-1"}
        assert merged.tier_of("claude-haiku-4-5") is None
        assert merged.tier_of("mini-2").name == "simple"  # type: ignore[union-attr]

    def test_a_later_document_moves_a_model_to_another_tier(self) -> None:
        base = spec(tiers=[{"name": "simple", "models": ["gpt-4o-mini*"]}, {"name": "standard", "models": ["gpt-4o*"]}])
        mine = spec(tiers=[{"name": "simple", "models": ["gpt-4o"]}])  # later documents win, specific or not
        merged = Catalog.merge([base, mine])
        assert merged.tier_of("gpt-4o").name == "simple"  # type: ignore[union-attr]
        assert merged.tier_of("gpt-4o-2024-08-06").name == "standard"  # type: ignore[union-attr]
        later = Catalog.merge([base, spec(tiers=[{"name": "standard", "models": ["*"]}])])
        assert later.tier_of("gpt-4o-mini").name == "standard"  # type: ignore[union-attr]

    def test_within_a_document_the_most_specific_glob_wins(self) -> None:
        catalog = Catalog.merge([spec(tiers=[
            {"name": "simple", "models": ["m-mini*"]},
            {"name": "standard", "models": ["m-*"]},
            {"name": "complex", "models": ["m-pro*", "m-*"]},  # a tie with standard's m-*: the cheaper tier
        ])])
        found = {m: catalog.tier_of(m).name for m in ("m-mini-2", "m-pro-2", "m-2")}  # type: ignore[union-attr]
        assert found == {"m-mini-2": "simple", "m-pro-2": "complex", "m-2": "standard"}

    def test_empty(self) -> None:
        empty = Catalog.merge([])
        assert empty.tiers == ()
        assert empty.tier_of("claude-haiku-4-5") is None
        assert empty.hourly_usd(Workload(gpus=1, gpu_type="H100"), spot=False) is None

    def test_is_frozen(self, builtin: Catalog) -> None:
        with pytest.raises(dataclasses.FrozenInstanceError):
            builtin.tiers = ()  # type: ignore[misc]


class TestCatalogPricer:
    def catalog(self) -> Catalog:
        return Catalog.merge(
            [
                spec(
                    prices=[
                        {
                            "model": "my-llama-*",
                            "provider": "vllm",
                            "inputPerMTok": 1,
                            "outputPerMTok": 4,
                            "cacheReadPerMTok": 0.1,
                        },
                        {"model": "shared-*", "inputPerMTok": 2, "outputPerMTok": 2, "cacheWrite1hPerMTok": 8},
                    ]
                )
            ]
        )

    def test_override_prices(self) -> None:
        pricer = self.catalog().pricer(None)
        usage = TokenUsage(
            input_tokens=1_000_000,
            output_tokens=1_000_000,
            cache_read_tokens=1_000_000,
            cache_write_5m_tokens=1_000_000,
        )
        # a self-hosted model's cache writes fall back to the input price when the override has none
        assert pricer.cost("vllm", "my-llama-70b", usage) == pytest.approx(1 + 4 + 0.1 + 1)
        assert pricer.cost("vllm", "my-llama-70b", usage, batch=True) == pytest.approx((1 + 4 + 0.1 + 1) / 2)
        one_hour = TokenUsage(cache_write_5m_tokens=1_000_000, cache_write_1h_tokens=1_000_000)
        assert pricer.cost("x", "shared-model", one_hour) == pytest.approx(2 + 8)

    @pytest.mark.parametrize("usage", [TokenUsage(audio_seconds=60), TokenUsage(input_tokens=5, input_characters=9)])
    def test_an_override_never_prices_seconds_or_characters_at_nothing(self, usage: TokenUsage) -> None:
        pricer = self.catalog().pricer(None)  # a self-hosted whisper priced per token, say
        with pytest.raises(PricingError, match="seconds of audio or characters"):
            pricer.cost("vllm", "my-llama-70b", usage)

    def test_anthropic_cache_writes_default_to_its_write_premiums(self) -> None:
        # Anthropic bills 5-minute writes at 1.25x input and 1-hour writes at 2x: an override that
        # names only input and output prices must not bill them as plain input
        pricer = self.catalog().pricer(None)
        writes = TokenUsage(cache_write_5m_tokens=1_000_000, cache_write_1h_tokens=1_000_000)
        assert pricer.cost("anthropic", "shared-claude", writes) == pytest.approx(2.5 + 8)
        assert pricer.cost("openai", "shared-gpt", writes) == pytest.approx(2 + 8)
        only_5m = Catalog.merge(
            [spec(prices=[{"model": "m", "inputPerMTok": 2, "outputPerMTok": 2, "cacheWritePerMTok": 3}])]
        ).pricer(None)
        assert only_5m.cost("anthropic", "m", writes) == pytest.approx(3 + 4)
        assert only_5m.cost("vllm", "m", writes) == pytest.approx(3 + 3)

    def test_provider_scoped_override(self) -> None:
        pricer = self.catalog().pricer(None)
        with pytest.raises(PricingError, match="my-llama-70b"):
            pricer.cost("openai", "my-llama-70b", TokenUsage(input_tokens=1))

    def test_falls_back(self, fake_pricer: Any) -> None:
        pricer = self.catalog().pricer(fake_pricer)
        assert pricer.cost("anthropic", "claude-sonnet-4-5", TokenUsage(output_tokens=1_000_000)) == 15.0
        assert fake_pricer.calls == 1
        assert pricer.cost("vllm", "my-llama-8b", TokenUsage(output_tokens=1_000_000)) == 4.0
        assert fake_pricer.calls == 1
        with pytest.raises(PricingError):
            pricer.cost("x", "unknown", TokenUsage(input_tokens=1))


CATALOG_DOC = """
apiVersion: costwarden.dev/v1
kind: ModelCatalog
metadata: {name: in-house}
spec:
  tiers:
    - name: free
      models: ["my-llama-*"]
      downgradeTo: {vllm: my-llama-8b}
  prices:
    - {model: "my-llama-*", inputPerMTok: 0.5, outputPerMTok: 0.5}
  gpuPrices:
    H100: {onDemandUsd: 2.0, spotUsd: 1.0}
"""

POLICY = """
apiVersion: costwarden.dev/v1
kind: Policy
metadata: {name: p}
spec:
  subject: llm_call
  rules:
    - name: models
      allowedModels: {default: ["tier:free"]}
    - name: budget
      budget: {per: [user], limitUsd: 1, window: day}
"""


class TestCatalogDocuments:
    def test_documents_layer_on_the_builtin_catalog(self, compile_policies: CompilePolicies) -> None:
        from costwarden.adapters.ledger.memory import MemoryLedger

        ps = compile_policies(CATALOG_DOC, POLICY)
        assert [t.name for t in ps.catalog.tiers] == ["simple", "standard", "complex", "free"]
        assert ps.catalog.gpu_price("H100").onDemandUsd == 2.0  # type: ignore[union-attr]
        assert ps.catalog.gpu_price("A100").onDemandUsd == 2.75  # type: ignore[union-attr]
        subject = subject_from_dict(
            {
                "type": "llm_call",
                "provider": "vllm",
                "model": "my-llama-70b",
                "user": "alice",
                "request": {"input_tokens": 1_000_000, "max_tokens": 20_000},
            }
        )
        d = ps.evaluate(subject, ledger=MemoryLedger())
        models, budget = d.results
        assert models.result == "pass"
        # priced from the catalog override with no other price source: $0.50/MTok in and out
        assert budget.result == "pass"
        assert budget.actual == pytest.approx(0.5 + 0.01)

    def test_hugging_face_ids_are_priced_and_tiered_by_their_whole_id(self, compile_policies: CompilePolicies) -> None:
        """A self-hosted model named as Hugging Face names it (``org/name``) matches globs that
        name the organisation; before, only the part after the '/' was matched, so such a price
        or tier silently never applied."""
        from costwarden.adapters.ledger.memory import MemoryLedger

        doc = CATALOG_DOC.replace('"my-llama-*"', '"meta-llama/*"').replace("my-llama-8b", "meta-llama/Llama-3.1-8B")
        ps = compile_policies(doc, POLICY)
        assert ps.catalog.tier_of("meta-llama/Llama-3.1-70B").name == "free"  # type: ignore[union-attr]
        assert ps.catalog.tier_of("Llama-3.1-70B") is None  # the bare name is not the organisation's
        subject = subject_from_dict({"type": "llm_call", "provider": "vllm", "model": "meta-llama/Llama-3.1-70B",
                                     "user": "alice", "request": {"input_tokens": 1_000_000, "max_tokens": 20_000}})
        models, budget = ps.evaluate(subject, ledger=MemoryLedger()).results
        assert (models.result, budget.result) == ("pass", "pass")
        assert budget.actual == pytest.approx(0.5 + 0.01)

    def test_a_self_hosted_model_added_to_a_builtin_tier(self, compile_policies: CompilePolicies) -> None:
        """``tier:simple`` then allows both the built-in cheap models and the added one, and a vLLM
        call to a dearer model downgrades to the added tier's vLLM target."""
        doc = """
apiVersion: costwarden.dev/v1
kind: ModelCatalog
metadata: {name: in-house}
spec:
  tiers:
    - {name: simple, models: ["meta-llama/Llama-3.1-8B*"], downgradeTo: {vllm: meta-llama/Llama-3.1-8B-Instruct}}
    - {name: standard, models: ["meta-llama/Llama-3.1-70B*"]}
  prices:
    - {model: "meta-llama/*", inputPerMTok: 0.2, outputPerMTok: 0.2}
"""
        policy = POLICY.replace('["tier:free"]', '["tier:simple"]')
        ps = compile_policies(doc, policy)
        assert [t.name for t in ps.catalog.tiers] == ["simple", "standard", "complex"]

        def models_result(provider: str, model: str) -> Any:
            subject = subject_from_dict({"type": "llm_call", "provider": provider, "model": model, "user": "a",
                                         "request": {"input_tokens": 10, "max_tokens": 10}})
            return ps.evaluate(subject).results[0]

        assert models_result("anthropic", "claude-haiku-4-5").result == "pass"
        assert models_result("vllm", "meta-llama/Llama-3.1-8B-Instruct").result == "pass"
        dear = models_result("vllm", "meta-llama/Llama-3.1-70B-Instruct")
        assert dear.result == "fail"
        assert dear.fix.patch[0]["value"] == "meta-llama/Llama-3.1-8B-Instruct"
        assert models_result("anthropic", "claude-sonnet-4-5").fix.patch[0]["value"] == "claude-haiku-4-5"

    def test_policy_can_name_a_tier_from_a_catalog_document(self, compile_policies: CompilePolicies) -> None:
        with pytest.raises(PolicyError) as info:
            compile_policies(POLICY)
        assert [d.code for d in info.value.diagnostics] == ["unknown-tier"]


class TestOverrideUsageKinds:
    """An override can price web searches and the audio share of input and output; unset, the audio
    is priced as text and searches are free (before, searches were always free and audio always text)."""

    def test_web_searches_and_audio_are_priced_by_the_override(self) -> None:
        catalog = Catalog.merge([spec(prices=[{
            "model": "claude-next-*", "provider": "anthropic", "inputPerMTok": 3, "outputPerMTok": 15,
            "webSearchPerRequest": 0.01, "inputAudioPerMTok": 40, "outputAudioPerMTok": 80,
        }])])
        pricer = catalog.pricer(None)
        searches = TokenUsage(input_tokens=1_000_000, web_search_requests=100)
        assert pricer.cost("anthropic", "claude-next-1", searches) == pytest.approx(3 + 1.0)
        # the batch discount is on tokens, not on searches
        assert pricer.cost("anthropic", "claude-next-1", searches, batch=True) == pytest.approx(1.5 + 1.0)
        audio = TokenUsage(input_tokens=2_000_000, output_tokens=2_000_000,
                           input_audio_tokens=1_000_000, output_audio_tokens=1_000_000)
        assert pricer.cost("anthropic", "claude-next-1", audio) == pytest.approx(3 + 40 + 15 + 80)

    def test_unset_prices_charge_audio_as_text_and_searches_nothing(self) -> None:
        pricer = Catalog.merge([spec(prices=[{"model": "m", "inputPerMTok": 1, "outputPerMTok": 2}])]).pricer(None)
        usage = TokenUsage(input_tokens=1_000_000, output_tokens=1_000_000, input_audio_tokens=500_000,
                           output_audio_tokens=500_000, web_search_requests=3)
        assert pricer.cost("x", "m", usage) == pytest.approx(1 + 2)

    def test_a_free_model_costs_zero_not_unknown(self) -> None:
        pricer = Catalog.merge([spec(prices=[{"model": "free-*", "inputPerMTok": 0, "outputPerMTok": 0,
                                              "webSearchPerRequest": 0}])]).pricer(None)
        assert pricer.cost("x", "free-1", TokenUsage(input_tokens=10, output_tokens=10, web_search_requests=1)) == 0

    def test_the_budget_reserves_the_searches_a_request_allows(self, compile_policies: CompilePolicies) -> None:
        from costwarden.adapters.ledger.memory import MemoryLedger

        doc = CATALOG_DOC.replace("outputPerMTok: 0.5}", "outputPerMTok: 0.5, webSearchPerRequest: 0.1}")
        ps = compile_policies(doc, POLICY)
        subject = subject_from_dict({"type": "llm_call", "provider": "vllm", "model": "my-llama-70b", "user": "a",
                                     "request": {"input_tokens": 1_000_000, "max_tokens": 20_000,
                                                 "max_web_searches": 5}})
        _, budget = ps.evaluate(subject, ledger=MemoryLedger()).results
        assert budget.actual == pytest.approx(0.5 + 0.01 + 5 * 0.1)

    @pytest.mark.parametrize("field", ["webSearchPerRequest", "inputAudioPerMTok", "outputAudioPerMTok"])
    def test_a_negative_price_is_a_positioned_load_error(self, tmp_path: Any, field: str) -> None:
        path = tmp_path / "catalog.yaml"
        path.write_text(CATALOG_DOC.replace("outputPerMTok: 0.5}", f"outputPerMTok: 0.5, {field}: -1}}"))
        result = load_paths(path)
        [diag] = result.diagnostics
        assert field in diag.message
        assert (diag.file, diag.line) == (str(path), 11)  # the line of the price entry
        assert diag.source_line is not None and diag.source_line[diag.column - 1 :].startswith("-1")  # the value


def test_within_a_document_the_most_specific_price_applies() -> None:
    """``meta-llama/*`` listed before ``meta-llama/Llama-3.1-405B*``: before, the first listed
    matched every model, so the dearer 405B was charged the 8B price; now the more specific glob
    wins, as for tiers, and a provider-scoped entry before an unscoped one of the same glob."""
    catalog = Catalog.merge([spec(prices=[
        {"model": "meta-llama/*", "inputPerMTok": 0.2, "outputPerMTok": 0.2},
        {"model": "meta-llama/Llama-3.1-405B*", "inputPerMTok": 3, "outputPerMTok": 3},
        {"model": "shared", "inputPerMTok": 1, "outputPerMTok": 1},
        {"model": "shared", "provider": "vllm", "inputPerMTok": 2, "outputPerMTok": 2},
    ])])
    pricer = catalog.pricer(None)
    usage = TokenUsage(input_tokens=1_000_000)
    assert pricer.cost("vllm", "meta-llama/Llama-3.1-405B-Instruct", usage) == pytest.approx(3)
    assert pricer.cost("vllm", "meta-llama/Llama-3.1-8B-Instruct", usage) == pytest.approx(0.2)
    assert pricer.cost("vllm", "shared", usage) == pytest.approx(2)
    assert pricer.cost("openai", "shared", usage) == pytest.approx(1)
    # a later document still wins over a more specific glob of an earlier one
    specific = {"model": "meta-llama/Llama-3.1-405B*", "inputPerMTok": 3, "outputPerMTok": 3}
    later = Catalog.merge([spec(prices=[specific]),
                           spec(prices=[{"model": "meta-llama/*", "inputPerMTok": 0.5, "outputPerMTok": 0.5}])])
    assert later.pricer(None).cost("vllm", "meta-llama/Llama-3.1-405B", usage) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("us.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5-20251001"),
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5-20250929"),
        ("anthropic.claude-3-5-sonnet-20240620-v1:0", "claude-3-5-sonnet-20240620"),
        ("arn:aws:bedrock:us-east-1:1:inference-profile/eu.anthropic.claude-opus-4-1-20250805-v1:0",
         "claude-opus-4-1-20250805"),
        ("openai.gpt-oss-120b-1:0", "gpt-oss-120b"),
        ("claude-haiku-4-5@20251001", "claude-haiku-4-5@20251001"),
        ("o3.mini", "o3.mini"),  # a dot without a Bedrock vendor is part of the name
        ("gpt-4.1-mini", "gpt-4.1-mini"),
    ],
)
def test_bedrock_ids_are_matched_by_the_models_own_name(model: str, name: str, builtin: Catalog) -> None:
    assert normalize_model(model) == name
    if "claude-haiku-4-5" in model:  # tiers and cache minimums see through Bedrock's and Vertex's spelling
        tier = builtin.tier_of(model)
        assert tier is not None and tier.name == "simple"
        assert builtin.min_cacheable_tokens(model) == builtin.min_cacheable_tokens("claude-haiku-4-5")
    assert ModelGlobs([name]).match(model)
