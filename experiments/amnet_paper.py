r"""The AmNet paper's comparison on the embedded corpus: table (markdown + JSON) and plots.

    python -m experiments.amnet_paper --dense_run=runs/demo --workdir=runs/amnet_paper

Every model starts from the trained dense baseline `--dense_run` (`amnet.amortized.warm_start`) and
is
fine-tuned for the same number of steps (`experiments/configs/amnet.py`); `single-dense` is the
dense baseline fine-tuned alike, the fair reference. Then, on the test split: WER (greedy, beam,
beam + LM), counted MFLOPs/frame, % frames per branch, share of frames whose routing
probability exceeds 0.99 at the final temperature and at τ = 1, the fast-branch share on silence
vs speech frames and on frames where greedy decoding emits vs stays blank
(`amnet.evaluation.routing`), simulated user-perceived latency (UPL) mean/p90/max at the configured
processor speed (the dense model needs 1.5x real time), and the measured wall clock of batch-1
streaming (`amnet.amortized.streaming`) on the first `--stream_utterances` test utterances.

With `--cost_sweep=experiments/sweeps/amnet_cost_small.toml` (run into <workdir>/cost_sweep),
the cost-only model matched to `--matched_to`'s MFLOPs/frame joins the table
(`amnet.studies.amnet_matched`): the paper's comparison of two routings at the same average cost.

Writes <workdir>/table.md, table.json, routing.png (routing_matched.png), wer_vs_flops.png,
upl.png. Finished runs are reused (delete a model's directory to retrain it).
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags, logging

from amnet.studies.amnet_comparison import PAPER_MODELS, Comparison, compare

_DENSE_RUN = flags.DEFINE_string("dense_run", "runs/demo",
                                 "Run directory of the trained dense baseline (warm start).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/amnet_paper", "Where runs, table and plots go.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (default: TFDS's own).")
_PRESET = flags.DEFINE_string("preset", "small", "Preset of experiments/configs/amnet.py.")
_MODELS = flags.DEFINE_list("models", list(PAPER_MODELS), "Models to train and compare.")
_STEPS = flags.DEFINE_integer("steps", None, "Fine-tuning steps (default: the preset's).")
_STREAM = flags.DEFINE_integer("stream_utterances", 20,
                               "Test utterances decoded frame by frame for the wall clock.")
_PLOTTED = flags.DEFINE_integer("plot_utterances", 3, "Test utterances in routing.png.")
_COST_SWEEP = flags.DEFINE_string(
    "cost_sweep", None, "A λ_cost sweep of the cost-only model "
    "(experiments/sweeps/amnet_cost_small.toml), run into <workdir>/cost_sweep: adds the "
    "cost-only run matched to --matched_to's MFLOPs/frame within ±5%, training more λ_cost "
    "where needed.")
_MATCHED_TO = flags.DEFINE_string("matched_to", "lowrank",
                                  "The model (among --models) whose compute is matched.")
_MATCHED_TRIES = flags.DEFINE_integer("matched_tries", 3,
                                      "Most cost-only runs trained to match the compute.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    try:
        table = compare(Comparison(
            dense_run=_DENSE_RUN.value, workdir=_WORKDIR.value, preset=_PRESET.value,
            models=tuple(_MODELS.value), data_dir=_DATA_DIR.value, steps=_STEPS.value,
            stream_utterances=_STREAM.value, plot_utterances=_PLOTTED.value,
            cost_sweep=_COST_SWEEP.value, matched_to=_MATCHED_TO.value,
            matched_tries=_MATCHED_TRIES.value))
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    print(f"\n{table}")


if __name__ == "__main__":
    app.run(main)
