"""Resource limits checked before work starts: step counts, exact counts, memory (issue 11, item 4)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import streamcausal as sc
from streamcausal._validation import check_int
from streamcausal.cli import main
from streamcausal.engine.simulation import MAX_STEPS, available_memory, memory_needed


class _Started(Exception):
    """Raised by a progress callback: the run had started instead of being refused."""


def _stop(event):
    raise _Started


# ------------------------------------------------------------------ counts


@pytest.mark.parametrize("value", [1e30, 2.0**53 + 2, np.float64(1e20), -1e30])
def test_floats_beyond_exact_integers_are_refused(value):
    with pytest.raises(ValueError, match=r"n_steps must be an exact integer.*2\*\*53"):
        check_int(value, "n_steps")


def test_floats_up_to_2_to_the_53_stay_exact():
    assert check_int(1e15, "n_steps") == 10**15
    assert check_int(2.0**53, "n_steps") == 2**53


@pytest.mark.parametrize("design", [sc.Perturbation(), sc.Observation()], ids=["perturbation", "observation"])
@pytest.mark.parametrize("n_steps", [MAX_STEPS + 1, 2**63, 10**30, 1e30])
def test_step_counts_beyond_max_steps_are_refused_before_work(design, n_steps):
    with pytest.raises(ValueError, match="n_steps"):
        sc.run(np.eye(3) * 0.1, n_steps, design=design, progress=_stop)


def test_chunk_steps_beyond_max_steps_are_refused():
    with pytest.raises(ValueError, match="chunk_steps"):
        sc.run(np.eye(3) * 0.1, 100, chunk_steps=2**64, progress=_stop)


@pytest.mark.parametrize("words", [
    ["--steps", "1e30", "--observe"], ["--steps", "1e30"], ["--steps", "1e16"],
    ["--chunk-steps", "1e30"], ["--neurons", "1e8"],
])
def test_huge_counts_on_the_command_line_are_one_line(words, capsys):
    status = main(["run", *words, "--seeds", "1", "--no-progress", "--no-report"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and words[0] in err[0], err


# ------------------------------------------------------------------ memory


def test_memory_needed_adds_its_parts():
    dense = memory_needed(1000, 8192, sc.Perturbation(), n_steps=10**6)
    assert dense["connectivity"] == 8 * 1000**2
    assert dense["chunk buffers"] == 2 * 8 * 8192 * 1000
    assert dense["trajectory buffers"] == 0 and dense["store"] == 0
    saved = memory_needed(1000, 8192, sc.Perturbation(), True, n_steps=10**6, store=True)
    assert saved["trajectory buffers"] > 2 * dense["chunk buffers"] and saved["store"] == 8 * 1000**2
    sparse = memory_needed(10**5, 1024, sc.Perturbation(p=0.02), nnz=10**7)
    assert sparse["connectivity"] < 8 * 10**10 and sparse["moments"] >= 5 * 8 * 10**10
    assert memory_needed(10, 10**9, sc.Observation(), n_steps=100)["chunk buffers"] == 2 * 8 * 100 * 10


def test_available_memory_is_a_positive_count():
    available = available_memory()
    assert available is None or available > 0


def test_a_chunk_too_large_for_memory_is_refused_before_work():
    with pytest.raises(ValueError, match=r"chunk_steps=10000000000000 needs about .* is available; use .*chunk_steps"):
        sc.run(np.eye(300) * 0.1, 10**14, chunk_steps=10**13, progress=_stop)


def test_a_network_too_large_for_memory_is_refused_before_work():
    import scipy.sparse

    A = scipy.sparse.identity(10**6, format="csc") * 0.1  # a 10**6-neuron sparse A: moments of 8 TB
    with pytest.raises(ValueError, match=r"n_neurons=1000000.*sparse connectivity"):
        sc.run(A, 100, progress=_stop)


@pytest.mark.parametrize("words, option", [
    (["--neurons", "100000"], "--neurons"),
    (["--chunk-steps", "1e12", "--steps", "1e13"], "--chunk-steps"),
])
def test_the_command_line_refuses_a_run_too_large_for_memory_in_one_line(words, option, capsys):
    status = main(["run", *words, "--seeds", "1", "--no-progress", "--no-report"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1, err
    advice = f"use {'a smaller' if 'chunk' in option else 'fewer'} {option}"
    assert "needs about" in err[0] and "is available" in err[0] and advice in err[0]


_PEAK_PROBE = textwrap.dedent("""
    import json, sys
    import numpy as np
    import streamcausal as sc
    from streamcausal.engine.simulation import memory_needed

    def status(name):
        for line in open("/proc/self/status"):
            if line.startswith(name + ":"):
                return 1024 * int(line.split()[1])

    n, chunk_steps, n_steps = (int(word) for word in sys.argv[1:])
    A = sc.create_connectivity(n, 0.1, random_state=1)
    sc.run(A, 2 * 2048, chunk_steps=2048)  # compiles: the kernels' own memory is not the run's
    with open("/proc/self/clear_refs", "w") as file:
        file.write("5")  # the peak resident size (VmHWM) starts again from here
    base = status("VmRSS")
    sc.run(A, n_steps, chunk_steps=chunk_steps)
    parts = memory_needed(n, chunk_steps, sc.Perturbation(), nnz=int(np.count_nonzero(A)), n_steps=n_steps)
    parts.pop("connectivity")  # A is held before the run starts
    print(json.dumps({"measured": status("VmHWM") - base, "estimated": sum(parts.values())}))
""")


@pytest.mark.parametrize("n, chunk_steps, n_steps", [(600, 40_000, 120_000), (1000, 4096, 16_384)])
def test_the_memory_estimate_bounds_the_measured_peak(tmp_path, n, chunk_steps, n_steps):
    """The estimate counts what a run allocates: at least its measured peak RSS, at most 2.5x it (+32 MiB).

    The RSS is lower than the allocation because the tutorial's design fills only half
    of the chunk buffers (one sample per two steps).
    """
    probe = tmp_path / "probe.py"
    probe.write_text(_PEAK_PROBE)
    try:
        completed = subprocess.run([sys.executable, str(probe), str(n), str(chunk_steps), str(n_steps)],
                                   capture_output=True, text=True, timeout=300, check=True)
    except subprocess.CalledProcessError as error:
        if "clear_refs" in error.stderr:
            pytest.skip("this kernel cannot reset the peak RSS (/proc/self/clear_refs)")
        raise
    figures = json.loads(completed.stdout)
    measured, estimated = figures["measured"], figures["estimated"]
    assert measured <= estimated <= 2.5 * measured + 32 * 2**20, figures
