"""Following a growing recording: real writer processes (random pieces and pauses, one SIGKILLed mid-append),
`streamcausal follow` killed and resumed, and a run store followed while `streamcausal run` writes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import zarr

import streamcausal as sc
from streamcausal import cli
from streamcausal.cli import follow as follow_command
from streamcausal.io.store import is_run_store
from streamcausal.live import FINISHED, ROWS_COMPLETE, Follower, GrowingRecording, append_rows, read_follow_output

TOLERANCE = 1e-10

# A writer process: appends rows [start, stop) of a saved trajectory in random pieces at random
# pauses, keeping the appending convention; with die=1 it then resizes the arrays, writes garbage
# rows past rows_complete and SIGKILLs itself before counting them.
WRITER = textwrap.dedent("""
    import os, signal, sys, time
    import numpy as np
    from streamcausal.live import GrowingRecording
    store, data, start, stop, seed, die, finish, pause = sys.argv[1:9]
    start, stop, seed, die, finish, pause = int(start), int(stop), int(seed), int(die), int(finish), float(pause)
    saved = np.load(data)
    recording = GrowingRecording.open(store)
    assert recording.rows_complete == start, (recording.rows_complete, start)
    rng = np.random.default_rng(seed)
    t = start
    while t < stop:
        k = min(int(rng.integers(1, 900)), stop - t)
        recording.append(saved["activity"][t:t + k], saved["stimulation"][t:t + k], saved["clamped"][t:t + k])
        t += k
        time.sleep(float(rng.uniform(0, pause)))
    if die:
        group = recording.group
        for name in ("activity", "stimulation", "clamped"):
            array = group[name]
            array.resize((t + 777, *array.shape[1:]))
        group["activity"][t:t + 777] = 1e6            # garbage: an estimate that read it would be far off
        group["stimulation"][t:t + 777] = 1
        group["clamped"][t:t + 777] = True
        os.kill(os.getpid(), signal.SIGKILL)
    if finish:
        recording.finish()
