"""The command line: run, estimate, report and tutorial; one-line user errors; Ctrl-C."""

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import zarr

import streamcausal
from streamcausal import cli
from streamcausal.cli import display, options
from streamcausal.progress import Progress

FIGURES = [
    "connectivity.png",
    "activity.png",
    "standard_vs_perturbed.png",
    "true_vs_estimated_neuron1.png",
    "true_vs_estimated_all.png",
    "summary.png",
]
REPO = Path(__file__).resolve().parents[1]


def test_tutorial_prints_course_numbers_and_writes_figures(tmp_path, capsys):
    out = tmp_path / "figs" / "nested"
    assert cli.main(["tutorial", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "0.9907195190159408" in captured.out
    assert "0.98759340437835" in captured.out
    lines = captured.out.splitlines()
    assert any(line.startswith("two-neuron difference in means") for line in lines)
    assert any("A[:, 1]" in line for line in lines)
    for name in FIGURES:
        path = out / name
        assert path.stat().st_size > 0
        assert matplotlib.image.imread(path).ndim == 3
        assert str(path) in captured.out


@pytest.mark.subprocess
def test_tutorial_subprocess(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "streamcausal", "tutorial", "--out", str(tmp_path),
         "--neurons", "4", "--steps", "2e2"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "0.9907195190159408" in result.stdout
    assert (tmp_path / "summary.png").stat().st_size > 0


@pytest.mark.parametrize(
    "argv, words",
    [
        (["tutorial", "--out", "X", "--neurons", "0"], "--neurons"),
        (["tutorial", "--out", "X", "--neurons", "abc"], "'abc'"),
        (["tutorial", "--out", "X", "--steps", "5.5"], "--steps"),
        (["tutorial", "--out", "X", "--selected-neuron", "6"], "--selected-neuron"),
        (["tutorial"], "--out"),
        (["frobnicate"], "frobnicate"),
        ([], "COMMAND"),
    ],
)
def test_user_errors_are_one_line_exit_2(argv, words, tmp_path, capsys):
    argv = [str(tmp_path / "x") if a == "X" else a for a in argv]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    err_lines = captured.err.strip().splitlines()
    assert len(err_lines) == 1
    assert err_lines[0].startswith("streamcausal: error: ")
    assert words in err_lines[0]
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_out_is_a_file(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert cli.main(["tutorial", "--out", str(target), "--steps", "10"]) == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.subprocess
def test_subprocess_user_error_has_no_traceback(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "streamcausal", "tutorial", "--out", str(tmp_path),
         "--neurons", "abc"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("text, value", [("5000", 5000), ("5_000", 5000), ("5e3", 5000),
                                         (" 12 ", 12), ("2.0", 2)])
def test_count_parsing(text, value):
    assert options.count(2)(text) == value


@pytest.mark.parametrize("text", ["abc", "5.5", "1", "-3", "inf", "nan", ""])
def test_count_parsing_rejects(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="integer >= 2"):
        options.count(2)(text)


def test_help_shows_examples(capsys):
    assert cli.main(["tutorial", "--help"]) == 0
    assert "examples:" in capsys.readouterr().out
    assert cli.main(["--help"]) == 0
    assert "examples:" in capsys.readouterr().out


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert streamcausal.__version__ in capsys.readouterr().out


def test_subcommand_table_drives_the_parser():
    parser = cli.build_parser()
    assert set(cli.SUBCOMMANDS) == {"run", "estimate", "follow", "report", "tutorial"}
    for module in cli.SUBCOMMANDS.values():
        assert callable(module.add_parser) and callable(module.command)
    assert parser.parse_args(["tutorial", "--out", "d", "--steps", "5_000"]).steps == 5000


# ============================================================================ run, estimate, report

REPORT_WITH_A = ["true_vs_estimated.png", "true_vs_estimated_effect.png", "connectivity_graph.png",
                 "convergence.png", "edge_distributions.png"]


def _env():
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _cli(*args, cwd, timeout=120):
    """Run ``python -m streamcausal ARGS`` as a real process."""
    return subprocess.run([sys.executable, "-m", "streamcausal", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=_env(), cwd=cwd)


def _assert_images(directory, names):
    for name in names:
        path = Path(directory) / name
        image = matplotlib.image.imread(path)  # a valid PNG
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, name


def _one_error_line(err, *words):
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("streamcausal: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def _summary_row(out, label):
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in\n{out}")


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """One real `streamcausal run` with a float64 trajectory in a store, and its report."""
    where = tmp_path_factory.mktemp("saved")
    result = _cli("run", "--seeds", "1", "--seed", "3", "--steps", "2e4", "--store", "run.zarr",
                  "--save-trajectory", "--dtype", "float64", "--no-progress", cwd=where)
    assert result.returncode == 0, result.stderr
    return where, result


@pytest.mark.subprocess
def test_run_store_and_report_subprocess(saved_run):
    where, result = saved_run
    assert result.stderr == ""  # --no-progress
    row = _summary_row(result.stdout, "3")
    assert row[3:5] == ["10,000", "20,000"]  # samples, steps
    assert 0.9 < float(row[1]) <= 1.0  # score
    # The report went next to the store, without the .zarr suffix.
    _assert_images(where / "run-report", REPORT_WITH_A)
    for name in REPORT_WITH_A:
        assert str(Path("run-report") / name) in result.stdout
    group = zarr.open_group(str(where / "run.zarr"), mode="r")
    assert group.attrs["parameters"]["seeds"] == [3]
    assert group["seed_3/activity"].dtype == np.float64


@pytest.mark.subprocess
def test_resume_of_a_finished_store_subprocess(saved_run):
    where, first = saved_run
    result = _cli("run", "--store", "run.zarr", "--resume", "--no-report", "--no-progress", cwd=where)
    assert result.returncode == 0, result.stderr
    assert _summary_row(result.stdout, "3")[:5] == _summary_row(first.stdout, "3")[:5]
    assert "resumed: 0 of the 20,000 steps" in result.stdout
    assert "connectivity from the store" in result.stdout


@pytest.mark.subprocess
def test_estimate_matches_the_run_subprocess(saved_run, tmp_path):
    where, _ = saved_run
    output = tmp_path / "est.zarr"
    result = _cli("estimate", "run.zarr", "--output", output, "--no-progress", cwd=where)
    assert result.returncode == 0, result.stderr
    assert "'seed_3/activity'" in result.stdout and "'seed_3/clamped'" in result.stdout
    assert "score" in result.stdout
    run_group = zarr.open_group(str(where / "run.zarr"), mode="r")
    est = zarr.open_group(str(output), mode="r")
    for name in ("correlation", "effect", "stderr"):
        np.testing.assert_allclose(est[name][...], run_group[f"seed_3/estimates/{name}"][...],
                                   rtol=0, atol=1e-10)
        assert est[name].metadata.dimension_names == ("target", "source")
    assert int(est["count"][...]) == 10_000
    np.testing.assert_array_equal(est["connectivity"][...], run_group["connectivity"][...])
    # The report reads an `estimate --output` store too.
    assert cli.main(["report", str(output), "--out", str(tmp_path / "rep")]) == 0
    _assert_images(tmp_path / "rep", ["true_vs_estimated.png", "edge_distributions.png"])


@pytest.mark.subprocess
def test_estimate_into_the_store_and_lag(saved_run, tmp_path, capsys):
    where, _ = saved_run
    copy = tmp_path / "copy.zarr"
    shutil.copytree(where / "run.zarr", copy)
    assert cli.main(["estimate", str(copy), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "max |difference in effect|" in out
    group = zarr.open_group(str(copy), mode="r")
    np.testing.assert_allclose(group["seed_3/estimates_lag1/effect"][...],
                               group["seed_3/estimates/effect"][...], rtol=0, atol=1e-10)
    assert cli.main(["estimate", str(copy), "--lag", "2", "--observational", "--no-progress"]) == 0
    assert "seed_3/estimates_observational_lag2" in capsys.readouterr().out
    assert "effect" in zarr.open_group(str(copy), mode="r")["seed_3/estimates_observational_lag2"]
    assert cli.main(["report", str(copy), "--estimates", "seed_3/estimates_lag1",
                     "--out", str(tmp_path / "rep")]) == 0
    _assert_images(tmp_path / "rep", REPORT_WITH_A)


def test_estimate_a_foreign_recording(tmp_path, capsys):
    rng = np.random.default_rng(0)
    T, n = 3000, 4
    stim = (rng.random((T, n)) < 0.5).astype(np.uint8)
    act = np.zeros((T, n))
    act[1:] = 0.5 * stim[:-1] @ np.eye(n)[::-1] + 0.1 * rng.normal(size=(T - 1, n))
    root = zarr.open_group(str(tmp_path / "rec.zarr"), mode="w")
    root.create_array("rates", shape=(T, n), chunks=(700, n), dtype="float32")[...] = act
    root.create_array("laser", shape=(T, n), chunks=(500, n), dtype="uint8")[...] = stim
    assert cli.main(["estimate", str(tmp_path / "rec.zarr"), "--activity", "rates",
                     "--stimulation", "laser", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "all steps" in out and "score" not in out
    effect = zarr.open_group(str(tmp_path / "rec.zarr"), mode="r")["estimates_lag1/effect"][...]
    assert np.allclose(effect, 0.5 * np.eye(n)[::-1], atol=0.05)
    # No A in the store: estimate heatmaps, graph and nothing that needs A.
    assert cli.main(["report", str(tmp_path / "rec.zarr"), "--estimates", "estimates_lag1",
                     "--out", str(tmp_path / "rep")]) == 0
    written = sorted(p.name for p in (tmp_path / "rep").iterdir())
    assert written == ["connectivity_graph.png", "estimate_correlation.png", "estimate_effect.png"]
    # The default stimulation name is missing: say how to proceed.
    assert cli.main(["estimate", str(tmp_path / "rec.zarr"), "--activity", "rates"]) == 2
    _one_error_line(capsys.readouterr().err, "--stimulation", "--observational")


@pytest.mark.subprocess
def test_run_default_like_subprocess(tmp_path):
    result = _cli("run", "--steps", "2e4", "--seeds", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "6 neurons (density 0.1, connectivity seed 42)" in result.stdout
    assert "perturbation every 2 steps, p=0.5, clamp all" in result.stdout
    assert "merged" not in result.stdout  # one seed, in this process
    assert "this process" in result.stdout
    # stderr is not a terminal: plain progress lines, ending at 100 %.
    progress = result.stderr.strip().splitlines()
    if progress and progress[0].startswith("compiling the Numba kernels"):  # a cold cache: said once, first
        progress = progress[1:]
    assert progress and all(line.startswith("progress:") for line in progress)
    assert "100.0%" in progress[-1] and "/s" in progress[-1] and "ETA" in progress[-1]
    assert "\r" not in result.stderr
    _assert_images(tmp_path / "streamcausal-report", REPORT_WITH_A)


@pytest.mark.subprocess
@pytest.mark.slow
def test_run_two_seeds_on_a_local_cluster_subprocess(tmp_path):
    result = _cli("run", "--steps", "2e4", "--seeds", "2", "--workers", "2", "--no-report",
                  "--no-progress", cwd=tmp_path, timeout=240)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # Dask's own logging stays quiet
    assert "LocalCluster of 2 workers" in result.stdout
    merged = _summary_row(result.stdout, "merged")
    assert merged[4:6] == ["20,000", "40,000"]  # samples, steps
    assert float(merged[3]) > 0  # seed-to-seed SE
    assert _summary_row(result.stdout, "0")[3] == "10,000"  # no seed-to-seed SE cell
    assert _summary_row(result.stdout, "1")[3] == "10,000"
    # The same seeds in process give the same merged estimate.
    A = streamcausal.create_connectivity(6)
    expected = streamcausal.run(A, 20_000, seed=0, chunk_steps=cli.run.cli_chunk_steps(6, 20_000))
    assert _summary_row(result.stdout, "0")[1] == f"{expected.score(A):.6f}"


def _wait_for_progress(process, deadline):
    """Read stderr lines until the first progress line (the run is under way)."""
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            return False
        if line.startswith("progress:"):
            return True
    return False


@pytest.mark.subprocess
@pytest.mark.slow
def test_ctrl_c_leaves_a_resumable_store_subprocess(tmp_path):
    steps, chunk = 1_000_000, 62_500
    args = ["run", "--store", "int.zarr", "--seeds", "1", "--steps", str(steps), "--chunk-steps",
            str(chunk), "--checkpoint-seconds", "0", "--no-report"]
    process = subprocess.Popen([sys.executable, "-m", "streamcausal", *args], cwd=tmp_path,
                               env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for_progress(process, time.monotonic() + 120)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, (out, err)
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("streamcausal: interrupted; the store int.zarr is resumable: ")
    assert last.endswith("streamcausal " + " ".join(args) + " --resume")
    assert not (tmp_path / "int.zarr.lock").exists()
    # An unfinished run is reported from its seeds' last checkpoints.
    assert cli.main(["report", str(tmp_path / "int.zarr"), "--out", str(tmp_path / "partial")]) == 0
    _assert_images(tmp_path / "partial", REPORT_WITH_A)

    resumed = _cli(*args, "--resume", "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed: " in resumed.stdout  # it continued from a checkpoint, not from scratch
    A = streamcausal.create_connectivity(6)
    expected = streamcausal.run(A, steps, seed=0, chunk_steps=chunk)
    group = zarr.open_group(str(tmp_path / "int.zarr"), mode="r")
    assert int(group["estimates/count"][...]) == expected.n_samples
    np.testing.assert_array_equal(group["estimates/effect"][...], expected.effect)
    np.testing.assert_array_equal(group["estimates/correlation"][...], expected.correlation)


# ---------------------------------------------------------------------------- in process


def test_run_in_process_writes_table_and_report(tmp_path, capsys):
    report = tmp_path / "rep"
    assert cli.main(["run", "--seeds", "1", "--steps", "20_000", "--report", str(report),
                     "--neurons", "8", "--density", "0.3", "--connectivity-seed", "1"]) == 0
    captured = capsys.readouterr()
    assert "8 neurons (density 0.3, connectivity seed 1)" in captured.out
    headers = captured.out.split("\n\n", 1)[1].splitlines()[0].split()
    assert headers == ["seed", "score", "mean", "SE", "samples", "steps", "seconds", "steps/s"]
    row = _summary_row(captured.out, "0")
    A = streamcausal.create_connectivity(8, 0.3, random_state=1)
    expected = streamcausal.run(A, 20_000, seed=0, chunk_steps=cli.run.cli_chunk_steps(8, 20_000))
    assert row[1] == f"{expected.score(A):.6f}"
    assert row[2] == f"{np.nanmean(expected.stderr):.3e}"
    _assert_images(report, REPORT_WITH_A)
    assert "progress:" in captured.err


def test_run_observe_and_stopping_rule(tmp_path, capsys):
    assert cli.main(["run", "--seeds", "1", "--observe", "--steps", "1e4", "--no-report",
                     "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "observation" in out
    assert _summary_row(out, "0")[3] == "9,999"  # every consecutive pair is a sample
    assert cli.main(["run", "--seeds", "1", "--steps", "1e7", "--chunk-steps", "4096",
                     "--target-se", "0.01", "--no-report", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "stopping rule: target mean SE 0.01 (reached" in out
    steps = int(_summary_row(out, "0")[4].replace(",", ""))
    assert steps < 10_000_000 and steps % 4096 == 0


def test_run_resolves_defaults():
    args = cli.build_parser().parse_args(["run"])
    spec = cli.run.resolve(args)
    assert spec["seeds"] == list(range(os.cpu_count() or 1))
    assert spec["n_steps"] == 2_000_000
    assert spec["design"] == streamcausal.Perturbation()
    np.testing.assert_array_equal(spec["A"], streamcausal.create_connectivity(6))
    assert spec["rng"] == "default" and spec["dtype"] == "float32"
    args = cli.build_parser().parse_args(["run", "--steps", "1e8", "--seed", "5", "--seeds", "3"])
    spec = cli.run.resolve(args)
    assert spec["n_steps"] == 100_000_000 and spec["seeds"] == [5, 6, 7]
    assert cli.build_parser().parse_args(["run", "--steps", "100_000_000"]).steps == 100_000_000


def test_resume_takes_what_is_not_given_from_the_store(tmp_path, capsys):
    store = str(tmp_path / "r.zarr")
    assert cli.main(["run", "--seeds", "1", "--seed", "7", "--steps", "1e4", "--every", "3",
                     "--p", "0.25", "--store", store, "--no-report", "--no-progress"]) == 0
    first = _summary_row(capsys.readouterr().out, "7")
    assert cli.main(["run", "--store", store, "--resume", "--no-report", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "perturbation every 3 steps, p=0.25" in out
    assert _summary_row(out, "7")[:5] == first[:5]


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("small") / "s.zarr"
    assert cli.main(["run", "--seeds", "1", "--steps", "1e4", "--store", str(store),
                     "--no-report", "--no-progress"]) == 0
    return store


def _foreign_zarr(tmp_path):
    path = tmp_path / "foreign.zarr"
    zarr.open_group(str(path), mode="w").create_array("x", shape=(3,), dtype="float64")
    return path


RUN_ERRORS = [
    (["run", "--steps", "abc"], ["--steps", "'abc'"]),
    (["run", "--steps", "1.5e0"], ["--steps"]),
    (["run", "--neurons", "1"], ["--neurons"]),
    (["run", "--density", "0"], ["--density", "(0, 1]"]),
    (["run", "--density", "nan"], ["--density"]),
    (["run", "--p", "1"], ["--p", "(0, 1)"]),
    (["run", "--every", "1"], ["--every"]),
    (["run", "--seeds", "0"], ["--seeds"]),
    (["run", "--seed", "-1"], ["--seed"]),
    (["run", "--seed", str(2**32)], ["--seed"]),
    (["run", "--workers", "0"], ["--workers"]),
    (["run", "--target-se", "-1"], ["--target-se"]),
    (["run", "--dtype", "int16"], ["--dtype"]),
    (["run", "--clamp", "some"], ["--clamp"]),
    (["run", "--observe", "--every", "3"], ["--observe", "--every"]),
    (["run", "--observe", "--p", "0.2", "--clamp", "all"], ["--observe", "--p/--clamp"]),
    (["run", "--resume"], ["--resume", "--store"]),
    (["run", "--save-trajectory"], ["--save-trajectory", "--store"]),
    (["run", "--store", "STORE", "--resume", "--overwrite"], ["--resume", "--overwrite"]),
    (["run", "--seeds", "1", "--workers", "2"], ["--workers"]),
    (["run", "--scheduler", "tcp://x:1", "--workers", "2"], ["--workers", "--scheduler"]),
    (["run", "--checkpoint-seconds", "1"], ["--checkpoint-seconds", "--store"]),
    (["run", "--store", "MISSING", "--resume"], ["--resume", "no such store"]),
    (["run", "--store", "FOREIGN"], ["not a streamcausal run store"]),
    (["run", "--store", "FOREIGN", "--resume"], ["not a streamcausal run store"]),
    (["run", "--store", "NONZARR"], ["not a Zarr store"]),
    (["run", "--store", "STORE", "--seeds", "1"], ["already holds a run", "--resume", "--overwrite"]),
    (["run", "--store", "STORE", "--resume", "--steps", "2e4", "--no-progress"],
     ["n_steps differs", "--steps"]),
    (["run", "--store", "STORE", "--resume", "--neurons", "7", "--no-progress"],
     ["n_neurons differs", "--neurons"]),
    (["run", "--store", "STORE", "--resume", "--seed", "1", "--no-progress"],
     ["seeds differs", "--seed"]),
    (["run", "--store", "STORE", "--resume", "--rng", "legacy", "--no-progress"],
     ["rng differs"]),
    (["report", "MISSING"], ["no such store"]),
    (["report", "FOREIGN"], ["no estimates"]),
    (["report", "STORE", "--estimates", "nope"], ["--estimates", "nope"]),
    (["estimate", "MISSING"], ["no such store"]),
    (["estimate", "NONZARR"], ["not a Zarr store"]),
    (["estimate", "STORE"], ["no trajectory"]),
    (["estimate", "STORE", "--seed", "9"], ["--seed 9", "[0]"]),
    (["estimate", "FOREIGN", "--activity", "x", "--observational", "--lag", "0"], ["--lag"]),
    (["estimate", "FOREIGN", "--activity", "nope", "--observational"], ["'nope'"]),
    (["estimate", "FOREIGN", "--observational", "--stimulation", "x"], ["--stimulation"]),
]


@pytest.mark.parametrize("argv, words", RUN_ERRORS, ids=[" ".join(a) for a, _ in RUN_ERRORS])
def test_user_errors_exit_2_with_one_line(argv, words, small_store, tmp_path, capsys):
    nonzarr = tmp_path / "notes"
    nonzarr.mkdir()
    (nonzarr / "keep.txt").write_text("precious")
    places = {"STORE": str(small_store), "MISSING": str(tmp_path / "missing.zarr"),
              "FOREIGN": str(_foreign_zarr(tmp_path)), "NONZARR": str(nonzarr)}
    argv = [places.get(a, a) for a in argv]
    assert cli.main(argv) == 2
    _one_error_line(capsys.readouterr().err, *words)
    assert (nonzarr / "keep.txt").read_text() == "precious"  # never emptied
    assert not Path(str(small_store) + ".lock").exists()


@pytest.mark.subprocess
def test_user_error_subprocess_no_traceback(small_store, tmp_path):
    result = _cli("run", "--store", small_store, "--resume", "--every", "4", "--no-progress",
                  cwd=tmp_path)
    assert result.returncode == 2
    _one_error_line(result.stderr, "design differs", "--every")


def test_help_of_every_subcommand_has_examples(capsys):
    for command in ("run", "estimate", "report", "tutorial"):
        assert cli.main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "examples:" in out and f"streamcausal {command}" in out
    assert cli.main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--neurons", "--density", "--steps", "--every", "--p", "--clamp", "--observe",
                   "--seeds", "--chunk-steps", "--store", "--resume", "--save-trajectory",
                   "--dtype", "--scheduler", "--workers", "--target-se"):
        assert option in out


def test_resume_command_drops_overwrite():
    assert (cli.run.resume_command(["run", "--store", "a b.zarr", "--overwrite"])
            == "streamcausal run --store 'a b.zarr' --resume")
    assert (cli.run.resume_command(["run", "--store", "s", "--resume"])
            == "streamcausal run --store s --resume")


def test_report_dir_defaults():
    assert cli.report.default_out_dir("out/run.zarr") == Path("out/run-report")
    assert cli.report.default_out_dir("out/store") == Path("out/store-report")
    assert cli.report.default_out_dir(None) == Path("streamcausal-report")
    assert cli.report.default_out_dir("s3://bucket/run.zarr") == Path("streamcausal-report")


class _FakeStream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self._tty = tty

    def isatty(self):
        return self._tty


def _events(done_values, total, **fields):
    return [Progress(done, total, **fields) for done in done_values]


def test_progress_bar_on_a_terminal():
    stream = _FakeStream(tty=True)
    bar = display.ProgressBar(stream)
    bar(Progress(0, 1000))
    time.sleep(0.12)
    bar(Progress(250, 1000, seed=0, samples=125, score=0.98765, mean_se=1.5e-3))
    time.sleep(0.12)
    bar(Progress(1000, 1000, seed=0, samples=500, score=0.99, mean_se=1e-3))
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\r") and text.endswith("\n")
    frames = [frame.strip() for frame in text.strip("\n").split("\r")[1:]]
    assert any("25.0%" in frame and "250/1,000 steps" in frame and "score 0.9877" in frame
               and "SE 1.50e-03" in frame and "ETA" in frame and "steps/s" in frame for frame in frames)
    assert "100.0%" in frames[-1] and "1,000/1,000 steps" in frames[-1] and "ETA 00:00" in frames[-1]
    assert "score 0.9900" in frames[-1]
    assert "progress:" not in text  # a bar, not log lines


def test_progress_lines_when_not_a_terminal():
    stream = _FakeStream(tty=False)
    bar = display.ProgressBar(stream)
    for event in _events(range(0, 1001, 10), 1000, seed=0, score=0.5, mean_se=0.01):
        bar(event)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 10  # at every further 10 %, not at every event
    assert all(line.startswith("progress:") for line in lines)
    assert [line.split()[1] for line in lines] == [f"{10 * k}.0%" for k in range(1, 11)]
    assert "1,000/1,000 steps" in lines[-1] and "steps/s" in lines[-1] and "ETA 00:00" in lines[-1]
    assert "score 0.5000" in lines[-1] and "SE 1.00e-02" in lines[-1]


def test_progress_lines_at_least_every_tenth_even_in_big_jumps():
    stream = _FakeStream(tty=False)
    bar = display.ProgressBar(stream, unit="rows")
    for event in _events([0, 5, 370, 371, 999, 999], 1000):
        bar(event)
    bar(Progress(999, 1000))
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["37.0%", "99.9%"]  # a line per tenth passed
    bar.close()  # the last state was logged already
    assert stream.getvalue().splitlines() == lines
    assert "999/1,000 rows" in lines[-1]
    stream = _FakeStream(tty=False)
    bar = display.ProgressBar(stream)
    bar(Progress(250, 1000))
    bar(Progress(260, 1000))
    bar.close()  # the last state, 26 %, was not logged yet
    assert [line.split()[1] for line in stream.getvalue().splitlines()] == ["25.0%", "26.0%"]


def test_progress_line_after_30_seconds_without_a_tenth():
    stream = _FakeStream(tty=False)
    bar = display.ProgressBar(stream)
    bar(Progress(1, 1000))
    assert stream.getvalue() == ""
    bar.last_line -= 31
    bar(Progress(2, 1000))
    assert stream.getvalue().startswith("progress:   0.2%")
    bar.close()
    assert len(stream.getvalue().splitlines()) == 1


def test_progress_disabled_writes_nothing():
    quiet = _FakeStream(tty=False)
    bar = display.ProgressBar(quiet, enabled=False)
    bar(Progress(5, 10))
    bar.close()
    assert quiet.getvalue() == ""


def test_progress_rate_leaves_out_resumed_steps():
    bar = display.ProgressBar(_FakeStream(tty=False), resuming=True)
    bar.began -= 1.0  # one second in
    bar(Progress(900, 2000, seed=0))  # seed 0 had done about 900 steps before
    bar(Progress(950, 2000, seed=0))
    bar(Progress(1950, 2000, seed=1))  # seed 1's first report: 1000 steps from before
    assert bar.bar.initial == 1900
    line = bar.bar.line()
    rate = float(line.split("steps/s")[0].split()[-1])
    assert 25 < rate <= 50  # 50 fresh steps in a bit more than one second


def test_summary_table_formats():
    assert display.format_rate(1_234_567) == "1.23M"
    assert display.format_rate(None) == "n/a"
    assert display.format_count(9_999) == "9,999" and display.format_count(2_000_000) == "2M"
    assert display.format_number(float("nan")) == "n/a" and display.format_number(0.5, ".2f") == "0.50"
    table = display.table(["a", "bb"], [["x", "1"], ["yyy", "22"]]).splitlines()
    assert table == ["a    bb", "---  --", "x     1", "yyy  22"]


CLI_MODULES = sorted(path.name for path in (REPO / "streamcausal" / "cli").glob("*.py"))


@pytest.mark.parametrize("name", CLI_MODULES)
def test_cli_modules_do_not_touch_zarr_or_plots_directly(name):
    """Store access goes through io.store, figures through streamcausal.report."""
    text = (REPO / "streamcausal" / "cli" / name).read_text()
    assert "import zarr" not in text and "zarr." not in text, name
    assert "plots" not in text or name == "tutorial.py", name
    assert "inspect" not in text, name



# =========================================================================== user errors vs bugs


def test_raised_on_purpose_tells_checks_from_bugs(cluster_client):
    from streamcausal._errors import raised_on_purpose
    from streamcausal._validation import check_int
    from streamcausal.moments import CrossMoments

    with pytest.raises(TypeError) as check:
        check_int("x", "n_steps")  # a `raise TypeError(...)` of the package's checks
    assert raised_on_purpose(check.value)
    with pytest.raises(ValueError) as inside_numpy:  # NumPy raises, called from the package's code
        CrossMoments._merged((2, np.zeros(2), np.zeros(1), np.zeros(2), np.zeros(1), np.zeros((1, 2))),
                             (2, np.zeros(3), np.zeros(1), np.zeros(3), np.zeros(1), np.zeros((1, 3))))
    assert not raised_on_purpose(inside_numpy.value)
    with pytest.raises(TypeError) as interpreter:  # a bad call inside the package's code
        streamcausal._validation.describe()
    assert not raised_on_purpose(interpreter.value)
    with pytest.raises(ValueError) as here:
        raise ValueError("raised by a test, not by streamcausal")
    assert not raised_on_purpose(here.value)
    assert not raised_on_purpose(ValueError("never raised"))
    # A check that fails on a Dask worker comes back with a rebuilt traceback: still on purpose.
    with pytest.raises(TypeError) as remote:
        cluster_client.submit(check_int, "x", "n_steps", pure=False).result()
    assert raised_on_purpose(remote.value)
    with pytest.raises(ValueError) as remote_bug:
        cluster_client.submit(CrossMoments._merged, (2, np.zeros(2)) + (np.zeros(1),) * 4,
                              (2, np.zeros(3)) + (np.zeros(1),) * 4, pure=False).result()
    assert not raised_on_purpose(remote_bug.value)


def _wrong_parts(self):
    """CrossMoments._parts with one input mean too few, so that the merge fails inside NumPy: a bug."""
    count, mean_in, *rest = _PARTS(self)
    return (count, mean_in[:-1], *rest)


_PARTS = streamcausal.moments.CrossMoments._parts
BUG_RUN = ["run", "--seeds", "1", "--steps", "2e3", "--chunk-steps", "500", "--no-report", "--no-progress"]


def test_a_bug_keeps_its_traceback_a_check_gives_one_line(monkeypatch, capsys):
    assert cli.main(BUG_RUN + ["--steps", "1"]) == 2  # the user's mistake: one line
    _one_error_line(capsys.readouterr().err, "--steps")
    monkeypatch.setattr(streamcausal.moments.CrossMoments, "_parts", _wrong_parts)
    with pytest.raises(ValueError, match="broadcast"):  # the bug propagates, with its traceback
        cli.main(BUG_RUN)
    assert "streamcausal: error:" not in capsys.readouterr().err


@pytest.mark.subprocess
def test_a_bug_shows_its_traceback_subprocess(tmp_path):
    script = tmp_path / "buggy.py"
    script.write_text(
        "import sys\n"
        "import streamcausal.moments\n"
        "from streamcausal import cli\n"
        "parts = streamcausal.moments.CrossMoments._parts\n"
        "def wrong(self):\n"
        "    count, mean_in, *rest = parts(self)\n"
        "    return (count, mean_in[:-1], *rest)\n"
        "streamcausal.moments.CrossMoments._parts = wrong\n"
        f"sys.exit(cli.main({BUG_RUN!r}))\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                            env=_env(), cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "streamcausal/moments/cross.py" in result.stderr  # where the bug is
    assert result.stderr.strip().splitlines()[-1].startswith("ValueError: operands could not be broadcast")
