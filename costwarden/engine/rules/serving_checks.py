"""The ``servingConfig`` rule's checks, one function per kind of waste: each takes the subject and
its :class:`Env` and returns a failure, the flags an unread ``--config`` file may set, or None.
:mod:`costwarden.engine.rules.serving_config` compiles the rule's parameters into the checks that apply.

Parallelism fixes propose only tensor-parallel sizes that divide the model's attention heads, as
vLLM requires at start-up (or, when the number is unknown, a power of two).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, NamedTuple

from costwarden.engine.catalog import HOURS_PER_MONTH, Catalog, normalize_gpu
from costwarden.engine.decision import Fix, Outcome
from costwarden.engine.subjects import ServingConfig as ServingSubject

if TYPE_CHECKING:
    from costwarden.engine.rules.serving_config import ServingConfig

QUANTIZED_NAME = re.compile(
    r"(awq|gptq|fp8|fp4|nvfp4|mxfp4|int4|int8|w4a16|w8a8|w8a16|bnb|4bit|8bit|gguf|exl2|quant|marlin)", re.IGNORECASE
)
LARGE_GPUS = ("H100", "H200", "B200", "A100", "MI300", "GH200", "L40S")


class Env(NamedTuple):
    """What every check reads besides the subject."""

    params: ServingConfig
    catalog: Catalog
    heads: int | None  # the model's attention heads, when known


Result = Outcome | list[str] | None  # a failure, the flags an unread --config file may set, or nothing


def _arg(s: ServingSubject, name: str, default: Any = None) -> Any:
    value = s.args.get(name)
    return default if value is None else value


def _unknown(s: ServingSubject, *names: str) -> list[str]:
    """The flags among ``names`` that an unread ``--config`` file may set (the command line did not)."""
    if not s.args.get("config"):
        return []
    return ["--" + n.replace("_", "-") for n in names if s.args.get(n) is None]


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


def _tp_fits(tp: int, heads: int | None) -> bool:
    return heads % tp == 0 if heads else tp & (tp - 1) == 0


def _layout_fix(gpus: float, tp: int, pp: int, dp: int, heads: int | None) -> Fix | None:
    """TP x DP filling every GPU with PP kept: the user's DP if a valid TP fills the rest, else the
    largest valid TP with DP making up the difference. Valid: divides the heads, or when they are
    unknown a power of two (what most models' head counts divide)."""
    if not float(gpus).is_integer() or int(gpus) % pp:
        return None
    per = int(gpus) // pp
    if per % dp == 0 and _tp_fits(per // dp, heads):
        new_tp, new_dp = per // dp, dp
    else:
        new_tp = next(t for t in range(per, 0, -1) if per % t == 0 and _tp_fits(t, heads))
        new_dp = per // new_tp
    changes = [(n, v) for n, v, old in (("tensor_parallel_size", new_tp, tp), ("data_parallel_size", new_dp, dp))
               if v != old]
    if not changes:
        return None
    text = "set " + " ".join(f"--{n.replace('_', '-')} {v}" for n, v in changes)
    if heads is None and new_tp != per // dp:
        text += (" (the model's attention heads must be divisible by the tensor-parallel size; their number is "
                 "unknown here, so a power of two is proposed)")
    return Fix(text, tuple({"op": "add", "path": f"/{n}", "value": v} for n, v in changes), "args")


def parallelism(s: ServingSubject, e: Env) -> Result:
    """TP x PP x DP against what one replica has: its GPUs, or on AWS Neuron its NeuronCores
    (the unit vLLM's parallel sizes count there), possibly one of several counts."""
    have = s.neuron_cores or (s.gpus,)
    if max(have) < 1:  # no GPU, or a fraction of one (time-slicing, MIG): one rank uses what there is
        return None
    unknown = _unknown(s, "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")
    if unknown:
        return unknown
    tp, pp, dp = (int(_arg(s, n, 1)) for n in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"))
    used, path = tp * pp * dp, "args.tensor_parallel_size"
    exact = have[0] if len(have) == 1 else None
    if e.heads and e.heads % tp:
        fits = exact is not None and used <= exact
        return Outcome("fail", f"tensor-parallel size {tp} does not divide the model's {e.heads} attention heads; "
                       "vLLM will not start", path=path, expected=f"a divisor of {e.heads}", actual=tp,
                       fix=_layout_fix(exact, tp, pp, dp, e.heads) if exact is not None and fits else None)
    if used in have:
        return None
    local = s.args.get("data_parallel_size_local")  # multi-node DP: this node runs `local` of the ranks
    if isinstance(local, int) and not isinstance(local, bool) and tp * pp * local in have:
        return None
    unit = "NeuronCores" if s.neuron_cores else "GPUs"
    layout = f"TP {tp} x PP {pp} x DP {dp} = {used} {unit}"
    if exact is None:
        counts = ", ".join(f"{c:g}" for c in have[:-1]) + f" or {have[-1]:g}"
        return Outcome("fail", f"{layout} but each replica has {counts} NeuronCores (as many per Neuron device as "
                       "its generation and logical-core setting give); no count fits", path=path,
                       expected=list(have), actual=used)
    if used > exact:
        return Outcome("fail", f"{layout} but each replica requests {exact:g}; vLLM will not start",
                       path=path, expected=exact, actual=used)
    if _unknown(s, "data_parallel_size_local"):
        return _unknown(s, "data_parallel_size_local")
    idle = exact - used
    price = e.catalog.gpu_price(s.gpu_type)
    per_unit = s.gpus / exact  # devices per unit: the price is per device
    saving = round(idle * per_unit * price.onDemandUsd * HOURS_PER_MONTH * s.replicas, 2) if price else None
    return Outcome(
        "fail",
        f"{layout} but each replica requests {exact:g}: {idle:g} {'NeuronCore' if s.neuron_cores else 'GPU'}(s) idle",
        path=path,
        expected=exact,
        actual=used,
        fix=_layout_fix(exact, tp, pp, dp, e.heads),
        savings_usd_month=saving,
    )


def prefix_caching(s: ServingSubject, e: Env) -> Result:
    if _unknown(s, "enable_prefix_caching"):
        return _unknown(s, "enable_prefix_caching")
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


def memory(s: ServingSubject, e: Env) -> Result:
    if _unknown(s, "gpu_memory_utilization"):
        return _unknown(s, "gpu_memory_utilization")
    value = float(_arg(s, "gpu_memory_utilization", 0.9))
    floor = e.params.minGpuMemoryUtilization or 0.0
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


def max_num_seqs(s: ServingSubject, e: Env) -> Result:
    value = s.args.get("max_num_seqs")
    floor = e.params.minMaxNumSeqs or 0
    gpu = normalize_gpu(s.gpu_type) if s.gpu_type else ""
    if not any(g in gpu for g in LARGE_GPUS):
        return None
    if value is None:
        return _unknown(s, "max_num_seqs") or None
    if int(value) >= floor:
        return None
    return Outcome(
        "fail",
        f"max_num_seqs {value} caps batching on a {s.gpu_type} (minimum {floor})",
        path="args.max_num_seqs",
        expected=floor,
        actual=value,
        fix=_set("max_num_seqs", floor, ""),
    )


def model_len(s: ServingSubject, e: Env) -> Result:
    value, need = s.args.get("max_model_len"), s.tags.get(e.params.needTag)
    if not need or not need.isdigit():
        return None
    if value is None:
        return _unknown(s, "max_model_len") or None
    factor = e.params.maxModelLenFactor or 1.0
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


def quantized(s: ServingSubject, e: Env) -> Result:
    size = s.params_b if s.params_b is not None else e.catalog.params_b(s.model)
    limit = e.params.quantizeAboveParamsB or 0.0
    if size is None or size <= limit or s.args.get("quantization") or QUANTIZED_NAME.search(s.model):
        return None
    if _unknown(s, "quantization"):
        return _unknown(s, "quantization")
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


def gpu_type(s: ServingSubject, e: Env) -> Result:
    p = e.params
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


def deprecated(s: ServingSubject, e: Env) -> Result:
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


def invalid(s: ServingSubject, e: Env) -> Result:
    # Removed arguments also make the engine exit; forbidDeprecatedArgs reports them (with a fix).
    removed_reported = e.params.forbidDeprecatedArgs
    errors = [x for x in s.arg_errors if not (removed_reported and x.startswith("error[removed-argument]"))]
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


__all__ = [
    "Env",
    "LARGE_GPUS",
    "QUANTIZED_NAME",
    "Result",
    "deprecated",
    "gpu_type",
    "invalid",
    "max_num_seqs",
    "memory",
    "model_len",
    "parallelism",
    "prefix_caching",
    "quantized",
]