""")


@pytest.fixture(scope="module")
def trajectory(tmp_path_factory):
    """A 20,000-step tutorial-design trajectory of 6 neurons, saved for the writer processes (float32 as stored)."""
    A = sc.create_connectivity(6)
    simulated = sc.simulate(A, 20_000, design=sc.Perturbation(), seed=3)
    directory = tmp_path_factory.mktemp("trajectory")
    data = directory / "trajectory.npz"
    arrays = {"activity": simulated.activity.astype(np.float32), "stimulation": simulated.stimulation.astype(np.uint8),
              "clamped": simulated.clamped.astype(bool)}
    np.savez(data, **arrays)
    (directory / "writer.py").write_text(WRITER)
    return {"A": A, "data": data, "writer": directory / "writer.py", **arrays}


def start_writer(trajectory, store, start, stop, *, seed, die=False, finish=False, pause=0.02):
    return subprocess.Popen([sys.executable, str(trajectory["writer"]), str(store), str(trajectory["data"]), str(start),
                             str(stop), str(seed), str(int(die)), str(int(finish)), str(pause)])


def reference(trajectory, rows=None, lag=1):
    rows = rows if rows is not None else trajectory["activity"].shape[0]
    return sc.estimate(trajectory["activity"][:rows], trajectory["stimulation"][:rows],
                       steps=trajectory["clamped"][:rows], lag=lag)


def assert_same_estimate(effect, stderr, expected):
    np.testing.assert_allclose(effect, expected.effect, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(stderr, expected.stderr, rtol=0, atol=TOLERANCE)


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def follow_in_thread(follower, **kwargs):
    outcome = {}

    def target():
        try:
            outcome["reason"] = follower.follow(**kwargs)
        except BaseException as error:  # surfaced by the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


# ----------------------------------------------------------------------------- the writer's side


def test_append_rows_keeps_the_convention(tmp_path):
    group = zarr.open_group(tmp_path / "rec.zarr", mode="w")
    group.create_array("activity", shape=(0, 3), chunks=(4, 3), dtype="float64")
    group.create_array("clamped", shape=(0,), chunks=(4,), dtype="bool")
    assert append_rows(group, activity=np.ones((5, 3)), clamped=np.ones(5, bool)) == 5
    # A writer that died mid-append left 3 rows past rows_complete: the next append overwrites them.
    group["activity"].resize((8, 3))
    group["activity"][5:8] = 99.0
    assert append_rows(group, activity=np.full((2, 3), 2.0), clamped=np.zeros(2, bool)) == 7
    assert group["activity"].shape == (7, 3)
    np.testing.assert_array_equal(group["activity"][5:7], 2.0)
    assert group.attrs[ROWS_COMPLETE] == 7
    with pytest.raises(ValueError, match="same number of rows"):
        append_rows(group, activity=np.ones((2, 3)), clamped=np.ones(3, bool))
    with pytest.raises(ValueError, match="shape"):
        append_rows(group, activity=np.ones((2, 4)))
    with pytest.raises(ValueError, match="nothing: no such array"):
        append_rows(group, nothing=np.ones(2))
    with pytest.raises(TypeError, match="zarr.Group"):
        append_rows("rec.zarr", activity=np.ones((2, 3)))


def test_growing_recording_checks(tmp_path):
    recording = GrowingRecording.create(tmp_path / "rec.zarr", 3, stimulation=False, clamped=False)
    with pytest.raises(ValueError, match="stimulation was given"):
        recording.append(np.zeros((2, 3)), stimulation=np.zeros((2, 3)))
    recording.append(np.zeros((2, 3)))
    recording.finish()
    assert zarr.open_group(tmp_path / "rec.zarr", mode="r").attrs[FINISHED] is True
    with pytest.raises(ValueError, match="already holds"):
        GrowingRecording.create(tmp_path / "rec.zarr", 3)
    with pytest.raises(ValueError, match="n_neurons must be >= 1"):
        GrowingRecording.create(tmp_path / "other.zarr", 0)
    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(ValueError, match="not a growing recording"):
        GrowingRecording.open(tmp_path / "plain.zarr")


# ----------------------------------------------------------------------------- the follower


@pytest.mark.subprocess
def test_follow_writers_at_random_times_one_killed_mid_append(trajectory, tmp_path):
    store, out = tmp_path / "rec.zarr", tmp_path / "live.zarr"
    GrowingRecording.create(store, 6, chunk_rows=700)
    follower = Follower(store, out, write_seconds=0.1)
    seen = []
    thread, outcome = follow_in_thread(follower, interval=0.01, on_poll=lambda f: seen.append(f.rows_consumed))
    first = start_writer(trajectory, store, 0, 9_000, seed=1, die=True)
    assert first.wait(timeout=60) == -signal.SIGKILL
    killed_at = zarr.open_group(store, mode="r").attrs[ROWS_COMPLETE]
    assert killed_at == 9_000 and zarr.open_group(store, mode="r")["activity"].shape[0] == 9_777
    wait_for(lambda: follower.rows_consumed >= 9_000)
    time.sleep(0.2)  # the follower polls on while the garbage rows sit past rows_complete
    assert follower.rows_consumed == 9_000, outcome
    second = start_writer(trajectory, store, 9_000, 20_000, seed=2, finish=True)
    assert second.wait(timeout=60) == 0
    thread.join(timeout=60)
    assert outcome.get("reason") == "finished", outcome
    assert follower.rows_consumed == follower.rows_complete == 20_000
    assert len(set(seen)) > 3, "the follower saw the recording grow"
    expected = reference(trajectory)
    assert follower.state.samples == expected.n_samples
    assert_same_estimate(follower.state.effect, follower.state.stderr, expected)
    # The finished recording itself, estimated at once, and the written output agree too.
    whole = sc.estimate_store(store)
    np.testing.assert_allclose(whole.effect, expected.effect, rtol=0, atol=TOLERANCE)
    written = read_follow_output(out)
    assert written["attrs"]["rows_consumed"] == 20_000 and written["attrs"]["finished"] is True
    assert_same_estimate(written["effect"], written["stderr"], expected)


def test_follow_pieces_that_split_chunks_and_lag(trajectory, tmp_path):
    """Every row once, whatever the cuts: pieces of 1 row, of a chunk and a half, across lag 3."""
    store = tmp_path / "rec.zarr"
    recording = GrowingRecording.create(store, 6, chunk_rows=64)
    follower = Follower(store, lag=3)
    rows = [1, 1, 2, 3, 96, 1, 200, 5, 700]
    t = 0
    for k in rows:
        recording.append(trajectory["activity"][t:t + k], trajectory["stimulation"][t:t + k],
                         trajectory["clamped"][t:t + k])
        t += k
        follower.poll()
        assert follower.rows_consumed == t
        if k == 96:
            follower.poll()  # nothing new: nothing folded twice
            assert follower.rows_consumed == t
    expected = reference(trajectory, t, lag=3)
    assert follower.state.samples == expected.n_samples
    assert_same_estimate(follower.state.effect, follower.state.stderr, expected)


# ----------------------------------------------------------------------------- catching up: windows read ahead

WINDOW = 2_800  # 4 chunks of 700: the catch-up tests make estimate()'s window this small to get several


@pytest.fixture
def finished_recording(trajectory, tmp_path, monkeypatch):
    """All 20,000 rows in chunks of 700, finished, with garbage rows past rows_complete; windows of WINDOW rows."""
    import streamcausal.io.recording as recording_module

    monkeypatch.setattr(recording_module, "default_chunk_steps", lambda width: 3_000)  # rounded to 4 chunks
    store = tmp_path / "rec.zarr"
    recording = GrowingRecording.create(store, 6, chunk_rows=700)
    recording.append(trajectory["activity"], trajectory["stimulation"], trajectory["clamped"])
    for name in ("activity", "stimulation", "clamped"):  # as a writer killed mid-append leaves them
        recording.group[name].resize((20_777, *recording.group[name].shape[1:]))
    recording.group["activity"][20_000:] = 1e6
    recording.finish()
    return store


def spy_on_reads(follower, fail_at=None):
    """Record every read (start, stop, thread name) of the follower's source; raise OSError at read number fail_at."""
    reads, read = [], follower.source.read

    def spied(start, stop):
        reads.append((start, stop, threading.current_thread().name))
        if fail_at is not None and len(reads) == fail_at:
            raise OSError(f"disk gone at rows {start}:{stop}")
        return read(start, stop)

    follower.source.read = spied
    return reads


