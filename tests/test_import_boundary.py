"""Import boundaries: the engine imports no SDK, and ``import costwarden`` alone stays light.

Each check runs in a fresh interpreter so modules other tests imported do not count.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SDKS = (
    "boto3",
    "botocore",
    "kubernetes",
    "google",
    "anthropic",
    "openai",
    "fastapi",
    "starlette",
    "redis",
    "vllm",
    "psycopg",
    "uvicorn",
)


def run_python(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    proc = subprocess.run(
        [sys.executable, "-X", "utf8", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_engine_imports_no_sdk() -> None:
    result = run_python(
        f"""
        import json, sys
        from datetime import datetime, timezone

        import costwarden.engine
        from costwarden.adapters.ledger.memory import MemoryLedger
        from costwarden.api import builtin_library_path
        from costwarden.engine.compile import compile_documents
        from costwarden.engine.loader import load_paths
        from costwarden.engine.subjects import subject_from_dict

        loaded = load_paths(builtin_library_path())
        assert not loaded.diagnostics, loaded.diagnostics
        policies = compile_documents(loaded.documents, pricer=None)
        subjects = [
            {{"type": "resource", "provider": "kubernetes", "kind": "Job", "namespace": "ml",
              "workload": {{"class": "batch", "gpus": 8, "gpu_type": "H100"}}}},
            {{"type": "llm_call", "provider": "anthropic", "model": "claude-sonnet-4-5", "user": "alice",
              "feature": "classify", "estimated_cost_usd": 0.01,
              "request": {{"max_tokens": 9000, "cacheable_prefix_tokens": 5000}}}},
            {{"type": "serving_config", "model": "meta-llama/Llama-3.1-70B-Instruct", "gpus": 8,
              "gpu_type": "H100", "args": {{"tensor_parallel_size": 4}}}},
        ]
        now = datetime(2026, 11, 30, tzinfo=timezone.utc)
        results = 0
        for data in subjects:
            for surface in ("admission", "ci", "runtime", "audit"):
                decision = policies.evaluate(subject_from_dict(data), surface=surface, now=now,
                                             ledger=MemoryLedger())
                decision.to_json()
                results += len(decision.results)
        sdks = {list(SDKS)!r}
        loaded_sdks = sorted(m for m in sys.modules if m.split(".")[0] in sdks)
        print(json.dumps({{"results": results, "policies": len(policies), "sdks": loaded_sdks}}))
        """
    )
    assert result["sdks"] == []
    assert isinstance(result["results"], int)
    assert result["results"] > 10
    assert result["policies"] == 10


def test_import_costwarden_is_lazy() -> None:
    result = run_python(
        """
        import json, sys
        import costwarden
        version = costwarden.__version__
        heavy = ("pydantic", "yaml", "cel", "genai_prices", "costwarden.engine", "typer", "rich")
        print(json.dumps({"version": version, "loaded": sorted(m for m in heavy if m in sys.modules)}))
        """
    )
    assert result["loaded"] == []
    assert result["version"]


def test_public_names_load_on_first_use() -> None:
    result = run_python(
        """
        import json, sys
        import costwarden
        before = "costwarden.engine.subjects" in sys.modules
        cls = costwarden.Resource
        print(json.dumps({"before": before, "after": "costwarden.engine.subjects" in sys.modules,
                          "name": cls.__name__, "all": costwarden.__all__}))
        """
    )
    assert result == {
        "before": False,
        "after": True,
        "name": "Resource",
        "all": result["all"],
    }
    assert "load_policies" in result["all"]  # type: ignore[operator]
