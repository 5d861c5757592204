"""Parity: costwarden's vLLM parser resolves every corpus configuration exactly as vLLM's own
parser does, argument by argument, for every shipped table whose vLLM the oracle can import.

The oracle is vLLM itself in a separate environment (``prepare_vllm_oracle.sh`` builds it; CI
runs that first). Each case is run through ``vllm_oracle_driver.py`` in that environment, in one
process per vLLM version. A case is the words of one vLLM invocation and its entry point:

* every ``vllm serve --config`` file and benchmark server configuration in
  ``../shared/corpora/vllm-configs`` (as ``vllm serve MODEL --config FILE`` and as the api_server
  module), every production-stack ``modelSpec`` (the words the chart renders);
* every vLLM container in ``../shared/corpora/k8s-gpu-workloads`` and in the policy library's
  samples (the words detection extracts);
* the parser quirks of ``QUIRKS`` below.

Compared per case: whether vLLM refuses it, argparse's unrecognized leftovers, and every dest's
value. Documented exception: a config object (``--compilation-config``...) is compared by the keys
given, not the fields vLLM fills in from the class defaults.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from costwarden.adapters.vllm.parser import Resolution, parse_argv
from costwarden.adapters.vllm.table import available_versions

REPO = Path(__file__).resolve().parents[2]
CORPORA = REPO.parent / "shared" / "corpora"
ORACLE = Path(os.environ.get("COSTWARDEN_VLLM_ORACLE", Path.home() / ".cache" / "costwarden" / "vllm-oracle"))
DRIVER = Path(__file__).with_name("vllm_oracle_driver.py")
QUIRK_FILES = {
    "false.yaml": "enable-prefix-caching: false\nmax-num-seqs: 7\n",
    "mixed.yaml": "tensor_parallel_size: 2\nmax_model_len: 32K\nserved-model-name: [a, b]\n"
    "compilation-config: {mode: 3}\nenforce-eager: true\ngpu-memory-utilization: 0.8\n",
    "no-flag.yaml": "no-enable-prefix-caching: true\ndisable-log-stats: false\n",
    "model.yaml": "model: from-file\nmax-num-seqs: 16\n",
    "empty-list.yaml": "served-model-name: []\nport: 8001\n",
}
QUIRKS: list[tuple[str, list[str]]] = [
    ("serve", ["m", "--max-num-seqs", "64"]),
    ("serve", ["m", "--max_num_seqs=64"]),
    ("serve", ["m", "--max-num-seq", "64"]),  # unique prefix
    ("serve", ["m", "--max", "64"]),  # ambiguous prefix
    ("serve", ["m", "--no-enable-prefix-caching"]),
    ("serve", ["m", "--enable-prefix-caching"]),
    ("serve", ["m", "--no-enable-prefix"]),
    ("serve", ["m", "--enable-prefix-caching=false"]),
    ("serve", ["m", "--max-model-len", "32k"]),
    ("serve", ["m", "--max-model-len", "32K"]),
    ("serve", ["m", "--max-model-len=1.5k"]),
    ("serve", ["m", "--max-model-len", "1.5K"]),
    ("serve", ["m", "--max-model-len", "auto"]),
    ("serve", ["m", "--max-num-batched-tokens", "8k", "--max-num-seqs", "8k"]),
    ("serve", ["m", "--gpu-memory-utilization", "0.5", "--gpu-memory-utilization", "0.95"]),
    ("serve", ["m", "-tp", "4", "--pipeline-parallel-size=2", "-dp", "2"]),
    ("serve", ["m", "--tensor-parallel-size", "four"]),
    ("serve", ["m", "--dtype", "float17"]),
    ("serve", ["m", "--swap-space", "16"]),
    ("serve", ["m", "--bogus-flag", "1", "--max-num-seqs", "8"]),
    ("serve", ["m", "--compilation-config", '{"mode": 3}']),
    ("serve", ["m", "--compilation-config.mode", "3", "--compilation-config.cudagraph_capture_sizes+", "1,2"]),
    ("serve", ["m", "-O3"]),
    ("serve", ["m", "--compilation-config", '{"level": 3, "cudagraph_capture_sizes": [1, 2]}']),  # 0.33: no level
    ("serve", ["m", "--compilation-config.level", "3"]),
    ("serve", ["m", "-O.mode", "3"]),  # 0.8.5: ast.literal_eval(".mode") raises SyntaxError
    ("serve", ["m", "--compilation-config", "{'level': 3"]),
    ("serve", ["m", "--kv-transfer-config", '{"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}']),
    ("serve", ["m", "--kv-transfer-config", '{"kv_connector": "X", "kv_role": "kv_both", "kv_bogus": 1}']),
    ("serve", ["m", "--compilation-config", '{"mode": 3, "pass_config": {"fuse_allreduce_rms": true}}']),
    ("serve", ["m", "--hf-overrides", '{"max_position_embeddings": 1024}']),
    ("serve", ["m", "--served-model-name", "a", "b", "--quantization", "awq"]),
    ("serve", ["--model", "m", "--max-num-seqs", "8"]),
    ("serve", ["m", "--config", "{false.yaml}"]),
    ("serve", ["m", "--config", "{mixed.yaml}", "--tensor-parallel-size", "4"]),
    ("serve", ["m", "--config", "{no-flag.yaml}"]),
    ("serve", ["--config", "{model.yaml}"]),
    ("serve", ["m", "--config", "{empty-list.yaml}"]),
    ("serve", ["m", "--config={false.yaml}"]),
    ("api_server", ["--model", "m", "--config", "{false.yaml}"]),
    ("api_server", ["--model", "m", "--config", "{mixed.yaml}"]),
    ("api_server", ["m", "--max-num-seqs", "8"]),
    ("api_server", ["--model", "m", "--enable-prefix-caching", "--max-num-seqs=8", "--swap-space", "4"]),
]


# --- cases --------------------------------------------------------------------------------------


def _config_cases() -> Iterator[tuple[str, str, list[str]]]:
    for path in sorted((CORPORA / "vllm-configs").rglob("*.yaml")):
        from costwarden.adapters.vllm.detect import is_helm_values, is_vllm_config_file

        text = path.read_text(encoding="utf-8")
        for doc in yaml.safe_load_all(text):
            rel = str(path.relative_to(CORPORA))
            if is_vllm_config_file(doc):
                model = [] if isinstance(doc, dict) and "model" in doc else ["m"]
                yield f"{rel}#serve", "serve", [*model, "--config", str(path)]
                yield f"{rel}#api_server", "api_server", ["--model", "m", "--config", str(path)]
            elif is_helm_values(doc):
                from costwarden.adapters.vllm.detect import detect_in_helm_values

                for i, found in enumerate(detect_in_helm_values(doc, str(path), text=text)):
                    yield f"{rel}#modelSpec{i}", found.mode, list(found.argv)


def _benchmark_cases() -> Iterator[tuple[str, str, list[str]]]:
    """vLLM's CI benchmark configs: ``server_parameters`` become flags the way its
    ``json2args`` does (``_`` → ``-``, an empty string is a bare flag)."""
    for path in sorted((CORPORA / "vllm-configs" / "vllm").glob("*-tests.json")):
        for test in json.loads(path.read_text(encoding="utf-8")):
            params = test.get("server_parameters")
            if not isinstance(params, dict):
                continue
            argv = [str(params.get("model", "m"))]
            for key, value in params.items():
                if key != "model":
                    argv += ["--" + key.replace("_", "-")] + ([] if value == "" else [str(value)])
            yield f"{path.name}#{test['test_name']}", "serve", argv


def _manifest_cases() -> Iterator[tuple[str, str, list[str]]]:
    from costwarden.adapters.kubernetes import read_manifests, subjects_from_object
    from costwarden.adapters.vllm.detect import detect_in_resource

    roots = [CORPORA / "k8s-gpu-workloads", REPO / "policies"]
    for path in sorted(p for root in roots for p in root.rglob("*.yaml")):
        if "k8s-gpu-workloads" not in str(path) and "samples" not in path.parts:
            continue
        try:
            documents = read_manifests(path.read_text(encoding="utf-8"), str(path))
        except Exception:  # not a manifest (policy files, tests.yaml)
            continue
        for doc, line, pointer in documents:
            if "kind" not in doc:
                continue
            for resource in subjects_from_object(doc, file=str(path), line=line, pointer=pointer):
                for i, found in enumerate(detect_in_resource(resource)):
                    name = path.relative_to(CORPORA if CORPORA in path.parents else REPO)
                    yield f"{name}:{line}#{i}", found.mode, list(found.argv)


def collect_cases() -> list[tuple[str, str, list[str]]]:
    cases = [(f"quirk{i}", mode, argv) for i, (mode, argv) in enumerate(QUIRKS)]
    if CORPORA.is_dir():
        cases += list(_config_cases()) + list(_benchmark_cases()) + list(_manifest_cases())
    return cases


CASES = collect_cases()


# --- the oracle ---------------------------------------------------------------------------------


def _ready_versions() -> list[str]:
    return [v for v in available_versions() if (ORACLE / f"vllm-{v}" / ".ready").is_file()]


def _python() -> Path:
    return ORACLE / "venv" / "bin" / "python"


@pytest.fixture(scope="module")
def quirk_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vllm-quirks")
    for name, text in QUIRK_FILES.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def _materialise(argv: list[str], root: Path) -> list[str]:
    out = []
    for word in argv:
        for name in QUIRK_FILES:
            word = word.replace("{" + name + "}", str(root / name))
        out.append(word)
    return out


@pytest.fixture(scope="module")
def oracle(quirk_dir: Path) -> dict[str, dict[str, Any]]:
    """``{version: {case id: oracle result}}`` for every ready version (one process each)."""
    versions = _ready_versions()
    if not versions:
        if os.environ.get("CI"):
            pytest.fail(f"no vLLM oracle under {ORACLE}: run tests/conformance/prepare_vllm_oracle.sh")
        pytest.skip(f"no vLLM oracle under {ORACLE} (tests/conformance/prepare_vllm_oracle.sh builds it)")
    request = {"cases": [{"id": cid, "mode": mode, "argv": _materialise(argv, quirk_dir)}
                         for cid, mode, argv in CASES]}
    out: dict[str, dict[str, Any]] = {}
    for version in versions:
        env = {**os.environ, "PYTHONPATH": f"{ORACLE / f'vllm-{version}'}{os.pathsep}{REPO}",
               "VLLM_TARGET_DEVICE": "cpu", "PYTHONWARNINGS": "ignore"}
        proc = subprocess.run([str(_python()), str(DRIVER)], input=json.dumps(request), capture_output=True,
                              text=True, env=env, timeout=900, cwd=str(REPO), check=False)
        if proc.returncode != 0:
            pytest.fail(f"vLLM {version} oracle failed:\n{proc.stderr[-3000:]}")
        answer = json.loads(proc.stdout)
        assert answer["version"] == version
        out[version] = {r["id"]: r for r in answer["results"]}
    return out


# --- comparison ---------------------------------------------------------------------------------


def same(ours: Any, theirs: Any, loose: bool = False) -> bool:
    """Equal values. A config object (``{"$type": ...}``) matches the keys we hold, and inside it
    pydantic's coercions (``"1"`` → 1) are accepted: costwarden keeps the JSON as given."""
    if isinstance(theirs, dict) and "$type" in theirs:
        # Keys the object lacks are keys this vLLM's pydantic config ignores (see IGNORED).
        return isinstance(ours, dict) and all(same(v, theirs[k], True) for k, v in ours.items() if k in theirs)
    if isinstance(theirs, dict):
        return (isinstance(ours, dict) and ours.keys() == theirs.keys()
                and all(same(ours[k], theirs[k], loose) for k in ours))
    if isinstance(theirs, list):
        return (isinstance(ours, list) and len(ours) == len(theirs)
                and all(same(a, b, loose) for a, b in zip(ours, theirs, strict=True)))
    if loose and isinstance(ours, str) and not isinstance(theirs, str):
        return ours == str(theirs) or ours == json.dumps(theirs)
    if isinstance(theirs, bool) or isinstance(ours, bool):
        return ours is theirs
    return bool(ours == theirs)