def reader_threads():
    return [thread for thread in threading.enumerate() if thread.name.startswith("streamcausal-read")]


@pytest.mark.parametrize("threaded", [True, False], ids=["read-ahead", "sequential"])
def test_follow_catch_up_reads_aligned_windows_once(trajectory, finished_recording, monkeypatch, threaded):
    """A catch-up reads windows aligned to the recording's chunks, each row once, none past rows_complete."""
    import numba

    import streamcausal.io.recording as recording_module

    monkeypatch.setattr(recording_module, "_READ_AHEAD", threaded)
    threads = numba.get_num_threads()
    follower = Follower(finished_recording)
    reads = spy_on_reads(follower)
    assert follower.follow(interval=0.01) == "finished"
    bounds = [(start, stop) for start, stop, _ in reads]
    assert bounds == [(a, min(a + WINDOW, 20_000)) for a in range(0, 20_000, WINDOW)]
    on_reader = {name.startswith("streamcausal-read") for _, _, name in reads}
    assert on_reader == {threaded}
    assert not reader_threads() and numba.get_num_threads() == threads
    expected = reference(trajectory)
    assert follower.rows_consumed == 20_000 and follower.state.samples == expected.n_samples
    assert_same_estimate(follower.state.effect, follower.state.stderr, expected)


def test_follow_read_ahead_is_bit_identical_to_sequential(finished_recording, monkeypatch):
    import streamcausal.io.recording as recording_module

    states = []
    for threaded in (True, False):
        monkeypatch.setattr(recording_module, "_READ_AHEAD", threaded)
        follower = Follower(finished_recording)
        follower.poll()
        states.append(follower.state)
    np.testing.assert_array_equal(states[0].effect, states[1].effect)
    np.testing.assert_array_equal(states[0].stderr, states[1].stderr)


