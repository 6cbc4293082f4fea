"""Shared fixtures: one LocalCluster for the tests that need Dask workers; test markers."""

from __future__ import annotations

import pytest


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