def compare(ours: Resolution, theirs: dict[str, Any]) -> list[str]:
    """What differs, as readable lines (empty when in parity)."""
    refused = [d for d in ours.diagnostics if d.severity == "error"
               and d.code not in ("unknown-argument", "removed-argument")]
    if theirs["error"]:
        return [] if refused else [f"vLLM refuses it ({theirs['error']}); costwarden reports no error"]
    problems = [f"costwarden refuses it ({d.render()}); vLLM accepts it" for d in refused]
    if ours.unrecognized != theirs["unrecognized"]:
        problems.append(f"unrecognized: costwarden {ours.unrecognized} vs vLLM {theirs['unrecognized']}")
    for dest, value in theirs["args"].items():
        if isinstance(value, dict) and "$type" in value and isinstance(ours.args.get(dest), dict):
            IGNORED.update(f"{dest}.{k}" for k in ours.args[dest] if k not in value)
        if dest not in ours.args:
            problems.append(f"{dest}: missing (vLLM: {value!r})")
        elif not same(ours.args[dest], value):
            problems.append(f"{dest}: costwarden {ours.args[dest]!r} vs vLLM {value!r}")
    problems += [f"{dest}: not a vLLM dest" for dest in ours.args.keys() - theirs["args"].keys()]
    return problems


