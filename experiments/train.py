r"""Train and evaluate an RNN-T (absl flags + ml_collections config).

    python -m experiments.train --config=experiments/configs/baseline.py:small \
        --workdir=runs/baseline_small [--config.train.steps=3000] [--resume]

Multi-host (Cloud TPU, multi-node GPU): add --distributed; every process runs the same command,
`jax.distributed.initialize()` finds its peers (on TPU from the environment; elsewhere from
--coordinator/--num_processes/--process_id). Each process reads its rows of every global batch.
See amnet/trainer.py for what the run directory receives, docs/training.md for recipes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from amnet.trainer import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:preset].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.", required=True)
_RESUME = flags.DEFINE_bool("resume", False, "Continue the run in --workdir from its newest "
                            "checkpoint.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize().")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "host:port of process 0 (off-TPU).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job (off-TPU).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (off-TPU).")
_STOP_AFTER = flags.DEFINE_integer("stop_after", None, "Exit after this step (for tests of "
                                   "interrupted runs); the run can be --resume'd.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax and TFDS are chatty at INFO
    if _DISTRIBUTED.value:
        if _COORDINATOR.value:
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                                   num_processes=_NUM_PROCESSES.value,
                                   process_id=_PROCESS_ID.value)
    results = train_and_evaluate(_CONFIG.value, _WORKDIR.value, resume=_RESUME.value,
                                 stop_after=_STOP_AFTER.value)
    if jax.process_index() == 0:
        print(json.dumps(results))


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)
