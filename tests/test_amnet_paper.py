"""AmNet end to end through the entry points: dense baseline -> warm-started AmNet with three
branches (dense, sparse, lowrank) and a cost-only model matched to its compute -> the paper's
table and plots."""

import json
import subprocess
import sys

import numpy as np
import pytest

from amnet.amortized import pruning
from amnet.studies import amnet_matched
from amnet.training import checkpointing
from tests.helpers import HANG_GUARD_S, ROOT, cpu_env


def _run(args):
    out = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=cpu_env(), text=True,
                         capture_output=True, timeout=HANG_GUARD_S)
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


@pytest.mark.slow
def test_three_branches_train_from_a_dense_run_and_fill_the_table(tiny_data_dir, tiny_dense_run,
                                                                  tmp_path):
    dense = tiny_dense_run
    paper = tmp_path / "paper"
    # A cost-only λ_cost sweep at two extremes (greedy decoding only: a row without beam WER
    # is shown as "–"), then the run closest to three's compute (matched).
    cost_sweep = tmp_path / "cost.toml"
    cost_sweep.write_text('config = "experiments/configs/amnet.py:tiny,lowrank-noamr"\n'
                          '[fixed]\n"eval.test_decoders" = ["greedy"]\n'
                          '[grid]\n"amnet.cost_weight" = [0.01, 100.0]\n')
    stdout = _run(["experiments.amnet_paper", "--preset=tiny", f"--dense_run={dense}",
                   f"--workdir={paper}", f"--data_dir={tiny_data_dir}", "--models=three",
                   f"--cost_sweep={cost_sweep}", "--matched_to=three", "--matched_tries=0",
                   "--stream_utterances=1", "--plot_utterances=2"])
    rows = json.loads((paper / "table.json").read_text())
    assert [r["model"] for r in rows[:2]] == ["dense", "three"]
    three = rows[1]
    assert three["branches"] == "dense / sparse(0.9) / lowrank(4)"
    assert abs(sum(three[f"branch_{k}_frames"] for k in range(3)) - 1.0) < 1e-9
    assert three["upl_max_ms"] >= three["upl_p90_ms"] >= 0 and three["stream_ms_per_frame"] > 0
    for column in ("binary_final", "binary_tau1", "fast_on_silence", "fast_on_speech",
                   "fast_on_emit", "fast_on_blank", "silence_frames", "emit_frames"):
        assert 0.0 <= three[column] <= 1.0, column
    assert three["binary_final"] >= three["binary_tau1"]  # τ = 0.005 sharpens softmax(z)
    assert 0.0 < three["silence_frames"] < 1.0 and rows[0]["fast_on_speech"] is None
    assert "| three |" in stdout and "| dense |" in stdout
    for plot in ("routing.png", "routing_matched.png", "wer_vs_flops.png", "upl.png"):
        assert (paper / plot).stat().st_size > 10_000, plot

    # Matched compute: the two sweep runs enclose three's MFLOPs/frame, the interpolated λ lies
    # between them, and with no run left to train the table takes the closer sweep run.
    # (Training at the interpolated λ: amnet.studies.amnet_matched's docs/results.md run.)
    points = amnet_matched.sweep_points(paper / "cost_sweep")
    assert sorted(p.weight for p in points) == [0.01, 100.0]
    found = amnet_matched.bracket(points, three["mflops_per_frame"])
    assert 0.01 < found.weight < 100.0
    best = amnet_matched.closest(points, three["mflops_per_frame"])
    matched = rows[2]
    assert matched["model"] == f"lowrank-noamr λ={best.weight:g} (matched)"
    assert matched["cost_weight"] == best.weight and matched["amortization"] == "none"
    assert matched["matched_to"] == "three"
    assert matched["mflops_per_frame"] == pytest.approx(best.mflops, rel=1e-4)
    assert matched["wer_beam"] is None and f"| {matched['model']} |" in stdout

    # Every branch and the arbitrator were trained; the sparse branch reached its sparsity.
    start, _ = checkpointing.load_params(dense)
    params, meta = checkpointing.load_params(paper / "three")
    assert meta["model"]["encoder_branches"] == ["dense", "sparse(0.9)", "lowrank(4)"]
    sparsity = pruning.measured_sparsity(params, ("dense", "sparse(0.9)", "lowrank(4)"))
    assert abs(sparsity["branch_1"] - 0.9) < 1e-3, sparsity
    dense_kernel = np.asarray(start["encoder"]["branch_0"]["layers_0"]["input_kernel"])
    assert not np.allclose(params["encoder"]["branch_0"]["layers_0"]["input_kernel"],
                           dense_kernel)
    assert not np.allclose(params["encoder"]["branch_1"]["layers_0"]["input_kernel"],
                           np.where(params["encoder"]["branch_1"]["layers_0"]["input_kernel"]
                                    == 0, 0, dense_kernel))
    metrics = [json.loads(line) for line in (paper / "three" / "metrics.jsonl").open()]
    assert any(r.get("train/branch_2_frames", 0) > 0 for r in metrics)


ENTRY_POINTS = ("experiments.demo", "experiments.amnet_paper", "benchmarks.amnet_streaming",
                "experiments.neuraldiff_generations", "experiments.neuraldiff_biasing",
                "neuraldiff.cli",
                "benchmarks.train_step_backends", "launch.tpu_vm", "launch.slurm",
                "experiments.sweep", "experiments.compare", "experiments.torch_baselines.train",
                "benchmarks.run", "benchmarks.profile")

# Imports each entry point as a fresh process would: before each, the modules that define flags
# (entry points and what they import of each other) are dropped from sys.modules and their flags
# removed, so every import defines its flags anew (what a duplicate definition would break);
# libraries (amnet, jax, ...) stay loaded, which is all a separate process per module would add.
FLAGS_SCRIPT = """
import importlib, sys
from absl import flags
OURS = ("experiments", "benchmarks", "launch", "neuraldiff.cli")
for module in sys.argv[1:]:
    before = set(flags.FLAGS)
    try:
        importlib.import_module(module)
    except Exception as e:
        print(f"{module}: {type(e).__name__}: {e}")
        sys.exit(1)
    for name in set(flags.FLAGS) - before:
        delattr(flags.FLAGS, name)
    for loaded in [m for m in sys.modules if m.split(".")[0] in OURS or m in OURS]:
        del sys.modules[loaded]
"""


def test_entry_points_define_their_flags_once():
    """`make demo` imports the comparison; absl refuses a flag defined twice (at import)."""
    out = subprocess.run([sys.executable, "-c", FLAGS_SCRIPT, *ENTRY_POINTS], cwd=ROOT,
                         env=cpu_env(), capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    # The check catches a duplicate: a module that defines an existing flag again fails.
    duplicate = subprocess.run(
        [sys.executable, "-c", FLAGS_SCRIPT.replace(
            "importlib.import_module(module)",
            "importlib.import_module(module); flags.DEFINE_string('workdir', '', '')"),
         "experiments.train"], cwd=ROOT, env=cpu_env(), capture_output=True, text=True,
        timeout=HANG_GUARD_S)
    assert duplicate.returncode == 1 and "DuplicateFlagError" in duplicate.stdout
