"""Fixtures for the adapter tests: the shared corpora of real recorded payloads."""

from __future__ import annotations

from pathlib import Path

import pytest

CORPORA = Path(__file__).resolve().parents[3] / ".." / "shared" / "corpora"


@pytest.fixture(scope="session")
def llm_corpus() -> Path:
    """``../shared/corpora/llm-requests`` beside the repository; skips when it is not checked out."""
    root = CORPORA / "llm-requests"
    if not root.is_dir():
        pytest.skip(f"shared corpora not present at {root.resolve()} (they live beside the repository)")
    return root
