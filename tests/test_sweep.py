"""Sweeps (`experiments.sweep`): the tiny sweep with a PyTorch baseline at one of its points
(at one encoder depth: two JAX runs, not four), skipping of finished runs, the comparison table,
and the emitted commands."""

import json
import shlex
from pathlib import Path

import pytest

from amnet.evaluation import compare
from amnet.evaluation import results as results_io
from amnet.studies import sweep
from amnet.training.metric_writers import read_metrics
from tests.helpers import tiny_name

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "experiments" / "sweeps" / "tiny_2x2.toml"
# Validation only at the last step: the same runs, less decoding.
SETTINGS = {"data.name": tiny_name(0), "train.eval_every": 100}


@pytest.fixture(autouse=True)
def _in_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # config paths in sweep files are relative to the checkout


def _one_depth(tmp_path) -> str:
    """tiny_2x2.toml at one encoder depth (2x1): one tiny training and compilation less."""
    text = SWEEP.read_text()
    grid = '"model.encoder_layers" = [1, 2]'
    assert grid in text, f"{SWEEP} changed its grid; update this test"
    path = tmp_path / "tiny_2x1.toml"
    path.write_text(text.replace(grid, '"model.encoder_layers" = [1]'))
    return str(path)


@pytest.mark.slow
def test_tiny_sweep_with_a_pytorch_baseline_skips_finished_runs_and_compares(
        tiny_data_dir, tmp_path, capsys):
    pytest.importorskip("torch", reason="the sweep's PyTorch baseline needs the extra `torch`")
    workdir = tmp_path / "sweep"
    sweep_file = _one_depth(tmp_path)
    out = sweep.sweep(sweep_file, str(workdir), data_dir=str(tiny_data_dir), settings=SETTINGS)
    runs = {m["run"]: m for m in out}
    assert sorted(runs) == sorted(
        [f"jax_encoder_hidden-{h}_encoder_layers-1" for h in (16, 32)]
        + ["torch_encoder_hidden-32_encoder_layers-1"])
    for name, metrics in runs.items():
        assert results_io.read_metrics(workdir / name / "metrics.json") == metrics
        assert metrics["dataset"]["name"] == tiny_name(0) and metrics["train_time_s"] > 0
    # Counted FLOPs grow with width; every run saw the same test set.
    assert runs["jax_encoder_hidden-16_encoder_layers-1"]["mflops_per_frame"] < \
        runs["jax_encoder_hidden-32_encoder_layers-1"]["mflops_per_frame"]
    assert len({m["dataset"]["fingerprint"] for m in out}) == 1
    # The PyTorch baseline trained on the JAX run's batches, features and initial weights: the
    # first logged losses agree (float32, different kernels).
    jax_log = read_metrics(workdir / "jax_encoder_hidden-32_encoder_layers-1")
    torch_log = read_metrics(workdir / "torch_encoder_hidden-32_encoder_layers-1")
    assert torch_log[0]["loss"] == pytest.approx(jax_log[0]["loss"], rel=1e-4)
    assert torch_log[0]["grad_norm"] == pytest.approx(jax_log[0]["grad_norm"], rel=1e-3)
    assert runs["torch_encoder_hidden-32_encoder_layers-1"]["wer_beam"] is None
    assert runs["torch_encoder_hidden-32_encoder_layers-1"]["mflops_per_frame"] == \
        runs["jax_encoder_hidden-32_encoder_layers-1"]["mflops_per_frame"]

    # Re-running skips every finished run: nothing is trained or rewritten.
    stamps = {p: p.stat().st_mtime_ns for p in workdir.glob("*/metrics.json")}
    capsys.readouterr()
    again = sweep.sweep(sweep_file, str(workdir), data_dir=str(tiny_data_dir), settings=SETTINGS)
    assert capsys.readouterr().out.count("finished, skipped") == 3
    assert again == out and stamps == {p: p.stat().st_mtime_ns for p in stamps}
    assert sweep.sweep(sweep_file, str(workdir), mode="commands", data_dir=str(tiny_data_dir),
                       settings=SETTINGS) == []
    # A finished run asked for with another config is an error, not a silent reuse.
    with pytest.raises(sweep.SweepError, match=r"finished with another config .*optimizer"):
        sweep.sweep(sweep_file, str(workdir), data_dir=str(tiny_data_dir),
                    settings={**SETTINGS, "optimizer.learning_rate": 0.01})

    # The comparison rescores both frameworks with the one scorer: the same numbers as the
    # runs wrote, a PyTorch row among them, table, CSV and plots.
    records = compare.compare([str(workdir)])
    assert len(records) == 3 and {r["framework"] for r in records} == {"jax", "torch"}
    for r in records:
        assert r["scored"] == "here"
        for key in ("wer_greedy", "wer_beam", "mflops_per_frame", "upl_mean_ms", "upl_max_ms"):
            assert r[key] == runs[r["run"]][key], (r["run"], key)
    assert any(r["pareto"] for r in records)
    written = compare.write(records, compare.scoring.LatencyModel(**records[0]["latency_model"]),
                            tmp_path / "compare")
    table = (tmp_path / "compare" / "table.md").read_text()
    assert "| torch_encoder_hidden-32_encoder_layers-1 | torch | here |" in table
    assert len((tmp_path / "compare" / "table.csv").read_text().splitlines()) == 4
    assert all(p.stat().st_size > 0 for p in written)


