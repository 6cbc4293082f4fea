"""Shared fixtures: one LocalCluster for the tests that need Dask workers; test markers; hypothesis profiles."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# Property-based tests (tests/test_fuzz.py) run the "ci" profile: few examples, the same ones
# every run (derandomized), no example database written into the checkout. Their copies
# marked slow run the "slow" profile: many more, fresh random ones each run. Choose another
# for every test with HYPOTHESIS_PROFILE=slow. No deadline: a first call compiles Numba code.
_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=30, derandomize=True, **_COMMON)
settings.register_profile("slow", max_examples=400, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def cluster():
    """A real two-process LocalCluster, started once for the whole session."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local:
        yield local


@pytest.fixture
def cluster_client(cluster):
    from distributed import Client

    with Client(cluster) as client:
        yield client
