"""Faults met at the command line's edges: misnamed arrays, unfinished runs, stores of the other kind, counts."""

import argparse

import pytest
import zarr

import streamcausal as sc
from streamcausal import cli
from streamcausal.cli import options


def _one_line_error(capsys, argv, *words):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for word in words:
        assert word in err[0]
    return err[0]


@pytest.fixture(scope="module")
def run_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "run.zarr"
    sc.run(sc.create_connectivity(5), 4000, chunk_steps=1000, store=sc.Store(path, save_trajectory=True))
    return path


def test_missing_named_arrays_are_named(run_store, capsys):
    _one_line_error(capsys, ["estimate", str(run_store), "--activity", "nope"], "--activity 'nope'", "no such array")
    _one_line_error(capsys, ["estimate", str(run_store), "--activity", "seed_0/activity", "--stimulation", "laser"],
                    "--stimulation 'laser'")
    _one_line_error(capsys, ["estimate", str(run_store), "--activity", "seed_0/activity",
                             "--stimulation", "seed_0/stimulation", "--steps", "on"], "--steps 'on'")


def test_estimate_refuses_an_unfinished_run(tmp_path, capsys):
    path = tmp_path / "unfinished.zarr"

    def stop_after_two_chunks(event):
        if event.steps_done >= 2000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sc.run(sc.create_connectivity(5), 10_000, chunk_steps=1000, progress=stop_after_two_chunks,
               store=sc.Store(path, save_trajectory=True, checkpoint_seconds=0))
    line = _one_line_error(capsys, ["estimate", str(path)], "unfinished", "of 10,000 steps", "--resume")
    assert "seed 0 has" in line


def test_estimate_output_never_replaces_a_run_store(run_store, tmp_path, capsys):
    other = tmp_path / "other.zarr"
    sc.run(sc.create_connectivity(5), 2000, store=other)
    before = sorted(path.name for path in other.iterdir())
    _one_line_error(capsys, ["estimate", str(run_store), "--output", str(other), "--overwrite", "--no-progress"],
                    "holds a run", "--output")
    assert sorted(path.name for path in other.iterdir()) == before
    assert zarr.open_group(other, mode="r").attrs["streamcausal"]["kind"] != "estimate"


@pytest.mark.parametrize("text, value", [("1e30", 10**30), ("5_000", 5000), ("5e3", 5000), ("12.0", 12),
                                         ("123456789012345678901", 123456789012345678901)])
def test_counts_parse_exactly(text, value):
    assert options.count(1)(text) == value


@pytest.mark.parametrize("text", ["1.5", "nan", "inf", "-inf", "1e400", "0x10", "", "1e-3", "abc", "-1"])
def test_counts_refuse_non_integers(text):
    with pytest.raises(argparse.ArgumentTypeError, match="must be an integer"):
        options.count(1)(text)


def test_counts_refuse_above_the_maximum():
    with pytest.raises(argparse.ArgumentTypeError, match=r"in \[2, "):
        options.count(2, maximum=2**53)("1e16")
    assert options.count(2, maximum=2**53)(str(2**53)) == 2**53