def test_follow_stopped_mid_catch_up_resumes_without_a_row_twice(trajectory, finished_recording, monkeypatch,
                                                                  tmp_path):
    """Stop set while window 3 is folded (window 4 already read ahead): 3 windows counted, the rest after resume."""
    import streamcausal.io.recording as recording_module

    monkeypatch.setattr(recording_module, "_READ_AHEAD", True)
    out = tmp_path / "live.zarr"
    follower = Follower(finished_recording, out)
    reads = spy_on_reads(follower)
    stop = threading.Event()
    update = follower.estimator.update

    def update_then_stop(*pieces):
        update(*pieces)
        if follower.rows_consumed == 3 * WINDOW:
            stop.set()

    follower.estimator.update = update_then_stop
    assert follower.follow(interval=0.01, stop=stop) == "stopped"
    # Window 4 was read ahead, or its read was cancelled before it began: either way it is not counted.
    assert follower.rows_consumed == 3 * WINDOW and len(reads) in (3, 4) and not reader_threads()
    assert read_follow_output(out)["attrs"]["rows_consumed"] == 3 * WINDOW
    resumed = Follower(finished_recording, out, mode="r+")
    assert resumed.rows_consumed == 3 * WINDOW
    reads = spy_on_reads(resumed)
    assert resumed.follow(interval=0.01) == "finished"
    assert reads[0][:2] == (3 * WINDOW, 4 * WINDOW) and reads[-1][1] == 20_000
    expected = reference(trajectory)
    assert resumed.state.samples == expected.n_samples
    assert_same_estimate(resumed.state.effect, resumed.state.stderr, expected)


def test_follow_reader_error_reaches_the_caller_unchanged(trajectory, finished_recording, monkeypatch):
    """A failed read ahead is raised when its window is due, after the windows before it were folded."""
    import streamcausal.io.recording as recording_module

    monkeypatch.setattr(recording_module, "_READ_AHEAD", True)
    follower = Follower(finished_recording)
    spy_on_reads(follower, fail_at=3)
    with pytest.raises(OSError, match=f"disk gone at rows {2 * WINDOW}:{3 * WINDOW}"):
        follower.poll()
    assert follower.rows_consumed == 2 * WINDOW and not reader_threads()
    spy_on_reads(follower)  # the disk is back: the next poll goes on from there
    follower.poll()
    expected = reference(trajectory)
    assert follower.rows_consumed == 20_000 and follower.state.samples == expected.n_samples
    assert_same_estimate(follower.state.effect, follower.state.stderr, expected)


def test_follow_stops_at_target_se_and_names_the_last_sources(trajectory, tmp_path):
    store = tmp_path / "rec.zarr"
    recording = GrowingRecording.create(store, 6, chunk_rows=500)
    follower = Follower(store, target_se=0.02)
    for t in range(0, 20_000, 250):
        recording.append(trajectory["activity"][t:t + 250], trajectory["stimulation"][t:t + 250],
                         trajectory["clamped"][t:t + 250])
        follower.poll()
        if follower.stop_reason == "target_se":
            break
    state = follower.state
    assert follower.stop_reason == "target_se" and t < 19_750
    assert state.reached_target.all() and np.all(state.source_mean_se <= 0.02)
    assert state.last_to_reach and set(state.last_to_reach) <= set(range(6))
    # Just before the last poll, the last sources were still above the target.
    before = reference(trajectory, t)
    from streamcausal.live import _source_mean_se

    assert np.all(_source_mean_se(before.stderr)[list(state.last_to_reach)] > 0.02)
    assert follower.follow(interval=0.01) == "target_se"


