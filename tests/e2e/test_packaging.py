"""The wheel carries every data file the package reads at run time (a non-editable install)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_contains_library_catalog_and_vllm_tables(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    [wheel] = tmp_path.glob("costwarden-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "costwarden/engine/data/catalog.yaml" in names
    assert "costwarden/py.typed" in names
    tables = {n for n in names if n.startswith("costwarden/adapters/vllm/data/vllm-") and n.endswith(".json")}
    shipped = {
        f"costwarden/adapters/vllm/data/{p.name}" for p in (ROOT / "costwarden/adapters/vllm/data").glob("*.json")
    }
    assert tables == shipped and len(tables) >= 3
    library = {n for n in names if n.startswith("costwarden/library/")}
    for policy in (ROOT / "policies").rglob("tests.yaml"):
        folder = policy.parent.relative_to(ROOT / "policies")
        assert f"costwarden/library/{folder}/{policy.parent.name}.yaml" in library
        assert f"costwarden/library/{folder}/tests.yaml" in library
