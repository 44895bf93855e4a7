"""Training system: the real entry point, data parallelism, multi-process, kill and resume."""

import json
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from amnet.evaluation import evaluator
from amnet.evaluation import results as results_io
from amnet.training.metric_writers import read_metrics
from experiments.configs.baseline import get_config
from tests.helpers import (
    HANG_GUARD_S,
    ROOT,
    cpu_env,
    final_params,
    leaves,
    run_command,
    tiny_name,
    train_command,
)


def test_tiny_config_trains_through_the_entry_point(tiny_dense_run):
    """The session's tiny run (`experiments.train`, 300 steps): loss falls by at least 1.5x; the
    run dir has config, metrics, events, checkpoints, results and the shared results files."""
    run = tiny_dense_run
    records = [r for r in read_metrics(run) if "loss" in r]
    assert records[-1]["loss"] < records[0]["loss"] / 1.5, records
    assert all(r["utterances_per_s"] > 0 and r["audio_seconds_per_s"] > 0 for r in records)
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["steps"] == 300 and config["data"]["name"] == tiny_name(0)
    results = json.loads((run / "results.json").read_text())
    assert {"test_wer_greedy", "test_wer_beam", "test_wer_beam_lm", "test_wer_ctc_greedy"} <= \
        set(results) and results["step"] == 300
    assert (run / "lm.safetensors").exists()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "best").iterdir()
    # metrics.json is the scorer's reading of outputs.jsonl: the same WER as results.json.
    metrics = results_io.read_metrics(run / "metrics.json")
    outputs = results_io.read_outputs(run / "outputs.jsonl")
    assert metrics["wer_greedy"] == results["test_wer_greedy"]
    assert metrics["wer_beam"] == results["test_wer_beam"]
    assert metrics["dataset"]["words"] == results["test_words_greedy"]
    assert len(outputs) == metrics["dataset"]["utterances"] > 0
    assert metrics["framework"] == "jax" and metrics["hardware"]["backend"] == "cpu"
    assert 0 < records[-1]["train_time_s"] <= metrics["train_time_s"]
    assert metrics["frames_per_branch"] == {"0:dense": 1.0}


def test_the_tiny_run_learned_from_the_audio(tiny_dense_run):
    """A real learning test (the probes of docs/rnnt.md, on the unseen validation utterances):
    after 300 steps the transducer's likelihood depends on what was said, not only on the
    labels: replacing the encoder output by its time mean, or by another utterance's, must
    cost at least 0.15 nats per token (measured: 0.29 and 0.28 with this config), and more at
    step 300 than at step 150 (measured: 0.17 and 0.21 there)."""
    evals = [r for r in read_metrics(tiny_dense_run) if "eval/loss_per_token" in r]
    assert [r["step"] for r in evals] == [150, 300]
    first, last = evals
    for probe in ("probe", "swap"):
        rise = [r[f"eval/{probe}_loss_per_token"] - r["eval/loss_per_token"] for r in evals]
        assert rise[1] >= 0.15 and rise[1] > rise[0], (probe, first, last)


DP_SCRIPT = """
import json, sys
import jax, numpy as np
from amnet import build
from amnet.rnnt import frontend, objective
from amnet.training import optim, parallel
from amnet.training import step as train_step
from benchmarks.models import CHARACTERS, synthetic_batch
from experiments.configs.baseline import get_config
config = get_config("tiny")
model = build.model(config, CHARACTERS)
optimizer = optim.make_optimizer(config.optimizer, 10)
front = frontend.FrontendConfig()
batch = synthetic_batch((16000, 12), 8, ragged=True)  # uneven lengths, a padding row
for devices in map(int, sys.argv[1:]):
    mesh = parallel.make_mesh(devices)
    state = train_step.create_train_state(model, optimizer, (16000, 12), front, 0, mesh)
    step = train_step.make_train_step(model, optimizer, mesh, front, frontend.SpecAugmentConfig(),
                                      objective.rnnt_objective(model, config.loss),
                                      normalization=config.loss.normalization)
    for _ in range(2):
        state, metrics = step(state, parallel.global_batch(batch, mesh))
    leaves = jax.tree.leaves(jax.device_get(state.params))
    print(json.dumps({"loss": float(metrics["loss"]),
                      "params": [leaf.ravel()[:50].tolist() for leaf in leaves]}))
"""


