"""Reliability: preemption (SIGTERM), SIGKILL at random steps, a corrupted newest checkpoint,
non-finite steps, and no pickle on any loading path."""

import json
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amnet import build, trainer
from amnet.rnnt import frontend, objective
from amnet.training import checkpointing, optim, parallel
from amnet.training import step as train_step
from amnet.training.metric_writers import read_metrics
from benchmarks.models import synthetic_batch
from experiments.configs import baseline
from tests.helpers import (
    CHARACTERS,
    HANG_GUARD_S,
    ROOT,
    cpu_env,
    final_params,
    leaves,
    run_command,
    tiny_name,
    train_command,
)

STEPS = ["--config.train.steps=30", "--config.train.checkpoint_every=3",
         "--config.eval.test_decoders=greedy",
         "--config.train.eval_every=100", "--config.train.eval_batches=1",
         "--config.train.log_every=2"]


def _checkpoint_steps(workdir):
    latest = Path(workdir) / "checkpoints" / "latest"
    return sorted(int(p.name) for p in latest.glob("*") if p.name.isdigit()) \
        if latest.exists() else []


def _start(workdir, data_dir, *extra):
    return subprocess.Popen(train_command(workdir, data_dir, *STEPS, *extra), cwd=ROOT,
                            env=cpu_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _logged_lines(workdir) -> int:
    """Complete lines of metrics.jsonl (a line being written is not counted)."""
    path = Path(workdir) / "metrics.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _wait_for(condition, process, what):
    """Polls `condition()` while `process` runs; only a hang (HANG_GUARD_S) fails on time."""
    deadline = time.monotonic() + HANG_GUARD_S
    while process.poll() is None:
        if condition():
            return
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"hang: no {what} after {HANG_GUARD_S} s")
        time.sleep(0.02)
    _, err = process.communicate()
    raise AssertionError(f"the run exited ({process.returncode}) before {what}:\n{err[-3000:]}")


def _wait_for_checkpoint(process, workdir, at_least):
    _wait_for(lambda: (_checkpoint_steps(workdir) or [0])[-1] >= at_least, process,
              f"checkpoint >= {at_least}")
    return _checkpoint_steps(workdir)[-1]


@pytest.mark.slow
def test_chaos_kills_preemption_and_a_corrupt_checkpoint_end_in_identical_params(
        tiny_data_dir, tmp_path):
    """An uninterrupted run vs one that is SIGKILLed at 2 random steps, preempted with
    SIGTERM once, and has its newest checkpoint truncated, resuming after each fault."""
    run_command(train_command(tmp_path / "whole", tiny_data_dir, *STEPS))
    chaos = tmp_path / "chaos"
    rng = random.Random(20261126)
    kills = sorted(rng.sample(range(3, 22, 3), 2))
    resume = []
    for target in kills:
        process = _start(chaos, tiny_data_dir, *resume)
        _wait_for_checkpoint(process, chaos, target)
        time.sleep(rng.uniform(0.0, 0.5))  # somewhere within the following steps
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
        resume = ["--resume"]

    # Preemption: SIGTERM saves a checkpoint after the step in flight and exits cleanly.
    start_steps, logged = _checkpoint_steps(chaos), _logged_lines(chaos)
    process = _start(chaos, tiny_data_dir, "--resume", "--config.train.checkpoint_every=1000")
    _wait_for(lambda: _logged_lines(chaos) > logged, process, "training step logged")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=HANG_GUARD_S)
    assert process.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["preempted"] == "SIGTERM" and result["step"] < 30
    assert _checkpoint_steps(chaos)[-1] == result["step"] > start_steps[-1]

    # The newest checkpoint is truncated: resuming warns and falls back to the one before.
    newest = chaos / "checkpoints" / "latest" / str(result["step"])
    files = sorted((f for f in newest.rglob("*") if f.is_file() and f.stat().st_size > 0),
                   key=lambda f: -f.stat().st_size)
    for f in files[:3]:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    final = run_command(train_command(chaos, tiny_data_dir, *STEPS, "--resume"))
    assert f"checkpoint at step {result['step']} cannot be read" in final.stderr

    step_a, whole = final_params(tmp_path / "whole")
    step_b, resumed = final_params(chaos)
    assert step_a == step_b == 30
    for (name, a), (_, b) in zip(leaves(whole), leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)


