"""Shared fixtures: the tiny corpus and a tiny dense run are built once per test session."""

import subprocess
import sys
from pathlib import Path

import pytest

from amnet.data import spoken_commands

TINY_SEED = 7


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """A data dir with the tiny corpus, generations g0 and g1 (one synthesis process)."""
    data_dir = tmp_path_factory.mktemp("tfds")
    for generation in (0, 1):
        spoken_commands.make_builder("tiny", generation, data_dir=str(data_dir), seed=TINY_SEED,
                                     num_workers=1).download_and_prepare()
    return data_dir


def tiny_name(generation: int) -> str:
    return f"spoken_commands/tiny_g{generation}_s{TINY_SEED}"


@pytest.fixture(scope="session")
def tiny_dense_run(tiny_data_dir, tmp_path_factory):
    """A finished tiny dense RNN-T run on g0 (`experiments.train`, baseline.py:tiny)."""
    from tests.test_train import ROOT, _env

    workdir = tmp_path_factory.mktemp("runs") / "dense"
    out = subprocess.run(
        [sys.executable, "-m", "experiments.train",
         f"--config={ROOT}/experiments/configs/baseline.py:tiny", f"--workdir={workdir}",
         f"--config.data.name={tiny_name(0)}", f"--config.data.data_dir={tiny_data_dir}"],
        cwd=ROOT, env=_env(), text=True, capture_output=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return Path(workdir)
