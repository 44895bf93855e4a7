r"""Entry point: train and evaluate a PyTorch baseline (`amnet.torch_baselines.train`).

    python -m experiments.torch_baselines.train \
        --config=experiments/configs/baseline.py:tiny --workdir=runs/torch_tiny \
        [--config.model.encoder_hidden=64] [--init=jax|torch] [--restart]
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from absl import app, flags, logging

from amnet.torch_baselines import train as torch_train


def _define_flags() -> None:
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Experiment config file[:preset].")
    flags.DEFINE_string("workdir", None, "Run directory.", required=True)
    flags.DEFINE_enum("init", "jax", ["jax", "torch"], "Initial weights: the JAX model's "
                      "initialization (same seed) or PyTorch's default.")
    flags.DEFINE_bool("restart", False, "Clear an unfinished run in --workdir and train again.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    record = torch_train.train_and_evaluate(f.config, f.workdir, init=f.init, restart=f.restart)
    print(json.dumps({k: record[k] for k in ("wer_greedy", "mflops_per_frame", "train_time_s")}))


if __name__ == "__main__":
    _define_flags()
    flags.mark_flag_as_required("config")
    app.run(main)
