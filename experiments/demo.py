r"""The main job on the embedded corpus (`make demo`).

1. Builds the `small` spoken-commands corpus (g0 for training, g1 for the first update) and
   prints its statistics.
2. Trains the single-encoder dense RNN-T baseline (`experiments/configs/baseline.py:small`)
   and prints its test WER, greedy and beam.
3. Fine-tunes AmNet (dense + lowrank(16) branches, arbitrator, L_amr) from that baseline
   (`experiments/configs/amnet.py:small,lowrank`) and prints the AmNet vs baseline table of
   `experiments/amnet_paper.py` (WER, MFLOPs/frame, routing, simulated latency, streaming wall
   clock), with its plots in --amnet_workdir.
4. Ships the first model update as a neural diff: trains a sparse diff of the baseline on g1
   (10% of the model's bytes), then packs, signs, verifies and applies it with the device CLI
   (`python -m neuraldiff.cli`) to a copy of the model file, and prints WER before and after.
5. Ends on the device: writes the first g1 test utterance as a WAV file and transcribes it
   with the device runtime (`python -m amnet.transcribe`, NumPy only) from the model file
   before and after the update.

Re-running it reuses what exists: the corpus, and the run in --workdir (a finished run is
reported, an interrupted one resumed). `rm -rf runs/demo` to train again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from absl import app, flags, logging

from amnet import trainer
from amnet.data.corpus import report as corpus_report
from amnet.data.corpus import spoken_commands
from amnet.studies import amnet_comparison, demo
from experiments.configs import baseline

_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (default: TFDS's own).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Run directory of the baseline.")
_SIZE = flags.DEFINE_enum("size", "small", sorted(spoken_commands.SIZES), "Corpus size.")
_STEPS = flags.DEFINE_integer("steps", None, "Training steps (default: the small preset's).")
_AMNET_WORKDIR = flags.DEFINE_string("amnet_workdir", "runs/demo_amnet",
                                     "Where the AmNet run, table and plots go.")
_AMNET_MODELS = flags.DEFINE_list("amnet_models", ["lowrank"],
                                  "AmNet models to compare with the baseline.")
_UPDATE_WORKDIR = flags.DEFINE_string("update_workdir", "runs/demo_update",
                                      "Where the g1 neural-diff update goes.")
_UPDATE_PERCENT = flags.DEFINE_float("update_percent", 10.0,
                                     "Budget of the update, % of the fp32 model's bytes.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    start = time.perf_counter()
    print(corpus_report.build_and_describe(_SIZE.value, [0, 1], _DATA_DIR.value))
    print(f"\ncorpus ready in {time.perf_counter() - start:.0f} s\n")

    config = baseline.get_config("small")
    config.data.name = f"spoken_commands/{_SIZE.value}_g0"
    config.data.data_dir = _DATA_DIR.value
    if _STEPS.value:
        config.train.steps = _STEPS.value
    workdir = Path(_WORKDIR.value)
    results = trainer.train_or_reuse(config, workdir, "the dense RNN-T baseline")
    print(f"\ntest WER on {results['test_words_greedy']} words: "
          f"greedy {results['test_wer_greedy']:.2%}, beam {results['test_wer_beam']:.2%}, "
          f"beam + {config.lm.order}-gram character LM {results['test_wer_beam_lm']:.2%} "
          f"(CTC head, greedy: {results['test_wer_ctc_greedy']:.2%})")
    print(f"\n{demo.probe_table(workdir)}\n")
    print(demo.conditions_table(workdir, config.data.name, config.data.test_split))

    print("\nAmNet, fine-tuned from the baseline:")
    table = amnet_comparison.compare(amnet_comparison.Comparison(
        dense_run=str(workdir), workdir=_AMNET_WORKDIR.value, preset="small",
        models=tuple(_AMNET_MODELS.value), data_dir=_DATA_DIR.value, stream_utterances=10))
    print(f"\nAmNet vs the dense baseline ({_SIZE.value} corpus, test split):\n{table}")

    print("\nNeural diff: the first model update (g1), shipped to a device as a sparse diff:")
    print(demo.ship_update(workdir, _DATA_DIR.value, _SIZE.value, Path(_UPDATE_WORKDIR.value),
                      _UPDATE_PERCENT.value))
    print(f"demo finished in {(time.perf_counter() - start) / 60:.1f} minutes")


if __name__ == "__main__":
    app.run(main)
