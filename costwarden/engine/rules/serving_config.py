"""``servingConfig``: vLLM settings that waste the GPUs they hold.

Works on resolved arguments keyed by vLLM's destination names. An absent argument takes
vLLM's default (prefix caching on in V1, memory utilisation 0.9), so only explicit waste fails.
Each problem is its own result under the rule, with what to change and, where a GPU price is
known, the monthly saving. When ``args.config`` names a ``--config`` file that was not read, an
argument that is ``None`` may be set there: checks that need one give a single ``error`` result
(never a pass judged on defaults). Parallelism fixes propose only tensor-parallel sizes that
divide the model's attention heads, as vLLM requires at start-up: ``--hf-overrides``, else the
rule's ``attentionHeads``, else the model catalog's (``Catalog.attention_heads``). This module
compiles the rule; its checks, one per kind of waste, are in :mod:`.serving_checks`.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from pydantic import Field

from costwarden.engine.decision import Outcome
from costwarden.engine.rules.base import MEMO_LIMIT, Check, CompileEnv, EvalContext, RuleKind, RuleParams
from costwarden.engine.rules.serving_checks import (
    Env,
    deprecated,
    gpu_type,
    invalid,
    max_num_seqs,
    memory,
    model_len,
    parallelism,
    prefix_caching,
    quantized,
)
from costwarden.engine.subjects import ServingConfig as ServingSubject
from costwarden.engine.subjects import Subject


class ServingConfig(RuleParams):
    parallelismMatchesGpus: bool = Field(
        default=True, description="TP x PP x DP equals GPUs per replica (NeuronCores on AWS Neuron)"
    )
    requirePrefixCaching: bool = True
    minGpuMemoryUtilization: float | None = Field(default=None, gt=0, le=1)
    minMaxNumSeqs: int | None = Field(default=None, ge=1, description="on large GPUs")
    maxModelLenFactor: float | None = Field(
        default=None, gt=1, description="max_model_len at most this times the declared need"
    )
    needTag: str = Field(default="costwarden.dev/max-context-tokens", description="tag declaring the need")
    quantizeAboveParamsB: float | None = Field(default=None, gt=0)
    allowedGpuTypes: list[str] | None = None
    forbidDeprecatedArgs: bool = False
    rejectInvalidArgs: bool = Field(default=True, description="arguments the engine would refuse to start with")
    attentionHeads: dict[str, int] = Field(
        default_factory=dict, description="model glob -> attention heads, ahead of the model catalog's"
    )


def compile(params: ServingConfig, env: CompileEnv) -> Check:
    catalog = env.catalog
    checks = [
        c
        for c in (
            parallelism if params.parallelismMatchesGpus else None,
            prefix_caching if params.requirePrefixCaching else None,
            memory if params.minGpuMemoryUtilization is not None else None,
            max_num_seqs if params.minMaxNumSeqs is not None else None,
            model_len if params.maxModelLenFactor is not None else None,
            quantized if params.quantizeAboveParamsB is not None else None,
            gpu_type if params.allowedGpuTypes is not None else None,
            deprecated if params.forbidDeprecatedArgs else None,
            invalid if params.rejectInvalidArgs else None,
        )
        if c is not None
    ]

    memo: dict[Any, list[Outcome]] = {}
    heads_table = tuple((k.lower(), v) for k, v in params.attentionHeads.items())
    heads_by_model: dict[str, int | None] = {}  # glob matching per model once, not per subject

    def model_heads(model: str) -> int | None:
        if model not in heads_by_model:
            found = _table_heads(model, heads_table) or catalog.attention_heads(model)
            if len(heads_by_model) >= MEMO_LIMIT:
                return found
            heads_by_model[model] = found
        return heads_by_model[model]

    def check(subject: Subject, ctx: EvalContext) -> list[Outcome]:
        assert isinstance(subject, ServingSubject)
        heads = _override_heads(subject) or model_heads(subject.model)
        key = _key(subject, params.needTag, heads)
        found = memo.get(key) if key is not None else None
        if found is not None:
            return found
        env = Env(params, catalog, heads)
        results = [c(subject, env) for c in checks]
        failures = [r for r in results if isinstance(r, Outcome)]
        unknown = [flag for r in results if isinstance(r, list) for flag in r]
        if unknown:
            failures.append(_cannot_judge(subject, unknown))
        outcomes = failures or [Outcome("pass", f"{subject.engine} configuration uses its GPUs efficiently")]
        if key is not None and len(memo) < MEMO_LIMIT:
            # setdefault: a thread that built the same key meanwhile keeps its outcomes, which may be
            # cached by id already (rules/base.py, memo_outcome)
            outcomes = memo.setdefault(key, [o._replace(static=True) for o in outcomes])
        return outcomes

    return check


_JUDGED_ARGS = (
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "data_parallel_size",
    "data_parallel_size_local",
    "enable_prefix_caching",
    "gpu_memory_utilization",
    "max_num_seqs",
    "max_model_len",
    "quantization",
    "config",
)


def _key(s: ServingSubject, need_tag: str, heads: int | None) -> tuple[Any, ...] | None:
    """Everything the checks read, or None when a value is not hashable (then nothing is memoised)."""
    key = (
        heads,
        s.engine,
        s.engine_version,
        s.model,
        s.gpus,
        s.gpu_type,
        s.neuron_cores,
        s.replicas,
        s.params_b,
        s.tags.get(need_tag),
        s.deprecated_args,
        s.arg_errors,
        *(s.args.get(a) for a in _JUDGED_ARGS),
    )
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _cannot_judge(s: ServingSubject, flags: list[str]) -> Outcome:
    path = s.args.get("config")
    names = ", ".join(dict.fromkeys(flags))
    return Outcome(
        "error",
        f"cannot judge {names}: the --config file {path} was not read and may set them. Set them on "
        "the command line, or let costwarden read the file: in CI, check the ConfigMap mounted there "
        "with the workload; at admission, the webhook reads it when its RBAC allows",
        path="args.config",
        expected="the --config file's contents",
        actual=path,
    )


def _override_heads(s: ServingSubject) -> int | None:
    """``--hf-overrides '{"num_attention_heads": N}'``: vLLM applies it to the model's config."""
    overrides = s.args.get("hf_overrides")
    value = overrides.get("num_attention_heads") if isinstance(overrides, dict) else None
    return value if isinstance(value, int) and value > 0 else None


def _table_heads(model: str, table: tuple[tuple[str, int], ...]) -> int | None:
    name = model.lower().rstrip("/")
    return next((heads for glob, heads in table if fnmatchcase(name, glob)), None)


KIND = RuleKind(
    "servingConfig", ServingConfig, ("serving_config",), compile, "vLLM serving settings that waste GPUs or money"
)
