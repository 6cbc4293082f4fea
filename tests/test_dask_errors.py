"""Dask errors are quiet and clear: a failed task's cause once, an unguarded script one error (issue 11, item 5)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import streamcausal as sc
from streamcausal.distributed import MAIN_GUARD_ADVICE, _importing_main_in_a_child

# A Dask worker preload (test only): every seed task fails as on a full disk. Dask loads it in
# each worker process from the configuration the worker inherits, so the library needs no hook.
_FULL_DISK_PRELOAD = '''
import errno


def dask_setup(worker):
    import streamcausal.distributed as module

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    module.run_seed = full_disk
'''


def _environment(**extra):
    environment = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    environment.pop("DASK_LOGGING__DISTRIBUTED", None)  # Dask's default logging, as a user has it
    return environment


def test_a_failing_task_prints_its_cause_once_in_one_line(tmp_path):
    preload = tmp_path / "full_disk.py"
    preload.write_text(_FULL_DISK_PRELOAD)
    environment = _environment(DASK_DISTRIBUTED__WORKER__PRELOAD=f'["{preload}"]')
    completed = subprocess.run(
        [sys.executable, "-m", "streamcausal", "run", "--seeds", "2", "--workers", "2", "--steps", "10000",
         "--no-progress", "--no-report"],
        capture_output=True, text=True, env=environment, timeout=300, cwd=tmp_path,
    )
    lines = completed.stderr.strip().splitlines()
    assert completed.returncode == 1, completed.stderr
    assert lines == ["streamcausal: error: [Errno 28] No space left on device"], completed.stderr  # no "Compute Failed"


class _FailingSeeds:
    """A worker plugin (test only) that makes every seed task fail, and undoes it on removal."""

    name = "streamcausal-test-failing-seeds"

    def setup(self, worker):
        import streamcausal.distributed as module

        def full_disk(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        self.original, module.run_seed = module.run_seed, full_disk

    def teardown(self, worker):
        import streamcausal.distributed as module

        module.run_seed = self.original


def test_a_failing_task_raises_its_own_type_and_message(cluster_client):
    from distributed import WorkerPlugin

    plugin = type("FailingSeeds", (_FailingSeeds, WorkerPlugin), {})()
    cluster_client.register_plugin(plugin, name=_FailingSeeds.name)
    try:
        with pytest.raises(OSError, match="No space left on device") as caught:
            sc.run(np.eye(3) * 0.1, 100, seed=sc.Seeds(2, client=cluster_client))
        assert caught.value.errno == errno.ENOSPC
    finally:
        cluster_client.unregister_worker_plugin(_FailingSeeds.name)


def test_only_a_spawned_child_importing_main_counts_as_one():
    assert not _importing_main_in_a_child()


def test_a_script_without_a_main_guard_gets_one_error_saying_what_to_add(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent("""
        import streamcausal as sc

        A = sc.create_connectivity(6)
        result = sc.run(A, 10_000, seed=sc.Seeds(2, workers=2))
        print(result.score(A))
    """))
    completed = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                               env=_environment(), timeout=300, cwd=tmp_path)
    lines = completed.stderr.strip().splitlines()
    assert completed.returncode == 1
    assert len(lines) < 15, completed.stderr  # was 478 lines
    assert lines[-1].startswith("RuntimeError: ") and MAIN_GUARD_ADVICE in lines[-1], completed.stderr
    assert completed.stderr.count("__main__") == 1