def _write(tmp_path, text):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return str(path)


CONFIG = 'config = "experiments/configs/baseline.py:tiny"\n'


@pytest.mark.parametrize("text, message", [
    ("", "`config`.*is required"),
    (CONFIG + "colour = 1\n", r"unknown keys \['colour'\]"),
    (CONFIG + '[grid]\n"seed" = []\n', "grid entry 'seed' must be a non-empty list"),
    (CONFIG + '[[runs]]\nname = "a"\nframework = "mxnet"\n', "framework 'mxnet'"),
    (CONFIG + '[[runs]]\nname = "a"\n[[runs]]\nname = "a"\n', r"used twice: \['a'\]"),
    (CONFIG, "no runs"),
    ("config = [", "not TOML"),
])
def test_bad_sweep_files_are_named(tmp_path, text, message):
    with pytest.raises(sweep.SweepError, match=message):
        sweep.read_sweep(_write(tmp_path, text))


@pytest.mark.parametrize("override, message", [
    ({"model.encoder_width": 3}, "run a: no config field 'model.encoder_width'"),
    ({"modle.encoder_hidden": 3}, "run a: no config block 'modle'"),
    ({"model.encoder_hidden": "wide"}, r"run a: override model.encoder_hidden='wide'"),
])
def test_bad_overrides_are_named_before_anything_runs(tmp_path, override, message):
    path = _write(tmp_path, CONFIG + '[[runs]]\nname = "a"\n')
    with pytest.raises(sweep.SweepError, match=message):
        sweep.sweep(path, str(tmp_path / "runs"), settings=override)
    assert not (tmp_path / "runs").exists()


def test_emitted_commands_for_every_mode(tmp_path):
    path = _write(tmp_path, CONFIG + '[fixed]\n"train.steps" = 40\n'
                  '[grid]\n"model.encoder_hidden" = [16, 32]\n'
                  '"frontend.num_mels" = [40]\n'
                  '[[runs]]\nname = "pt"\nframework = "torch"\n'
                  'overrides = { "data.buckets" = [[48000, 64]] }\n')
    runs = sweep.read_sweep(path)
    assert [r.name for r in runs] == ["jax_encoder_hidden-16_num_mels-40",
                                      "jax_encoder_hidden-32_num_mels-40", "pt"]
    lines = sweep.sweep(path, "/runs/s", mode="commands", data_dir="/data",
                        settings=sweep.parse_settings(["seed=3"]))
    first = shlex.split(lines[0])
    assert first[1:] == ["-m", "experiments.train", f"--config={runs[0].config}",
                         "--config.train.steps=40", "--config.model.encoder_hidden=16",
                         "--config.frontend.num_mels=40", "--config.seed=3",
                         "--config.data.data_dir=/data",
                         "--workdir=/runs/s/jax_encoder_hidden-16_num_mels-40"]
    assert shlex.split(lines[2])[2] == "experiments.torch_baselines.train"
    assert "--config.data.buckets=48000,64" in shlex.split(lines[2])

    flags = "--name=asr --zone=us-west4-a --accelerator_type=v5litepod-16 --bucket=b"
    tpu = [shlex.split(x) for x in sweep.sweep(path, "/runs/s", mode="tpu_vm",
                                               launcher_flags=flags)]
    assert tpu[0][1:7] == ["-m", "launch.tpu_vm", "--name=asr", "--zone=us-west4-a",
                           "--accelerator_type=v5litepod-16", "--bucket=b"]
    assert tpu[0][7] == "--run=sweep/jax_encoder_hidden-16_num_mels-40"
    experiment = shlex.split(tpu[0][8].removeprefix("--experiment="))
    assert experiment[0] == "experiments.train" and "--config.train.steps=40" in experiment
    assert not any(a.startswith("--workdir") for a in experiment)  # the launcher sets it
    assert tpu[2][2] == "experiments.torch_baselines.train"  # PyTorch runs stay local
    slurm = [shlex.split(x) for x in sweep.sweep(path, "/shared/s", mode="slurm",
                                                 launcher_flags="--nodes=2")]
    assert slurm[1][2:6] == ["launch.slurm", "--nodes=2",
                             "--name=sweep-jax_encoder_hidden-32_num_mels-40",
                             "--workdir=/shared/s/jax_encoder_hidden-32_num_mels-40"]
    assert sweep.parse_settings(["a.b=1e-3", "c=[1, 2]", "d=word"]) == {
        "a.b": 1e-3, "c": [1, 2], "d": "word"}
    with pytest.raises(sweep.SweepError, match="expected key=value"):
        sweep.parse_settings(["novalue"])
    json.dumps(lines)  # plain strings