@pytest.mark.slow
def test_data_parallel_step_equals_single_device():
    """Two steps on 1 device vs the same global batch on 4 devices (SpecAugment on)."""
    out = run_command([sys.executable, "-c", DP_SCRIPT, "1", "4"], devices=4).stdout
    one, four = (json.loads(line) for line in out.strip().splitlines()[-2:])
    assert one["loss"] == pytest.approx(four["loss"], rel=1e-5)
    for a, b in zip(one["params"], four["params"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_agree_with_one_process_of_four_devices(tiny_data_dir, tmp_path):
    steps = ["--config.train.steps=4", "--config.train.eval_every=100",
             "--config.train.eval_batches=1", "--config.train.checkpoint_every=100",
             "--config.eval.test_decoders=greedy"]
    run_command(train_command(tmp_path / "single", tiny_data_dir, *steps), devices=4)
    port = _free_port()
    processes = [subprocess.Popen(
        train_command(tmp_path / "multi", tiny_data_dir, *steps, "--distributed",
                       f"--coordinator=localhost:{port}", "--num_processes=2",
                       f"--process_id={i}"),
        cwd=ROOT, env=cpu_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    outputs = [p.communicate(timeout=HANG_GUARD_S) for p in processes]
    for p, (_, err) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, err[-4000:]
    _, single = final_params(tmp_path / "single")
    _, multi = final_params(tmp_path / "multi")
    for (name, a), (_, b) in zip(leaves(single), leaves(multi), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=name)
    # Each process decoded its rows of the test set; process 0 joined the shards.
    one, two = (results_io.read_outputs(tmp_path / run / "outputs.jsonl")
                for run in ("single", "multi"))
    assert sorted(o.id for o in one) == sorted(o.id for o in two)
    assert not list((tmp_path / "multi").glob("outputs-*-of-*.jsonl"))
    assert results_io.read_metrics(tmp_path / "multi" / "metrics.json")["hardware"][
        "processes"] == 2


def test_the_test_decoders_default_to_all_and_a_bad_list_is_named():
    config = get_config("tiny")
    assert evaluator.test_decoders(config) == ("greedy", "beam", "beam_lm")
    config.eval.test_decoders = ("greedy",)
    assert evaluator.test_decoders(config) == ("greedy",)
    for wrong, message in ((("beam",), "greedy included"), (("greedy", "bean"), "choose from")):
        config.eval.test_decoders = wrong
        with pytest.raises(ValueError, match=message):
            evaluator.test_decoders(config)
    del config["lm"]
    config.eval.test_decoders = None
    assert evaluator.test_decoders(config) == ("greedy", "beam")
    config.eval.test_decoders = ("greedy", "beam_lm")
    with pytest.raises(ValueError, match="no `lm` block"):
        evaluator.test_decoders(config)


@pytest.mark.parametrize("extra, message", [
    (["--config.train.no_such_key=1"], "no_such_key"),
    (["--config.train.global_batch_size=6"], "not divisible by the 4 devices"),
    (["--config.data.name=librispeech"], "not prepared under data dir"),
])
def test_bad_configurations_are_named(tiny_data_dir, tmp_path, extra, message):
    out = run_command(train_command(tmp_path / "run", tiny_data_dir, *extra), devices=4,
                      check=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr[-3000:]


def test_run_dir_is_never_overwritten_or_mixed(tiny_data_dir, tiny_dense_run, tmp_path):
    """Into a finished run (a copy of the session's tiny run): a new run and a resume with
    another config are both refused, and no file changes."""
    steps = ["--config.train.steps=2", "--config.train.eval_every=100"]
    shutil.copytree(tiny_dense_run, tmp_path / "run")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}
    again = run_command(train_command(tmp_path / "run", tiny_data_dir, *steps), check=False)
    assert again.returncode != 0 and "already holds a run" in again.stderr
    other = run_command(train_command(tmp_path / "run", tiny_data_dir, *steps, "--resume",
                                "--config.model.encoder_hidden=48"), check=False)
    assert other.returncode != 0 and "differs" in other.stderr and "model" in other.stderr
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert before == after


def test_train_or_reuse_trains_a_new_run_resumes_an_unfinished_one_and_reads_a_finished_one(
        tmp_path, monkeypatch, capsys):
    from amnet import trainer

    calls = []
    monkeypatch.setattr(trainer, "train_and_evaluate",
                        lambda config, workdir, resume: calls.append(resume) or {"trained": 1})
    config = get_config("tiny")
    run_dir = tmp_path / "run"
    assert trainer.train_or_reuse(config, run_dir, "baseline") == {"trained": 1}
    run_dir.mkdir()
    (run_dir / "config.json").write_text(config.to_json())
    assert trainer.train_or_reuse(config, run_dir, "baseline") == {"trained": 1}
    assert calls == [False, True]
    (run_dir / "results.json").write_text(json.dumps({"test_wer_greedy": 0.5}))
    (run_dir / "metrics.json").write_text("{}")
    assert trainer.train_or_reuse(config, run_dir, "baseline") == {"test_wer_greedy": 0.5}
    assert calls == [False, True]
    printed = capsys.readouterr().out
    assert "training ['dense']" in printed and "resuming" in printed and "reusing" in printed
