"""`streamcausal estimate` on NWB stimulation trials: summary, Zarr estimates, report figures, one-line errors.

End to end on small synthetic NWB files (tests/nwb_files.py, planted networks from
tests/experiments.py), in process through ``cli.main`` and once as a child process.
Every bad input exits with status 2 and one line naming the option and its value, and
leaves nothing written. Also: the trial-estimate Zarr writer, the strongest-edge choice
and ``report_trials``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import zarr
from experiments import planted_experiment

from streamcausal import cli
from streamcausal.experiment import Recording
from streamcausal.io.responses import estimate_trials
from streamcausal.report import TRIAL_FIGURES, report_trials, strongest_edges, trace_span

try:
    import nwb_files
except pytest.skip.Exception:  # no pynwb: the tests that need a file are skipped
    nwb_files = None

needs_nwb = pytest.mark.skipif(nwb_files is None, reason="needs pynwb (pip install 'streamcausal[nwb]')")
REPO = Path(__file__).resolve().parents[1]
N = 8
ROI_IDS = np.arange(100, 100 + N)
WINDOW, BASELINE = (0.0, 1.0), (-0.5, 0.0)
ARGS = ["--activity", "dff", "--trials", "photostim", "--window", "0,1", "--baseline", "-0.5,0"]


@pytest.fixture(scope="module")
def experiment():
    return planted_experiment(n=N, n_trials=160, rate=20.0, seed=4)


@pytest.fixture(scope="module")
def ophys_file(tmp_path_factory, experiment):
    if nwb_files is None:
        pytest.skip("needs pynwb")
    activity, rate, trials, _ = experiment
    targets = [trials.targets_of(k).tolist() for k in range(trials.n_trials)]
    path = tmp_path_factory.mktemp("nwb") / "rec.nwb"
    return nwb_files.write_ophys(path, activity, rate=rate, onsets=trials.onsets, targets=targets,
                                 trials_name="photostim", roi_ids=ROI_IDS)


@pytest.fixture(scope="module")
def units_file(tmp_path_factory):
    """Six units firing at 5 Hz; a targeted unit at 60 Hz for 0.3 s, and unit 1 at 30 Hz when unit 0 is."""
    if nwb_files is None:
        pytest.skip("needs pynwb")
    rng = np.random.default_rng(7)
    onsets = 1.0 + 1.2 * np.arange(150)
    targets = [[int(k % 6)] if k % 7 else [] for k in range(onsets.size)]
    end = onsets[-1] + 2.0
    spikes = [list(rng.uniform(0, end, rng.poisson(5 * end))) for _ in range(6)]
    for onset, chosen in zip(onsets, targets):
        for unit, extra in [(u, 60.0) for u in chosen] + ([(1, 30.0)] if chosen == [0] else []):
            spikes[unit].extend(onset + rng.uniform(0, 0.3, rng.poisson(extra * 0.3)))
    path = tmp_path_factory.mktemp("units") / "units.nwb"
    return nwb_files.write_units(path, [np.sort(s) for s in spikes], onsets=onsets, targets=targets,
                                 unit_ids=np.arange(10, 16))


def _assert_pngs(out, names):
    for name in names:
        image = matplotlib.image.imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200, name
        assert image[..., :3].std() > 0.05, f"{name} looks blank"


def _one_line_error(capsys):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("streamcausal: error: ")
    return lines[0]


# ----------------------------------------------------------------------------- end to end


@needs_nwb
def test_nwb_estimate_summary_zarr_and_figures(ophys_file, experiment, tmp_path, capsys):
    out = tmp_path / "result"
    assert cli.main(["estimate", str(ophys_file), *ARGS, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    activity, rate, trials, _ = experiment
    expected = estimate_trials(activity, trials, rate=rate, window=WINDOW, baseline=BASELINE)

    lines = captured.out.splitlines()
    assert lines[0].startswith("streamcausal estimate: rec.nwb: RoiResponseSeries 'dff'")
    assert f"trials: {expected.n_trials} used of 160" in captured.out
    assert f"sources targeted: {N} of {N} neurons" in captured.out
    significant = int(expected.significant(0.05).sum())
    assert f"significant edges at alpha 0.05 (Benjamini-Hochberg q <= alpha): {significant} of {N * (N - 1)}" \
        in captured.out
    median = np.median(np.diag(expected.effect))
    assert f"median self-response: {median:.4g}" in captured.out
    assert "progress: 100.0%" in captured.err  # a plain line per 10 % when stderr is not a terminal

    store = out / "estimates.zarr"
    group = zarr.open_group(str(store), mode="r")
    for name, values in (("effect", expected.effect), ("stderr", expected.stderr), ("pvalue", expected.pvalue),
                         ("qvalue", expected.qvalue)):
        assert group[name].metadata.dimension_names == ("responder", "source")
        np.testing.assert_allclose(group[name][...], values, rtol=1e-10, atol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(group["significant"][...], expected.significant(0.05))
    np.testing.assert_array_equal(group["trials_per_source"][...], expected.trials_per_source)
    np.testing.assert_array_equal(group["source_ids"][...], ROI_IDS)
    np.testing.assert_array_equal(group["responder_ids"][...], ROI_IDS)
    attrs = dict(group.attrs)
    assert attrs["method"] == "regression" and attrs["alpha"] == 0.05
    assert attrs["window"] == [0.0, 1.0] and attrs["baseline"] == [-0.5, 0.0]
    assert attrs["n_trials"] == expected.n_trials and attrs["n_dropped"] == expected.n_dropped
    assert set(attrs["dropped"]) == {"off_recording", "empty_window", "empty_baseline"}
    assert "RoiResponseSeries 'dff'" in attrs["recording"]
    assert attrs["streamcausal"]["kind"] == "trial_estimates"

    _assert_pngs(out, TRIAL_FIGURES)
    for name in TRIAL_FIGURES:
        assert f"wrote {out / name}" in captured.out

    # The store is also one that `streamcausal report` reads (its effect and stderr).
    assert cli.main(["report", str(store), "--out", str(tmp_path / "generic")]) == 0
    assert (tmp_path / "generic" / "estimate_effect.png").exists()


@needs_nwb
def test_units_with_bin_size_difference_method_and_alpha(units_file, tmp_path, capsys):
    out = tmp_path / "units-out"
    argv = ["estimate", str(units_file), "--activity", "units", "--bin-size", "0.02", "--trials", "trials",
            "--window", "0,0.3", "--method", "difference", "--alpha", "0.01", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "Units spike trains binned at 0.02 s" in captured.out
    assert "significant edges at alpha 0.01" in captured.out
    group = zarr.open_group(str(out / "estimates.zarr"), mode="r")
    assert group.attrs["method"] == "difference" and group.attrs["baseline"] is None
    np.testing.assert_array_equal(group["source_ids"][...], np.arange(10, 16))
    effect, significant = group["effect"][...], group["significant"][...]
    assert significant[1, 0] and effect[1, 0] > 10  # unit 0 drives unit 1 (spikes/s)
    assert np.all(np.diag(effect) > 30)
    _assert_pngs(out, TRIAL_FIGURES)


@needs_nwb
@pytest.mark.subprocess
def test_nwb_estimate_subprocess(ophys_file, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "streamcausal", "estimate", str(ophys_file), "--activity", "dff", "--trials",
         "photostim", "--window", "0,1", "--baseline", "-0.5,0", "--out", "out"],
        capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "median self-response:" in done.stdout and "significant edges at alpha 0.05" in done.stdout
    assert "progress: 100.0%" in done.stderr
    assert zarr.open_group(str(tmp_path / "out" / "estimates.zarr"), mode="r")["effect"].shape == (N, N)
    _assert_pngs(tmp_path / "out", TRIAL_FIGURES)


@needs_nwb
def test_default_out_beside_the_file_and_overwrite(ophys_file, tmp_path, capsys):
    copy = tmp_path / "copy.nwb"
    copy.write_bytes(Path(ophys_file).read_bytes())
    argv = ["estimate", str(copy), *ARGS, "--no-progress"]
    assert cli.main(argv) == 0
    out = tmp_path / "copy-estimates"
    assert (out / "estimates.zarr" / "zarr.json").exists()
    before = (out / "estimates.zarr" / "zarr.json").read_bytes()
    capsys.readouterr()
    assert cli.main(argv) == 2  # refused: the estimates are there
    line = _one_line_error(capsys)
    assert "already exists" in line and "--overwrite" in line and "copy-estimates" in line
    assert (out / "estimates.zarr" / "zarr.json").read_bytes() == before
    assert cli.main([*argv, "--overwrite", "--method", "difference"]) == 0
    assert zarr.open_group(str(out / "estimates.zarr"), mode="r").attrs["method"] == "difference"


# ----------------------------------------------------------------------------- bad inputs

BAD = [
    (["--activity", "dff2", "--trials", "photostim"], ["--activity 'dff2'", "processing/ophys/DfOverF/dff"]),
    (["--activity", "dff", "--trials", "stims"], ["--trials 'stims'", "intervals/photostim"]),
    (["--activity", "dff", "--trials", "photostim", "--targets", "rois"], ["--targets 'rois'", "targets"]),
    (["--activity", "units", "--trials", "photostim"], ["--activity 'units'", "--bin-size"]),
    (["--activity", "units", "--bin-size", "0.01", "--trials", "photostim"], ["--activity 'units'", "no Units"]),
    (["--activity", "dff", "--bin-size", "0.01", "--trials", "photostim"], ["--bin-size", "'dff'"]),
    (["--activity", "dff", "--trials", "photostim", "--bin-size", "0"], ["--bin-size", "'0'"]),
    (["--activity", "dff", "--trials", "photostim", "--window", "1,0"], ["--window", "'1,0'"]),
    (["--activity", "dff", "--trials", "photostim", "--window", "0"], ["--window", "'0'"]),
    (["--activity", "dff", "--trials", "photostim", "--window", "0,1,2"], ["--window", "'0,1,2'"]),
    (["--activity", "dff", "--trials", "photostim", "--window", "a,b"], ["--window", "'a,b'"]),
    (["--activity", "dff", "--trials", "photostim", "--baseline", "0,-0.5"], ["--baseline", "'0,-0.5'"]),
    (["--activity", "dff", "--trials", "photostim", "--window", "900,901"], ["--window 900,901", "dropped"]),
    (["--activity", "dff", "--trials", "photostim", "--alpha", "0"], ["--alpha", "'0'"]),
    (["--activity", "dff", "--trials", "photostim", "--alpha", "1"], ["--alpha", "'1'"]),
    (["--activity", "dff", "--trials", "photostim", "--alpha", "1.5"], ["--alpha", "'1.5'"]),
    (["--activity", "dff", "--trials", "photostim", "--method", "ols"], ["--method", "'ols'"]),
    (["--activity", "dff", "--trials", "photostim", "--lag", "2"], ["--lag", "Zarr"]),
    (["--activity", "dff", "--trials", "photostim", "--output", "x.zarr"], ["--output", "Zarr"]),
    (["--trials", "photostim"], ["--activity"]),
    (["--activity", "dff"], ["--trials"]),
]


@needs_nwb
@pytest.mark.parametrize("options, words", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_inputs_one_line_exit_2_nothing_written(ophys_file, tmp_path, capsys, options, words):
    out = tmp_path / "out"
    assert cli.main(["estimate", str(ophys_file), *options, "--out", str(out), "--no-progress"]) == 2
    line = _one_line_error(capsys)
    for word in words:
        assert word in line, line
    assert not out.exists()
    assert not list(tmp_path.iterdir())


def test_missing_file_and_not_a_file(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["estimate", str(tmp_path / "none.nwb"), *ARGS, "--out", str(out)]) == 2
    assert "no such NWB file" in _one_line_error(capsys)
    (tmp_path / "dir.nwb").mkdir()
    assert cli.main(["estimate", str(tmp_path / "dir.nwb"), *ARGS, "--out", str(out)]) == 2
    assert "not a file" in _one_line_error(capsys)
    (tmp_path / "junk.nwb").write_text("not hdf5")
    assert cli.main(["estimate", str(tmp_path / "junk.nwb"), *ARGS, "--out", str(out)]) == 2
    line = _one_line_error(capsys)
    assert "junk.nwb" in line and ("NWB" in line or "pynwb" in line)
    assert not out.exists()


def test_out_is_a_file(tmp_path, capsys):
    (tmp_path / "rec.nwb").write_text("x")
    (tmp_path / "taken").write_text("x")
    assert cli.main(["estimate", str(tmp_path / "rec.nwb"), *ARGS, "--out", str(tmp_path / "taken")]) == 2
    assert "--out must be a directory" in _one_line_error(capsys)


def test_without_pynwb_one_line_install_hint(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "pynwb", None)
    (tmp_path / "rec.nwb").write_bytes(b"\x89HDF\r\n\x1a\n")
    out = tmp_path / "out"
    assert cli.main(["estimate", str(tmp_path / "rec.nwb"), *ARGS, "--out", str(out)]) == 2
    assert "pip install 'streamcausal[nwb]'" in _one_line_error(capsys)
    assert not out.exists()


def test_trial_options_on_a_zarr_store_are_refused(tmp_path, capsys):
    store = tmp_path / "rec.zarr"
    zarr.open_group(str(store), mode="w").create_array("activity", shape=(10, 2), dtype="float64")
    for option, value in (("--window", "0,1"), ("--alpha", "0.1"), ("--out", "x"), ("--method", "difference")):
        assert cli.main(["estimate", str(store), option, value]) == 2
        line = _one_line_error(capsys)
        assert option in line and "rec.zarr" in line
    assert sorted(p.name for p in store.iterdir()) == ["activity", "zarr.json"]


# ----------------------------------------------------------------------------- library parts


def test_strongest_edges_and_trace_span(experiment):
    activity, rate, trials, _ = experiment
    result = estimate_trials(activity, trials, rate=rate, window=WINDOW, baseline=BASELINE)
    pairs = strongest_edges(result, 0.05, 5)
    assert pairs.shape == (min(5, int(result.significant(0.05).sum())), 2)
    assert np.all(pairs[:, 0] != pairs[:, 1])
    magnitudes = np.abs(result.effect[pairs[:, 0], pairs[:, 1]])
    assert np.all(np.diff(magnitudes) <= 0) and result.significant(0.05)[pairs[:, 0], pairs[:, 1]].all()
    rest = result.significant(0.05).copy()
    rest[pairs[:, 0], pairs[:, 1]] = False
    assert np.all(np.abs(result.effect[rest]) <= magnitudes.min())
    assert trace_span((0.0, 1.0), (-0.5, 0.0)) == (-0.5, 1.5)
    assert trace_span((0.2, 0.6)) == pytest.approx((-0.4, 0.8))


def test_strongest_edges_without_significance_are_smallest_p():
    activity, rate, trials, _ = planted_experiment(n=5, n_trials=60, weights="null", seed=2)
    result = estimate_trials(activity, trials, rate=rate, window=WINDOW)
    pairs = strongest_edges(result, 1e-12, 3)
    p = result.pvalue[pairs[:, 0], pairs[:, 1]]
    off = result.pvalue[~np.eye(5, dtype=bool)]
    np.testing.assert_array_equal(p, np.sort(off)[:3])


def test_report_trials_reads_the_traces_from_the_recording(experiment, tmp_path):
    activity, rate, trials, _ = experiment
    recording = Recording(activity, trials, rate=rate, ids=ROI_IDS)
    result = estimate_trials(recording, window=WINDOW, baseline=BASELINE)
    paths = report_trials(result, tmp_path / "figs", recording=recording, alpha=0.1, n_edges=3)
    assert [p.name for p in paths] == list(TRIAL_FIGURES)
    _assert_pngs(tmp_path / "figs", TRIAL_FIGURES)
    no_traces = report_trials(result, tmp_path / "plain")
    assert [p.name for p in no_traces] == ["influence_matrix.png", "volcano.png", "self_response.png"]
    with pytest.raises(TypeError, match="TrialResult"):
        report_trials("result", tmp_path)
    with pytest.raises(ValueError, match="alpha"):
        report_trials(result, tmp_path / "bad", alpha=1.0)
    assert not (tmp_path / "bad").exists()
