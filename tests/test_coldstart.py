"""Cold start: the compiling notice and ETA on an empty Numba cache, one signature per kernel, compile once for workers."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import streamcausal as sc
from streamcausal import distributed
from streamcausal.cli import display
from streamcausal.engine import Plan
from streamcausal.progress import Progress


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self._tty = tty

    def isatty(self):
        return self._tty


class _Clock:
    """A fake ``time.time`` that tests move by hand."""

    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def _eta_seconds(line):
    """The ETA of a progress line in seconds (None when tqdm shows '?')."""
    eta = line.split("ETA ")[1].split()[0]
    if "?" in eta:
        return None
    seconds = 0
    for part in eta.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds


def test_compiling_notice_once_then_rate_from_the_first_chunk():
    clock = _Clock()
    stream = _Stream(tty=False)
    bar = display.ProgressBar(stream, clock=clock)
    total = 200_000
    clock.now += 0.8  # import and cluster start
    bar(Progress(0, total, phase="compiling"))
    bar(Progress(0, total, phase="compiling"))  # a second notice is not shown
    assert stream.getvalue() == display.ProgressBar.COMPILING + "\n"
    clock.now += 40.0  # compiling
    bar(Progress(4_096, total, seed=0))  # the first chunk: 2 %, and 40 s in
    clock.now += 31.0  # more than LOG_SECONDS without a tenth, but the clock restarted at the first chunk
    assert stream.getvalue().count("\n") == 1  # no line, no ETA, before chunks flow
    bar(Progress(104_096, total, seed=1))  # 100,000 steps in 31 s after the first chunk
    clock.now += 1.0
    bar(Progress(total, total, seed=0))
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == display.ProgressBar.COMPILING
    assert sum(display.ProgressBar.COMPILING in line for line in lines) == 1
    progress = lines[1:]
    assert [line.split()[1] for line in progress] == ["52.0%", "100.0%"]
    rate = float(progress[0].split("steps/s")[0].split()[-1].rstrip("k")) * 1e3
    assert rate == pytest.approx(100_000 / 31, rel=0.01)  # not 104,096 / 71.8
    assert _eta_seconds(progress[0]) == pytest.approx(96_000 / (100_000 / 31), abs=1)  # 29 s, not minutes
    assert _eta_seconds(progress[-1]) == 0


def test_compiling_notice_on_a_terminal_and_no_eta_from_the_compile_time():
    clock = _Clock()
    stream = _Stream(tty=True)
    bar = display.ProgressBar(stream, clock=clock)
    bar(Progress(0, 100_000, phase="compiling"))
    clock.now += 50.0
    bar(Progress(2_000, 100_000, seed=0))
    clock.now += 1.0
    bar(Progress(12_000, 100_000, seed=0))
    bar.close()
    text = stream.getvalue()
    assert text.startswith(display.ProgressBar.COMPILING + "\n")
    frames = [frame.strip() for frame in text.split("\n", 1)[1].strip("\n").split("\r") if frame.strip()]
    etas = [_eta_seconds(frame) for frame in frames if "ETA" in frame]
    assert etas and all(eta is None or eta <= 9 for eta in etas)  # 88,000 steps at 10,000/s
    assert _eta_seconds(frames[-1]) == pytest.approx(9, abs=1)


def test_warm_cache_shows_no_notice_and_keeps_the_command_clock():
    clock = _Clock()
    stream = _Stream(tty=False)
    bar = display.ProgressBar(stream, clock=clock)
    clock.now += 2.0
    bar(Progress(50_000, 100_000, seed=0))
    bar.close()
    (line,) = stream.getvalue().splitlines()
    assert display.ProgressBar.COMPILING not in stream.getvalue()
    assert "25.0k steps/s" in line and "ETA 00:02" in line  # counted from the start of the command, as before


def test_progress_phase_is_checked():
    assert Progress(1, 2).phase == "running"
    with pytest.raises(ValueError, match="phase.*'warming'"):
        Progress(1, 2, phase="warming")


_PROBE = '''
import sys
import numpy as np
from streamcausal import _jit

def inner(x, lo):
    return x + lo

def outer(x):
    count = 0
    for _ in range(3):
        count = inner(x, count)
    return inner(count, 0)

inner = _jit.kernel(inner)
outer = _jit.kernel(outer)
events = []
with _jit.notify_compiling(lambda: events.append("compiling")):
    assert outer(np.int64(2)) == 6
print(len(events), len(inner.signatures), *inner.signatures)
'''


@pytest.fixture
def probe(tmp_path):
    """A script with two tiny kernels, run in fresh processes that share an empty Numba cache."""
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(_PROBE))
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def run():
        done = subprocess.run([sys.executable, str(script)], env=environment, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    return run


def test_compile_notice_fires_on_a_cold_cache_only_and_calls_compile_one_signature(probe):
    cold = probe()
    assert cold[0] == "1"  # compiling: notified once
    assert cold[1:] == ["1", "(int64,", "int64)"]  # inner(x, 0) and inner(x, count): one signature, no literal
    warm = probe()
    assert warm[:2] == ["0", "0"]  # outer loaded from the cache (inner with it): no notice


def test_kernels_compile_once_in_the_parent_and_workers_load_them(cluster_client, monkeypatch):
    calls = []
    compile_kernels = distributed.compile_kernels

    def counted(plan):
        calls.append(plan.design)
        return compile_kernels(plan)

    def compiled_on_worker():
        import numba

        from streamcausal._kernels import moments, network, rng

        return sum(sum(value.stats.cache_misses.values()) for module in (moments, network, rng)
                   for value in vars(module).values() if isinstance(value, numba.core.dispatcher.Dispatcher))

    monkeypatch.setattr(distributed, "compile_kernels", counted)
    before = cluster_client.run(compiled_on_worker)
    A = sc.create_connectivity(6)
    design = sc.Perturbation(every=3, clamp="stimulated")
    result = sc.run(A, 3_001, design=design, seed=sc.Seeds([4, 5], client=cluster_client), chunk_steps=1000)
    assert calls == [design]  # once, in this process, before the tasks
    assert cluster_client.run(compiled_on_worker) == before  # the workers compiled nothing
    alone = sc.run(A, 3_001, design=design, seed=4, chunk_steps=1000)
    assert np.array_equal(result.per_seed[4].moments.comoment, alone.moments.comoment)


def test_compile_kernels_takes_the_seeds_code_path(monkeypatch):
    from streamcausal._kernels import network

    plans = {
        "clamp all": (sc.Perturbation(), False, "_clamp_all_moments"),
        "clamp all, trajectory": (sc.Perturbation(), True, "_clamp_all_samples"),
        "observation": (sc.Observation(), False, "_sequential_chunk"),
    }
    for design, trajectory, kernel in plans.values():
        called = []
        original = getattr(network, kernel)
        monkeypatch.setattr(network, kernel, lambda *args, original=original, called=called: (
            called.append(1), original(*args))[1])
        plan = Plan(sc.create_connectivity(6), 10, design, 10, "default", save_trajectory=trajectory)
        distributed.compile_kernels(plan)
        assert called, kernel
        monkeypatch.undo()
