"""``servingConfig``: vLLM settings that waste the GPUs they hold.

Works on resolved arguments keyed by vLLM's destination names. An absent argument takes
vLLM's default (prefix caching on in V1, memory utilisation 0.9), so only explicit waste fails.
Each problem is its own result under the rule, with what to change and, where a GPU price is
known, the monthly saving.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field

from costwarden.engine.catalog import HOURS_PER_MONTH, Catalog, normalize_gpu
from costwarden.engine.decision import Fix, Outcome
from costwarden.engine.rules.base import MEMO_LIMIT, Check, CompileEnv, EvalContext, RuleKind, RuleParams
from costwarden.engine.subjects import ServingConfig as ServingSubject
from costwarden.engine.subjects import Subject

QUANTIZED_NAME = re.compile(
    r"(awq|gptq|fp8|fp4|nvfp4|mxfp4|int4|int8|w4a16|w8a8|w8a16|bnb|4bit|8bit|gguf|exl2|quant|marlin)", re.IGNORECASE
)
LARGE_GPUS = ("H100", "H200", "B200", "A100", "MI300", "GH200", "L40S")


class ServingConfig(RuleParams):
    parallelismMatchesGpus: bool = Field(default=True, description="TP x PP x DP equals GPUs per replica")
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


def compile(params: ServingConfig, env: CompileEnv) -> Check:
    catalog = env.catalog
    checks = [
        c
        for c in (
            _parallelism if params.parallelismMatchesGpus else None,
            _prefix_caching if params.requirePrefixCaching else None,
            _memory if params.minGpuMemoryUtilization is not None else None,
            _max_num_seqs if params.minMaxNumSeqs is not None else None,
            _model_len if params.maxModelLenFactor is not None else None,
            _quantized if params.quantizeAboveParamsB is not None else None,
            _gpu_type if params.allowedGpuTypes is not None else None,
            _deprecated if params.forbidDeprecatedArgs else None,
            _invalid if params.rejectInvalidArgs else None,
        )
        if c is not None
    ]

    memo: dict[Any, list[Outcome]] = {}

    def check(subject: Subject, ctx: EvalContext) -> list[Outcome]:
        assert isinstance(subject, ServingSubject)
        key = _key(subject, params.needTag)
        found = memo.get(key) if key is not None else None
        if found is not None:
            return found
        failures = [o for c in checks if (o := c(subject, params, catalog)) is not None]
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
)


def _key(s: ServingSubject, need_tag: str) -> tuple[Any, ...] | None:
    """Everything the checks read, or None when a value is not hashable (then nothing is memoised)."""
    key = (
        s.engine,
        s.engine_version,
        s.model,
        s.gpus,
        s.gpu_type,
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


def _arg(s: ServingSubject, name: str, default: Any = None) -> Any:
    value = s.args.get(name)
    return default if value is None else value


def _set(name: str, value: Any, why: str) -> Fix:
    flag = "--" + name.replace("_", "-")
    return Fix(
        f"set {flag} {value}"
        if not isinstance(value, bool)
        else f"set {flag}"
        if value
        else f"set --no-{name.replace('_', '-')}",
        ({"op": "add", "path": f"/{name}", "value": value},),
        "args",
    )


def _parallelism(s: ServingSubject, p: ServingConfig, catalog: Catalog) -> Outcome | None:
    if s.gpus < 1:  # no GPU, or a fraction of one (time-slicing, MIG): one rank uses what there is
        return None
    tp, pp, dp = (int(_arg(s, n, 1)) for n in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"))
    used = tp * pp * dp
    if used == s.gpus:
        return None
    local = s.args.get("data_parallel_size_local")  # multi-node DP: this node runs `local` of the ranks
    if isinstance(local, int) and not isinstance(local, bool) and tp * pp * local == s.gpus:
        return None
    path = "args.tensor_parallel_size"
    if used > s.gpus:
        return Outcome(
            "fail",
            f"TP {tp} x PP {pp} x DP {dp} = {used} GPUs but each replica requests {s.gpus:g}; vLLM will not start",
            path=path,
            expected=s.gpus,
            actual=used,
        )
    idle = s.gpus - used
    price = catalog.gpu_price(s.gpu_type)
    saving = round(idle * price.onDemandUsd * HOURS_PER_MONTH * s.replicas, 2) if price else None
    return Outcome(
        "fail",
        f"TP {tp} x PP {pp} x DP {dp} = {used} GPUs but each replica requests {s.gpus:g}: {idle:g} GPU(s) idle",
        path=path,
        expected=s.gpus,
        actual=used,
        fix=_set("tensor_parallel_size", int(s.gpus) // (pp * dp) or 1, "use every GPU"),
        savings_usd_month=saving,
    )


def _prefix_caching(s: ServingSubject, p: ServingConfig, catalog: Catalog) -> Outcome | None:
    if _arg(s, "enable_prefix_caching", True) is not False:
        return None
    return Outcome(
        "fail",
        "prefix caching is disabled; repeated prompt prefixes are recomputed on every request",
        path="args.enable_prefix_caching",
        expected=True,
        actual=False,
        fix=_set("enable_prefix_caching", True, ""),
    )


def _memory(s: ServingSubject, p: ServingConfig, catalog: Catalog) -> Outcome | None:
    value = float(_arg(s, "gpu_memory_utilization", 0.9))
    floor = p.minGpuMemoryUtilization or 0.0
    if value >= floor:
        return None
    return Outcome(
        "fail",
        f"gpu_memory_utilization {value:g} leaves {1 - value:.0%} of GPU memory unused "
        f"for KV cache (minimum {floor:g})",
        path="args.gpu_memory_utilization",
        expected=floor,
        actual=value,
        fix=_set("gpu_memory_utilization", floor, ""),
    )


def _max_num_seqs(s: ServingSubject, p: ServingConfig, catalog: Catalog) -> Outcome | None:
    value = s.args.get("max_num_seqs")
    floor = p.minMaxNumSeqs or 0
    gpu = normalize_gpu(s.gpu_type) if s.gpu_type else ""
    if value is None or int(value) >= floor or not any(g in gpu for g in LARGE_GPUS):
        return None
    return Outcome(
        "fail",
        f"max_num_seqs {value} caps batching on a {s.gpu_type} (minimum {floor})",
        path="args.max_num_seqs",
        expected=floor,
        actual=value,
        fix=_set("max_num_seqs", floor, ""),
    )


def _model_len(s: ServingSubject, p: ServingConfig, catalog: Catalog) -> Outcome | None:
    value, need = s.args.get("max_model_len"), s.tags.get(p.needTag)
    if value is None or not need or not need.isdigit():
        return None
    factor = p.maxModelLenFactor or 1.0
    if int(value) <= int(need) * factor:
        return None
    return Outcome(
        "fail",
        f"max_model_len {value} is more than {factor:g}x the declared need of {need} tokens",
        path="args.max_model_len",
        expected=int(int(need) * factor),
        actual=value,
        fix=_set("max_model_len", int(need), ""),
    )


def _quantized(s: ServingSubject, p: ServingConfig, catalog: Catalog) -> Outcome | None:
    size = s.params_b if s.params_b is not None else catalog.params_b(s.model)
    limit = p.quantizeAboveParamsB or 0.0
    if size is None or size <= limit or s.args.get("quantization") or QUANTIZED_NAME.search(s.model):
        return None
    # A missing --quantization is not proof: vLLM reads it from the checkpoint. Advise, don't deny.
    return Outcome(
        "fail",
        f"{s.model} (~{size:g}B parameters) shows no quantisation (no --quantization, "
        f"no marker in the name); above {limit:g}B serve a quantised checkpoint (FP8, AWQ, GPTQ)",
        path="args.quantization",
        expected="quantised",
        actual=None,
        advisory=True,
    )


def _gpu_type(s: ServingSubject, p: ServingConfig, catalog: Catalog) -> Outcome | None:
    allowed = [normalize_gpu(g) for g in p.allowedGpuTypes or []]
    gpu = normalize_gpu(s.gpu_type) if s.gpu_type else None
    if gpu is None or s.gpus <= 0 or any(a in gpu for a in allowed):
        return None
    return Outcome(
        "fail",
        f"GPU type {s.gpu_type} is not allowed; allowed: {', '.join(p.allowedGpuTypes or [])}",
        path="gpu_type",
        expected=p.allowedGpuTypes,
        actual=s.gpu_type,
    )


def _deprecated(s: ServingSubject, p: ServingConfig, catalog: Catalog) -> Outcome | None:
    if not s.deprecated_args:
        return None
    names = ", ".join("--" + a.replace("_", "-") for a in s.deprecated_args)
    return Outcome(
        "fail",
        f"deprecated or removed arguments for vLLM {s.engine_version or '(default)'}: {names}",
        path="args",
        expected=[],
        actual=list(s.deprecated_args),
        # A removed argument never reaches vLLM's namespace: there is nothing in args to remove.
        fix=Fix(
            f"remove {names}",
            tuple({"op": "remove", "path": f"/{a}"} for a in s.deprecated_args if a in s.args),
            "args",
        ),
    )


def _invalid(s: ServingSubject, p: ServingConfig, catalog: Catalog) -> Outcome | None:
    # Removed arguments also make the engine exit; forbidDeprecatedArgs reports them (with a fix).
    errors = [e for e in s.arg_errors if not (p.forbidDeprecatedArgs and e.startswith("error[removed-argument]"))]
    if not errors:
        return None
    first = errors[0].split("\n", 1)[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return Outcome(
        "fail",
        f"{s.engine} would refuse to start: {first}{more}",
        path="args",
        expected="arguments the engine accepts",
        actual=errors,
    )


KIND = RuleKind(
    "servingConfig", ServingConfig, ("serving_config",), compile, "vLLM serving settings that waste GPUs or money"
)