def test_follower_refuses_bad_input(trajectory, tmp_path):
    store = tmp_path / "rec.zarr"
    GrowingRecording.create(store, 6)
    with pytest.raises(ValueError, match="lag must be >= 1"):
        Follower(store, lag=0)
    with pytest.raises(ValueError, match="target_se must be > 0"):
        Follower(store, target_se=-1.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        Follower(store, tmp_path / "out.zarr", mode="x")
    with pytest.raises(TypeError, match="activity must be a string"):
        Follower(store, activity=3)
    with pytest.raises(ValueError, match="no such store"):
        Follower(tmp_path / "missing.zarr")
    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(ValueError, match="not a growing recording"):
        Follower(tmp_path / "plain.zarr")
    follower = Follower(store, steps="nope")
    append_rows(zarr.open_group(store, mode="r+"), activity=trajectory["activity"][:10],
                stimulation=trajectory["stimulation"][:10], clamped=trajectory["clamped"][:10])
    with pytest.raises(ValueError, match="steps array 'nope' not found"):
        follower.poll()
    Follower(store, tmp_path / "out.zarr").write(force=True)
    with pytest.raises(ValueError, match="already holds a follow output"):
        Follower(store, tmp_path / "out.zarr")
    with pytest.raises(ValueError, match="lag differs"):
        Follower(store, tmp_path / "out.zarr", lag=2, mode="r+")


def test_follow_refuses_a_shrinking_recording(trajectory, tmp_path):
    store = tmp_path / "rec.zarr"
    recording = GrowingRecording.create(store, 6)
    recording.append(trajectory["activity"][:100], trajectory["stimulation"][:100], trajectory["clamped"][:100])
    follower = Follower(store)
    follower.poll()
    GrowingRecording.create(store, 6, overwrite=True)
    with pytest.raises(ValueError, match="replaced or truncated"):
        follower.poll()


# ----------------------------------------------------------------------------- the command


def run_cli(*args):
    """`streamcausal follow` through cli.main, registered here if the integrator has not yet."""
    saved = dict(cli.SUBCOMMANDS)
    cli.SUBCOMMANDS.setdefault("follow", follow_command)
    try:
        return cli.main([str(arg) for arg in args])
    finally:
        cli.SUBCOMMANDS.clear()
        cli.SUBCOMMANDS.update(saved)


FOLLOW_PROCESS = ("from streamcausal import cli; from streamcausal.cli import follow; "
                  "cli.SUBCOMMANDS.setdefault('follow', follow); raise SystemExit(cli.main())")


def test_cli_follow_errors_are_one_line(trajectory, tmp_path, capsys):
    store = tmp_path / "rec.zarr"
    recording = GrowingRecording.create(store, 6)
    recording.append(trajectory["activity"][:50], trajectory["stimulation"][:50], trajectory["clamped"][:50])
    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    (tmp_path / "used.zarr").mkdir()
    (tmp_path / "used.zarr" / "zarr.json").write_text("{}")
    cases = [
        (["plain.zarr", "--output", "o.zarr"], "not a growing recording"),
        (["missing.zarr", "--output", "o.zarr"], "RECORDING: no such store"),
        (["rec.zarr", "--output", "used.zarr"], "already exists; pass --resume"),
        (["rec.zarr", "--output", "o.zarr", "--resume"], "--resume: no follow output"),
        (["rec.zarr", "--output", "rec.zarr"], "is the recording itself"),
        (["rec.zarr", "--output", "o.zarr", "--serve", "host:port"], "--serve: address must be"),
        (["rec.zarr", "--output", "o.zarr", "--seed", "1"], "--seed applies to run stores"),
        (["rec.zarr", "--output", "o.zarr", "--stimulation", "laser"], "--stimulation 'laser': no such array"),
        (["rec.zarr", "--output", "o.zarr", "--interval", "0"], "--interval"),
        (["rec.zarr", "--output", "o.zarr", "--resume", "--overwrite"], "not allowed with"),
    ]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for args, message in cases:
            assert run_cli("follow", *args) == 2, args
            err = capsys.readouterr().err
            assert message in err and err.count("\n") == 1, (args, err)
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "o.zarr").exists()


