"""streamcausal.report: PNG figures from a run store, an estimates store or a Result; the store reads it uses."""

import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import zarr

import streamcausal as sc
from streamcausal.io.store import (
    StoreError,
    StoreReader,
    check_new_store,
    check_run_location,
    is_run_store,
    write_estimates,
)
from streamcausal.report import MERGED_LABEL, ReportNote, report_data, write_report

A = sc.create_connectivity(6)
WITH_A = ["true_vs_estimated.png", "true_vs_estimated_effect.png", "connectivity_graph.png",
          "convergence.png", "edge_distributions.png"]
WITHOUT_A = ["estimate_correlation.png", "estimate_effect.png", "connectivity_graph.png", "convergence.png"]
REPO = Path(__file__).resolve().parents[1]


def _assert_pngs(paths, directory, names):
    assert [Path(p) for p in paths] == [Path(directory) / name for name in names]
    for path in paths:
        image = matplotlib.image.imread(path)  # a real PNG, read back
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, path
        assert image[..., :3].std() > 0, path  # not a blank canvas


@pytest.fixture(scope="module")
def two_seed_store(tmp_path_factory, cluster):
    from distributed import Client

    path = tmp_path_factory.mktemp("report") / "two.zarr"
    with Client(cluster) as client:
        result = sc.run(A, 40_000, seed=sc.Seeds(2, client=client), chunk_steps=4096,
                        store=sc.Store(str(path), checkpoint_seconds=0))
    return path, result


def test_report_of_a_store_path(two_seed_store, tmp_path):
    path, result = two_seed_store
    written = sc.report(path, tmp_path / "out")
    _assert_pngs(written, tmp_path / "out", WITH_A)
    data = report_data(str(path))
    assert set(data.convergence) == {"seed 0", "seed 1", MERGED_LABEL}
    assert data.convergence[MERGED_LABEL][-1]["samples"] == result.n_samples
    assert data.convergence[MERGED_LABEL] == result.convergence
    np.testing.assert_array_equal(data.effect, result.effect)
    np.testing.assert_array_equal(data.A, A)
    assert data.title == "6 neurons, perturbation every 2 (p=0.5, clamp all), 2 seeds x 40,000 steps"
    assert data.notes == []


def test_report_of_a_zarr_group_and_a_named_group(two_seed_store, tmp_path):
    path, result = two_seed_store
    group = zarr.open_group(str(path), mode="r")
    data = report_data(group, estimates="seed_1/estimates")
    np.testing.assert_array_equal(data.effect, result.per_seed[1].effect)
    with pytest.raises(StoreError, match="no estimates group 'nope'") as refused:
        report_data(group, estimates="nope")
    assert refused.value.argument == "estimates"


def test_report_of_a_result(tmp_path):
    result = sc.run(A, 20_000, seed=1, chunk_steps=4096)
    written = sc.report(result, tmp_path / "with", A=A)
    _assert_pngs(written, tmp_path / "with", WITH_A)
    # A Result carries no A: the estimates alone, and the convergence recorded by run().
    written = sc.report(result, tmp_path / "without")
    _assert_pngs(written, tmp_path / "without", WITHOUT_A)
    data = report_data(result, A=A)
    assert list(data.convergence) == ["seed 1"]
    assert data.convergence["seed 1"] == result.convergence
    with pytest.raises(ValueError, match="A must have the estimates' shape"):
        report_data(result, A=np.eye(3))
    with pytest.raises(TypeError, match="estimates"):
        report_data(result, estimates="estimates")


def test_report_of_an_estimate_result_has_no_convergence(tmp_path):
    trajectory = sc.simulate(A, 4000, seed=0)
    result = sc.estimate(trajectory.activity, trajectory.stimulation, steps=trajectory.clamped)
    written = write_report(report_data(result, A=A), tmp_path)
    assert sorted(p.name for p in written) == sorted(set(WITH_A) - {"convergence.png"})


