"""Fixtures shared by every test: compiling inline policies, a fake pricer, the built-in library,
and this run's namespaces on the machine's Redis and PostgreSQL (``ledger_backends.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from policy_support import CompilePolicies, FakePricer, compile_text

from costwarden.engine.evaluate import PolicySet


@pytest.fixture(scope="session")
def compile_policies() -> CompilePolicies:
    """``compile_policies(yaml_text, ..., pricer=None)`` → a PolicySet (or PolicyError)."""
    return compile_text


@pytest.fixture
def fake_pricer() -> FakePricer:
    return FakePricer()


@pytest.fixture(scope="session")
def builtin_policies() -> PolicySet:
    """The built-in policy library with the default (genai-prices) pricer, loaded once."""
    import costwarden

    return costwarden.load_policies()


@pytest.fixture(scope="session")
def redis_run() -> Iterator[str]:
    """This run's key prefix on the shared Redis (its keys are deleted at the end)."""
    from ledger_backends import redis_namespace

    with redis_namespace() as run:
        yield run


@pytest.fixture(scope="session")
def postgres_db() -> Iterator[str]:
    """The URL of this run's database on the shared PostgreSQL (dropped at the end)."""
    from ledger_backends import postgres_database

    with postgres_database() as url:
        yield url
