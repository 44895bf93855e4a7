"""Shared fixtures: the tiny corpus and a tiny dense run are built once per test run, for all
xdist workers together (the first worker to need one builds it under a file lock, the others
wait and reuse it).

Compiled XLA programs are shared too: every test process, and every subprocess a test starts,
uses one persistent JAX compilation cache per test run (the run's xdist id), so the many tiny
training runs compile each program once instead of once per process. It changes no result:
a cached executable is the one the compiler would produce again.
"""

import contextlib
import fcntl
import os
import subprocess
import sys
import tempfile
from pathlib import Path

JAX_CACHE = Path(tempfile.gettempdir()) / (
    f"amnet-tests-jax-cache-{os.environ.get('PYTEST_XDIST_TESTRUNUID', os.getpid())}")
os.environ.update({"JAX_COMPILATION_CACHE_DIR": str(JAX_CACHE),
                   "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                   "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"})

import jax  # noqa: E402
import pytest  # noqa: E402

from amnet.data.corpus import spoken_commands  # noqa: E402
from tests.helpers import HANG_GUARD_S, ROOT, TINY_SEED, cpu_env, tiny_name  # noqa: E402

jax.config.update("jax_compilation_cache_dir", str(JAX_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: an end-to-end run through an entry point (tens of "
                            "seconds); `pytest -m 'not slow'` is the quick loop, make test runs "
                            "everything")


@contextlib.contextmanager
def _shared(tmp_path_factory, name: str):
    """(path, built): a directory shared by the test run's workers, and whether it is already
    complete; the caller builds it when not, holding the lock, and it is then marked done."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path, done = root / f"shared-{name}", root / f"shared-{name}.done"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield path, done.exists()
            done.touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """A data dir with the tiny corpus, generations g0 and g1 (one synthesis process)."""
    with _shared(tmp_path_factory, "tfds") as (data_dir, built):
        if not built:
            for generation in (0, 1):
                spoken_commands.make_builder("tiny", generation, data_dir=str(data_dir),
                                             seed=TINY_SEED,
                                             num_workers=1).download_and_prepare()
    return data_dir


@pytest.fixture(scope="session")
def tiny_dense_run(tiny_data_dir, tmp_path_factory):
    """A finished tiny dense RNN-T run on g0 (`experiments.train`, baseline.py:tiny)."""
    with _shared(tmp_path_factory, "dense-run") as (workdir, built):
        if not built:
            out = subprocess.run(
                [sys.executable, "-m", "experiments.train",
                 f"--config={ROOT}/experiments/configs/baseline.py:tiny", f"--workdir={workdir}",
                 f"--config.data.name={tiny_name(0)}", f"--config.data.data_dir={tiny_data_dir}"],
                cwd=ROOT, env=cpu_env(), text=True, capture_output=True, timeout=HANG_GUARD_S)
            assert out.returncode == 0, out.stderr[-4000:]
    return Path(workdir)
