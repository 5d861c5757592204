"""Oracle driver for the vLLM parity tests: runs *inside the oracle environment* (a Python that
can import vLLM; see prepare_vllm_oracle.sh), never under pytest.

stdin:  {"cases": [{"id": ..., "mode": "serve" | "api_server", "argv": [...]}, ...]}
stdout: {"version": "...", "results": [{"id", "args", "unrecognized", "error"}, ...]}

The repository root must be on PYTHONPATH: the resolution itself is
``costwarden.adapters.vllm.exact.resolve`` (vLLM's own parser, built as ``vllm serve`` builds it).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings


def main() -> int:
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    request = json.load(sys.stdin)
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # vLLM may print while importing; keep stdout for the answer
    from costwarden.adapters.vllm.exact import resolve

    results = []
    version = None
    for case in request["cases"]:
        out = resolve(list(case["argv"]), case.get("mode", "serve"))
        version = out.pop("version")
        results.append({"id": case["id"], **out})
    json.dump({"version": version, "results": results}, real_stdout)
    real_stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
