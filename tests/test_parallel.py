"""Seeds across a real dask.distributed LocalCluster: determinism, retries, resume, convergence."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster

import streamcausal as sc

A6 = sc.create_connectivity(6)
RUN = dict(chunk_steps=2000)
N_STEPS = 20_001


def on(client, seeds=(3, 1, 2)):
    return sc.Seeds(list(seeds), client=client)


def stored(location, **options):
    return sc.Store(location, **{"checkpoint_seconds": 0, **options})


def moments_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a.to_arrays().values(), b.to_arrays().values()))


@pytest.fixture
def client(cluster_client):
    return cluster_client


@pytest.fixture(scope="module")
def serial():
    """The same seeds run one by one in this process and merged in order."""
    parts = [sc.run(A6, N_STEPS, seed=s, **RUN) for s in (3, 1, 2)]
    merged = parts[0].moments.merge(parts[1].moments).merge(parts[2].moments)
    return parts, merged


def test_merged_result_is_bit_identical_across_worker_counts(client, serial):
    parts, merged = serial
    on_two = sc.run(A6, N_STEPS, seed=on(client), **RUN)
    assert moments_equal(on_two.moments, merged)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as one:
            on_one = sc.run(A6, N_STEPS, seed=on(one), **RUN)
    assert moments_equal(on_one.moments, merged)
    via_address = sc.run(A6, N_STEPS, seed=on(client.scheduler.address), **RUN)
    assert moments_equal(via_address.moments, merged)
    assert list(on_two.per_seed) == [3, 1, 2]
    for part, seed in zip(parts, (3, 1, 2)):
        assert moments_equal(on_two.per_seed[seed].moments, part.moments)
    assert on_two.n_steps == 3 * N_STEPS and on_two.n_samples == 3 * parts[0].n_samples


def test_seed_to_seed_standard_error_agrees_with_moment_based_one(client):
    result = sc.run(A6, 200_001, seed=sc.Seeds(4, client=client), chunk_steps=50_000)
    between = result.stderr_between_seeds
    assert between.shape == (6, 6) and np.all(np.isfinite(between))
    ratio = np.nanmean(between) / np.nanmean(result.stderr)
    assert 0.6 < ratio < 1.4  # two independent estimates of the same standard error
    assert np.all(np.isnan(sc.run(A6, 2001).stderr_between_seeds))


def test_progress_reports_every_seed_and_ends_at_total(client):
    calls = []
    sc.run(A6, N_STEPS, seed=on(client, [0, 1]), progress=calls.append, **RUN)
    assert calls[-1].steps_done == calls[-1].steps_total == 2 * N_STEPS
    assert {event.seed for event in calls} == {0, 1}
    assert all(event.samples > 0 and event.mean_se > 0 for event in calls)
    plain = []
    sc.run(A6, N_STEPS, seed=0, progress=lambda event: plain.append(event.steps_done), **RUN)
    assert plain == list(range(2000, N_STEPS, 2000)) + [N_STEPS]


def test_each_seed_writes_its_own_part_of_the_store(client, serial, tmp_path):
    parts, merged = serial
    path = tmp_path / "seeds.zarr"
    result = sc.run(A6, N_STEPS, seed=on(client), store=stored(path, save_trajectory=True), **RUN)
    assert moments_equal(result.moments, merged)
    group = zarr.open_group(path, mode="r")
    for part, seed in zip(parts, (3, 1, 2)):
        np.testing.assert_array_equal(group[f"seed_{seed}/estimates/correlation"][...], part.correlation)
        trajectory = sc.simulate(A6, N_STEPS, seed=seed, chunk_steps=2000)
        np.testing.assert_allclose(group[f"seed_{seed}/activity"][...], trajectory.activity, atol=6e-8)
    np.testing.assert_array_equal(group["estimates/effect"][...], result.effect)
    assert group.attrs["parameters"]["seeds"] == [3, 1, 2]
    again = sc.run(A6, N_STEPS, seed=on(client), store=stored(path, save_trajectory=True, mode="r+"),
                   **RUN)
    assert moments_equal(again.moments, merged)


CHILD = textwrap.dedent(
    """
    import sys, time
    import streamcausal as sc
    if __name__ == "__main__":
        sc.run(sc.create_connectivity(6), 400_001, seed=sc.Seeds([3, 1, 2], workers=2), chunk_steps=2000,
               store=sc.Store(sys.argv[1], checkpoint_seconds=0),
               progress=lambda event: print(event.steps_done, flush=True))
    """
)


@pytest.mark.subprocess
@pytest.mark.slow
def test_killed_multi_seed_run_resumes_each_seed(tmp_path):
    path = tmp_path / "killed.zarr"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    for line in child.stdout:
        if int(line) > 300_000:  # several chunks of every seed are checkpointed by now
            break
    os.killpg(child.pid, signal.SIGKILL)  # the driver and its workers, as a power cut would
    child.wait(timeout=30)
    time.sleep(0.5)
    resumed = sc.run(A6, 400_001, seed=sc.Seeds([3, 1, 2], workers=2), chunk_steps=2000,
                     store=stored(path, mode="r+"))
    assert any(r.parameters["resumed_from_chunk"] > 0 for r in resumed.per_seed.values())
    fresh = [sc.run(A6, 400_001, seed=s, chunk_steps=2000) for s in (3, 1, 2)]
    merged = fresh[0].moments.merge(fresh[1].moments).merge(fresh[2].moments)
    assert moments_equal(resumed.moments, merged)


def test_convergence_marks_double_and_merge():
    result = sc.run(A6, 100_001, chunk_steps=1000)
    samples = [point["samples"] for point in result.convergence]
    assert samples == sorted(samples) and samples[-1] == result.n_samples
    for earlier, later in zip(samples[:-2], samples[1:-1]):
        power = 1 << int(earlier).bit_length()  # the next power of two after the earlier mark
        assert earlier < power <= later < power + 500  # the first chunk end reaching it
    scores = [point["score"] for point in result.convergence]
    assert scores[-1] > 0.99 and scores[-1] > scores[2]
    se = [point["mean_se"] for point in result.convergence[3:]]
    assert all(b < a for a, b in zip(se, se[1:]))


def test_stopping_rule_stops_at_target_and_reports_steps(tmp_path):
    result = sc.run(A6, 10_000_001, chunk_steps=10_000, target_se=0.004)
    assert result.n_steps < 10_000_001
    assert result.convergence[-1]["mean_se"] <= 0.004
    assert np.nanmean(result.stderr) <= 0.004
    longer = sc.run(A6, result.n_steps - 10_000, chunk_steps=10_000)
    assert np.nanmean(longer.stderr) > 0.004  # it stopped at the first chunk that reached the target
    path = tmp_path / "stop.zarr"
    stored = sc.run(A6, 10_000_001, chunk_steps=10_000, target_se=0.004, store=path)
    again = sc.run(A6, 10_000_001, chunk_steps=10_000, target_se=0.004, store=sc.Store(path, mode="r+"))
    assert again.n_steps == stored.n_steps == result.n_steps
    assert zarr.open_group(path, mode="r").attrs["steps_done"] == {"0": result.n_steps}


def test_bad_seed_arguments_are_named():
    with pytest.raises(ValueError, match="seeds must be distinct, got \\[1, 1\\]"):
        sc.Seeds([1, 1])
    with pytest.raises(ValueError, match="seeds must not be empty"):
        sc.Seeds([])
    with pytest.raises(ValueError, match="seeds must be >= 0, got -1"):
        sc.Seeds([-1])
    with pytest.raises(TypeError, match="seeds must be a count or a sequence of integers, got 'ab'"):
        sc.Seeds("ab")
    with pytest.raises(ValueError, match="seeds must be >= 1, got 0"):
        sc.Seeds(0)
    with pytest.raises(ValueError, match="workers applies only when streamcausal starts the cluster"):
        sc.Seeds(2, client="tcp://127.0.0.1:9", workers=2)
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        sc.Seeds(2, workers=0)
    assert sc.Seeds(range(5, 8)).seeds == (5, 6, 7)
    with pytest.raises(ValueError, match="target_se must be > 0, got 0.0"):
        sc.run(A6, 100, target_se=0.0)
    with pytest.raises(TypeError, match="client must be None, a dask.distributed.Client or a scheduler address"):
        sc.run(A6, 100, seed=sc.Seeds(2, client=3.5))
    with pytest.raises(ValueError, match="client: cannot connect to the scheduler at 'tcp://127.0.0.1:9'"):
        sc.run(A6, 100, seed=sc.Seeds(2, client="tcp://127.0.0.1:9"))