def _tiny_step():
    config = baseline.get_config("tiny")
    mesh = parallel.make_mesh(1)
    model = build.model(config, CHARACTERS)
    optimizer = optim.make_optimizer(config.optimizer, 10)
    front = frontend.FrontendConfig()
    state = train_step.create_train_state(model, optimizer, (16000, 12), front, 0, mesh)
    batch = synthetic_batch((16000, 12), 8, labels=8)
    step = train_step.make_train_step(model, optimizer, mesh, front, None,
                                      objective.rnnt_objective(model, config.loss),
                                      normalization=config.loss.normalization)
    return step, state, batch, mesh


def test_a_nan_batch_skips_the_update_and_is_counted():
    step, state, batch, mesh = _tiny_step()
    before = jax.device_get(state.params)
    poisoned = {**batch, "weights": np.where(np.arange(8) == 3, np.nan, 1.0).astype(np.float32)}
    state, metrics = step(state, parallel.global_batch(poisoned, mesh))
    assert int(metrics["nonfinite"]) == 1 and not np.isfinite(float(metrics["loss"]))
    assert int(state.step) == 1  # the batch was consumed
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.opt_state)
               if jnp.issubdtype(x.dtype, jnp.floating))
    for _ in range(2):  # the skipped step left the schedule's count at 0 (learning rate 0)
        state, metrics = step(state, parallel.global_batch(batch, mesh))
        assert int(metrics["nonfinite"]) == 0
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before),
                                                         jax.tree.leaves(state.params),
                                                         strict=True))


@pytest.mark.slow
def test_repeated_nonfinite_steps_stop_the_run_with_the_last_good_checkpoint(
        tiny_data_dir, tmp_path, monkeypatch):
    config = baseline.get_config("tiny")
    config.data.name = tiny_name(0)
    config.data.data_dir = str(tiny_data_dir)
    config.train.update(steps=20, checkpoint_every=4, eval_every=100, max_nonfinite_steps=3,
                        log_every=2)
    original = parallel.global_batch
    calls = {"n": 0}

    def poisoned_from_step_6(batch, mesh):
        calls["n"] += 1
        if calls["n"] >= 6:
            batch = {**batch, "weights": np.full_like(batch["weights"], np.nan)}
        return original(batch, mesh)

    monkeypatch.setattr(parallel, "global_batch", poisoned_from_step_6)
    with pytest.raises(trainer.NonFiniteError, match=r"4 consecutive steps up to 9.*step 8"):
        trainer.train_and_evaluate(config, str(tmp_path / "run"))
    params, _ = checkpointing.load_params(tmp_path / "run")
    assert _checkpoint_steps(tmp_path / "run")[-1] == 8
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(params))
    logged = [r for r in read_metrics(tmp_path / "run") if "nonfinite_steps" in r]
    assert logged[-1]["nonfinite_steps"] == 3  # steps 6 and 8 logged: 1, then 3


def test_no_pickle_on_any_loading_path():
    """No module of the project imports pickle or loads arrays with allow_pickle=True."""
    offenders = []
    for package in ("amnet", "neuraldiff", "experiments", "benchmarks", "launch"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            if re.search(r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle)\b", text, re.M) or \
                    re.search(r"allow_pickle\s*=\s*True", text) or "torch.load(" in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


@pytest.mark.parametrize("args, message", [
    (["experiments.build_corpus", "--generations=0,x"], "--generations must be integers"),
    (["experiments.build_corpus", "--size=huge"], "value should be one of"),
    (["experiments.neuraldiff_generations", "--workdir=/tmp/unused"],
     "set --config.base_run to the run directory of the g0 model"),
    (["experiments.neuraldiff_generations", "--config.base_run=/nonexistent/run"],
     "/nonexistent/run/config.json"),
    (["experiments.train", "--workdir=/tmp/unused",
      f"--config={ROOT}/experiments/configs/baseline.py:medium"], "unknown preset 'medium'"),
    (["neuraldiff.cli", "apply", "--package=/nonexistent.ndiff", "--model=/nonexistent.st"],
     "cannot read package /nonexistent.ndiff"),
    (["neuraldiff.cli", "pack", "--base=/nonexistent.st", "--target=/x", "--out=/tmp/u"],
     "cannot read model file /nonexistent.st"),
])
def test_entry_points_name_bad_flags_and_files(args, message):
    out = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=cpu_env(), text=True,
                         capture_output=True, timeout=HANG_GUARD_S)
    assert out.returncode != 0 and message in out.stderr, out.stderr[-3000:]
