r"""Batch-1 streaming: measured wall-clock saving of AmNet vs its counted FLOPs saving.

    python -m benchmarks.amnet_streaming --dense_run=runs/demo \
        --amnet_run=runs/amnet_paper/lowrank --utterances=20

Both models decode the same utterances frame by frame (`amnet.amortized.streaming`: arbitrator,
`lax.switch` to the chosen branch only, greedy RNN-T step), interleaved utterance by utterance
so that both see the same machine conditions. Printed side by side: counted MFLOPs/frame and
measured ms/frame of each model, and the two savings; the target is measured >= 70% of counted.
Without run directories, both models are the small config freshly initialized (the arbitrator
then routes as its random weights say) on random features.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import ml_collections
import numpy as np
from absl import app, flags

from amnet import build
from amnet.amortized import streaming
from amnet.data import datasets
from amnet.evaluation import routing
from amnet.rnnt.transducer import Transducer
from amnet.training import checkpointing, parallel, rundir
from benchmarks import models

_DENSE = flags.DEFINE_string("dense_run", None, "Run dir of the dense model.")
_AMNET = flags.DEFINE_string("amnet_run", None, "Run dir of the AmNet model.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir of the runs' corpus.")
_UTTERANCES = flags.DEFINE_integer("utterances", 20, "Test utterances (or random ones).")
_FRAMES = flags.DEFINE_integer("frames", 100, "Frames per random utterance (no runs).")
_SINGLE_THREAD = flags.DEFINE_bool(
    "single_thread", False, "Run XLA's CPU kernels on one thread, like the latency model's "
    "single-thread processor (set before the backend starts).")


def _from_run(run: str) -> tuple[Transducer, dict, ml_collections.ConfigDict]:
    config = rundir.read_run_config(run, _DATA_DIR.value)
    params, meta = checkpointing.load_params(run)
    model = build.model(config, meta["vocab_size"])
    return model, params, config


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if (_DENSE.value is None) != (_AMNET.value is None):
        raise app.UsageError("give both --dense_run and --amnet_run, or neither")
    if _SINGLE_THREAD.value:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen"
                                   "=false intra_op_parallelism_threads=1").strip()
    if _DENSE.value:
        dense, dense_params, _ = _from_run(_DENSE.value)
        amnet, amnet_params, config = _from_run(_AMNET.value)
        tokenizer = build.tokenizer(config)
        front, _ = build.frontend_configs(config)
        split = datasets.open_eval_split(config, config.data.test_split, tokenizer)
        utterances = [u.features for u in routing.collect(
            amnet, amnet_params, split, tokenizer, front, parallel.make_mesh(1),
            keep_features=_UTTERANCES.value, max_utterances=_UTTERANCES.value)]
    else:
        (dense, dense_params) = models.fresh_model("single-dense")
        (amnet, amnet_params) = models.fresh_model("lowrank")
        rng = np.random.default_rng(0)
        utterances = [rng.normal(-3.0, 4.0, size=(_FRAMES.value, dense.config.input_dim))
                      for _ in range(_UTTERANCES.value)]
    recognizers = {"dense": streaming.StreamingRecognizer(dense, dense_params),
                   "amnet": streaming.StreamingRecognizer(amnet, amnet_params)}
    runs = {name: [] for name in recognizers}
    for i, features in enumerate(utterances):
        order = list(recognizers) if i % 2 == 0 else list(recognizers)[::-1]
        for name in order:
            runs[name].append(recognizers[name].run(features))

    stats = {}
    for name, results in runs.items():
        seconds = np.concatenate([r.frame_seconds for r in results])
        counted = np.concatenate([r.frame_flops for r in results])
        branches = np.concatenate([r.branches for r in results])
        stats[name] = (counted.mean(), seconds.mean())
        per_branch = ", ".join(
            f"branch {k}: {100 * np.mean(branches == k):.0f}% of frames, "
            f"{1e3 * seconds[branches == k].mean():.3f} ms" for k in np.unique(branches))
        print(f"{name:6s} {counted.mean() / 1e6:7.3f} MFLOPs/frame  "
              f"{1e3 * seconds.mean():7.3f} ms/frame  ({per_branch}; {seconds.size} frames)")
    counted_saving = 1 - stats["amnet"][0] / stats["dense"][0]
    measured_saving = 1 - stats["amnet"][1] / stats["dense"][1]
    ratio = measured_saving / counted_saving if counted_saving else float("nan")
    print(f"saving: counted {100 * counted_saving:.1f}%, measured {100 * measured_saving:.1f}% "
          f"-> measured / counted = {ratio:.2f} (target >= 0.70)")


if __name__ == "__main__":
    app.run(main)