VERSIONS = available_versions()
# Documented exception: keys of a JSON config argument that the version's config class does not
# have, where that vLLM's pydantic silently drops them (e.g. compilation-config "mode" before 0.12,
# nested pass_config keys); costwarden keeps the JSON as given. Versions whose config classes refuse
# unknown top-level keys (0.33) list the keys in the table, and those refusals are compared.
IGNORED: set[str] = set()


@pytest.mark.parametrize("version", VERSIONS)
def test_parity(version: str, oracle: dict[str, dict[str, Any]], quirk_dir: Path) -> None:
    if version not in oracle:
        if os.environ.get("CI") and version == VERSIONS[-1]:
            pytest.fail(f"the latest release's oracle (vLLM {version}) is not ready")
        pytest.skip(f"vLLM {version} does not import beside the available torch (see prepare_vllm_oracle.sh)")
    failures: dict[str, list[str]] = {}
    checked = 0
    for cid, mode, argv in CASES:
        ours = parse_argv(_materialise(argv, quirk_dir), version, mode=mode)
        problems = compare(ours, oracle[version][cid])
        checked += len(oracle[version][cid]["args"] or {})
        if problems:
            failures[f"{cid} ({mode} {' '.join(argv)[:120]})"] = problems
    report = "\n".join(f"{case}:\n  " + "\n  ".join(p) for case, p in failures.items())
    assert not failures, f"vLLM {version}: {len(failures)} of {len(CASES)} cases differ\n{report}"
    assert checked > 0
    print(f"vLLM {version}: {len(CASES)} cases, {checked} argument values in parity; config keys vLLM "
          f"ignores: {sorted(IGNORED)}", file=sys.stderr)
    IGNORED.clear()


def test_cases_cover_the_corpora() -> None:
    ids = [cid for cid, _, _ in CASES]
    assert any("recipes/" in i for i in ids) and any("production-stack/" in i for i in ids)
    assert any("k8s-gpu-workloads" in i or "gke-samples" in i for i in ids)
    assert len(ids) >= 60