def test_unfinished_run_is_reported_from_checkpoints(two_seed_store, tmp_path):
    path, result = two_seed_store
    copy = tmp_path / "copy.zarr"
    shutil.copytree(path, copy)
    for name in ("estimates", "seed_0/estimates", "seed_1/estimates"):
        shutil.rmtree(copy / name)
    with pytest.warns(ReportNote, match="unfinished"):
        written = sc.report(copy, tmp_path / "out")
    assert [p.name for p in written] == [n for n in WITH_A]
    data = report_data(copy)
    assert data.title.endswith("(unfinished)")
    assert set(data.convergence) == {"seed 0", "seed 1"}  # no merged curve without merged estimates
    np.testing.assert_allclose(data.effect, result.effect, rtol=0, atol=1e-12)


def test_report_errors(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        sc.report(tmp_path / "missing.zarr", tmp_path / "out")
    foreign = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w")
    foreign.create_array("x", shape=(3,), dtype="float64")
    with pytest.raises(ValueError, match="holds no estimates"):
        sc.report(tmp_path / "foreign.zarr", tmp_path / "out")
    (tmp_path / "file").write_text("x")
    result = sc.run(A, 1000, seed=0)
    with pytest.raises(ValueError, match="out_dir must be a directory"):
        sc.report(result, tmp_path / "file")


def test_import_loads_neither_matplotlib_nor_zarr():
    code = ("import sys, streamcausal, streamcausal.report; "
            "print(callable(streamcausal.report), 'matplotlib' in sys.modules, 'zarr' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["True", "False", "False"]


# ---------------------------------------------------------------------------- store reads and writes


def test_store_reader_and_checks(two_seed_store, tmp_path):
    path, result = two_seed_store
    reader = StoreReader.open_run(path)
    assert reader.is_run and reader.seeds == [0, 1] and reader.parameters["n_steps"] == 40_000
    np.testing.assert_array_equal(reader.connectivity(), A)
    assert reader.estimates().path == "estimates" and reader.estimates().count == result.n_samples
    assert reader.checkpoint(0)["next_chunk"] > 0 and reader.checkpoint(7) is None
    assert not reader.has_trajectory(0)
    assert is_run_store(path) and not is_run_store(tmp_path / "none.zarr")
    assert check_run_location(path, "r+")["parameters"]["seeds"] == [0, 1]
    assert check_run_location(tmp_path / "new.zarr", "w-") is None
    with pytest.raises(StoreError, match="already holds a run") as refused:
        check_run_location(path, "w-")
    assert refused.value.parameter == "mode"
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("x")
    with pytest.raises(StoreError, match="not a streamcausal run store"):
        StoreReader.open_run(zarr.open_group(str(tmp_path / "plain.zarr"), mode="w"))
    with pytest.raises(StoreError, match="not a Zarr store"):
        StoreReader.open(tmp_path / "notes")
    with pytest.raises(StoreError, match="is a file"):
        StoreReader.open(tmp_path / "notes" / "keep.txt")


def test_check_new_store(two_seed_store, tmp_path):
    path, _ = two_seed_store
    check_new_store(tmp_path / "absent.zarr")
    with pytest.raises(StoreError, match="already exists") as refused:
        check_new_store(path)
    assert refused.value.parameter == "mode"
    check_new_store(path, replace=True)
    with pytest.raises(StoreError, match="source store itself"):
        check_new_store(path, replace=True, source=str(path))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("x")
    with pytest.raises(StoreError, match="not a Zarr store"):
        check_new_store(tmp_path / "notes", replace=True)
    with pytest.raises(StoreError, match="is a file"):
        check_new_store(tmp_path / "notes" / "keep.txt", replace=True)


def test_write_estimates_new_store_and_into_a_group(tmp_path):
    result = sc.run(A, 10_000, seed=2)
    target = tmp_path / "est.zarr"
    write_estimates(target, result.moments, attrs={"lag": 1}, connectivity=A, new=True)
    reader = StoreReader.open(target)
    found = reader.estimates()
    assert found.path == "" and found.count == result.n_samples
    np.testing.assert_array_equal(found.effect, result.effect)
    np.testing.assert_array_equal(found.correlation, result.correlation)
    np.testing.assert_array_equal(reader.connectivity(), A)
    assert reader.attrs["lag"] == 1 and "orientation" in reader.attrs
    assert reader.group["undefined"].metadata.dimension_names == ("target", "source")
    write_estimates(target, result.moments, path="seed_2/estimates_lag1")
    np.testing.assert_array_equal(reader.estimates("seed_2/estimates_lag1").stderr, result.stderr)