def test_cli_follow_target_se_says_which_sources(trajectory, tmp_path, capsys):
    store = tmp_path / "rec.zarr"
    recording = GrowingRecording.create(store, 6)
    for t in range(0, 20_000, 2_000):
        recording.append(trajectory["activity"][t:t + 2_000], trajectory["stimulation"][t:t + 2_000],
                         trajectory["clamped"][t:t + 2_000])
    assert run_cli("follow", store, "--output", tmp_path / "o.zarr", "--target-se", "0.5", "--no-progress") == 0
    out = capsys.readouterr().out
    assert "target SE 0.5 reached by every source; the last to reach it: source" in out


@pytest.mark.subprocess
def test_cli_follow_killed_and_resumed(trajectory, tmp_path):
    store, out = tmp_path / "rec.zarr", tmp_path / "live.zarr"
    GrowingRecording.create(store, 6, chunk_rows=512)
    writer = start_writer(trajectory, store, 0, 20_000, seed=5, finish=True, pause=0.08)
    command = [sys.executable, "-c", FOLLOW_PROCESS, "follow", str(store), "--output", str(out), "--interval", "0.05",
               "--write-seconds", "0.1", "--no-progress"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    consumed = 0
    while time.monotonic() < deadline and consumed == 0:
        time.sleep(0.05)
        try:
            consumed = zarr.open_group(out, mode="r").attrs.get("rows_consumed", 0)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError, json.JSONDecodeError):
            consumed = 0
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    killed_at = read_follow_output(out)["attrs"]["rows_consumed"]
    assert 0 < killed_at < 20_000, "killed part way"
    second = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert writer.wait(timeout=60) == 0
    assert f"resuming after row {killed_at:,}" in second.stdout or "resuming after row" in second.stdout
    written = read_follow_output(out)
    assert written["attrs"]["rows_consumed"] == 20_000
    assert_same_estimate(written["effect"], written["stderr"], reference(trajectory))


@pytest.mark.subprocess
def test_cli_follow_ctrl_c_leaves_it_resumable(trajectory, tmp_path):
    store, out = tmp_path / "rec.zarr", tmp_path / "live.zarr"
    recording = GrowingRecording.create(store, 6)
    recording.append(trajectory["activity"][:5_000], trajectory["stimulation"][:5_000], trajectory["clamped"][:5_000])
    command = [sys.executable, "-c", FOLLOW_PROCESS, "follow", str(store), "--output", str(out), "--interval", "0.05",
               "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("streamcausal follow:"):
            break
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "is resumable" in err and "--resume" in err
    recording.append(trajectory["activity"][5_000:], trajectory["stimulation"][5_000:], trajectory["clamped"][5_000:])
    recording.finish()
    done = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    written = read_follow_output(out)
    assert_same_estimate(written["effect"], written["stderr"], reference(trajectory))


@pytest.mark.subprocess
def test_follow_a_run_store_while_streamcausal_run_writes_it(tmp_path):
    store = tmp_path / "run.zarr"
    run = subprocess.Popen([sys.executable, "-m", "streamcausal", "run", "--neurons", "20", "--steps", "120000",
                            "--chunk-steps", "4000", "--seeds", "1", "--store", str(store), "--save-trajectory",
                            "--checkpoint-seconds", "0", "--no-report", "--no-progress"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not is_run_store(store):
        assert time.monotonic() < deadline and run.poll() is None, "the run store appears"
        time.sleep(0.02)
    follower = Follower(store, tmp_path / "live.zarr", activity="seed_0/activity", stimulation="seed_0/stimulation",
                        steps="seed_0/clamped")
    seen = []
    reason = follower.follow(interval=0.02, timeout=120, on_poll=lambda f: seen.append(f.rows_complete))
    _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert reason == "finished" and follower.rows_consumed == 120_000
    assert any(0 < rows < 120_000 for rows in seen), "rows were followed while the run wrote them"
    expected = sc.estimate_store(store, "seed_0/activity", "seed_0/stimulation", "seed_0/clamped")
    assert_same_estimate(follower.state.effect, follower.state.stderr, expected)
    assert follower.state.convergence[-1]["score"] is not None  # the run's connectivity is known
