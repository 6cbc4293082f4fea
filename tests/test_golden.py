"""Golden hashes of estimate arrays for a fixed set of runs: every refactor must keep these bits.

The hashes were taken before the package was restructured (issue 8); a change of any of
them means a change of results, not of layout.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import zarr

import streamcausal as sc

A6 = sc.create_connectivity(6)
A150 = sc.create_connectivity(150, random_state=3)


def digest(result) -> str:
    """sha256 over the moments and the derived estimates, in a fixed order."""
    h = hashlib.sha256()
    arrays = result.moments.to_arrays()
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    for name in ("correlation", "effect", "stderr"):
        h.update(name.encode())
        h.update(np.ascontiguousarray(getattr(result, name)).tobytes())
    return h.hexdigest()[:16]


def trajectory_digest(group) -> str:
    h = hashlib.sha256()
    for name in ("activity", "stimulation", "clamped"):
        h.update(np.ascontiguousarray(group[name][...]).tobytes())
    return h.hexdigest()[:16]


GOLDEN = {
    "tutorial_n6": "a7e9b939f9c04459",
    "blas_n150": "2fdf28239a1bdbcb",
    "stimulated": "91d45461639f365c",
    "observation": "0e5af5402a69a422",
    "legacy": "33f4cfe4f13f26eb",
    "trajectory_run": "a184ebada671d7f5",
    "trajectory_arrays": "09afff0f105f4256",
    "resumed": "596087de014344a0",
    "two_seeds": "c2716bba0daa924f/7eacfb09766a5a5b/0dd53e13b87ff06a",
    "estimate_zarr": "3d7e497ceaa70f95",
}


def store_options(store, **options):
    return {"store": sc.Store(store, **options)}


def seed_options(seeds, client):
    return {"seed": sc.Seeds(seeds, client=client)}


def check(name, value):
    assert GOLDEN[name] == value, f"{name}: golden {GOLDEN[name]!r}, now {value!r}"


def test_tutorial_design_n6():
    check("tutorial_n6", digest(sc.run(A6, 300_001, seed=7, chunk_steps=65_536)))


def test_blas_path_n150():
    check("blas_n150", digest(sc.run(A150, 20_000, seed=1, chunk_steps=8192)))


def test_clamp_stimulated():
    design = sc.Perturbation(every=3, p=0.3, clamp="stimulated")
    check("stimulated", digest(sc.run(A6, 50_000, design=design, seed=2, chunk_steps=7000)))


def test_observation():
    check("observation", digest(sc.run(A6, 50_000, design=sc.Observation(), seed=3, chunk_steps=9000)))


def test_legacy_rng():
    check("legacy", digest(sc.run(A6, 20_001, seed=4, chunk_steps=6000, rng="legacy")))


def test_saved_trajectory(tmp_path):
    store = tmp_path / "run.zarr"
    result = sc.run(A6, 30_001, seed=5, chunk_steps=4000, **store_options(store, save_trajectory=True))
    check("trajectory_run", digest(result))
    check("trajectory_arrays", trajectory_digest(zarr.open_group(store, mode="r")["seed_5"]))


def test_resumed_run(tmp_path):
    store = tmp_path / "run.zarr"
    calls = []

    def interrupt(event):
        calls.append(event)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sc.run(A6, 40_000, seed=6, chunk_steps=5000, progress=interrupt,
               **store_options(store, checkpoint_seconds=0))
    result = sc.run(A6, 40_000, seed=6, chunk_steps=5000, **store_options(store, mode="r+"))
    assert result.parameters["resumed_from_chunk"] == 3
    check("resumed", digest(result))


def test_two_seeds_on_a_cluster(cluster_client):
    result = sc.run(A6, 20_000, chunk_steps=6000, **seed_options([11, 12], cluster_client))
    check("two_seeds", digest(result) + "/" + "/".join(digest(r) for r in result.per_seed.values()))


def test_estimate_on_zarr(tmp_path):
    rng = np.random.default_rng(0)
    stimulation = rng.integers(0, 2, size=(20_000, 5), dtype=np.uint8)
    activity = np.roll(stimulation.astype(np.float32), 1, axis=0) + rng.normal(size=(20_000, 5)).astype(np.float32)
    group = zarr.open_group(tmp_path / "rec.zarr", mode="w")
    group.create_array("activity", data=activity, chunks=(3000, 5))
    group.create_array("stimulation", data=stimulation, chunks=(3000, 5))
    result = sc.estimate(group["activity"], group["stimulation"], steps=slice(0, None, 2), chunk_steps=4000)
    check("estimate_zarr", digest(result))
