r"""Run an experiment on a multi-host GPU cluster with SLURM: one process per node, all of the
node's GPUs in it, `jax.distributed.initialize()` through the first node.

    python -m launch.slurm --name=ls100 --nodes=2 --gpus_per_node=8 --time=24:00:00 \
        --workdir=/shared/runs/librispeech_baseline \
        --experiment="experiments.train --config=experiments/configs/baseline.py:librispeech \
                      --config.data.data_dir=/shared/tensorflow_datasets" --dry_run

Writes `<workdir>.sbatch` and submits it with `sbatch` (`--dry_run` prints both, runs nothing).
The job asks SLURM for SIGTERM two minutes before its time limit (`--signal=TERM@120`): the
trainer saves a checkpoint and exits, and with `--requeue` the job restarts with `--resume`
(added when the run directory already holds a run). The run directory must be on a
filesystem every node sees.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from absl import app, flags

from launch import commands as cmd


def script(*, name: str, nodes: int, gpus_per_node: int, cpus_per_node: int, time: str,
           workdir: str, experiment: str, project_dir: str = ".", port: int = 29500,
           partition: str | None = None) -> str:
    """The sbatch script."""
    if nodes < 1 or gpus_per_node < 1:
        raise ValueError(f"need at least one node and one GPU, got {nodes} x {gpus_per_node}")
    if not re.fullmatch(r"(\d+-)?\d{1,2}:\d{2}:\d{2}", time):
        raise ValueError(f"--time must be [D-]HH:MM:SS, got {time!r}")
    header = [f"--job-name={name}", f"--nodes={nodes}", "--ntasks-per-node=1",
              f"--gpus-per-node={gpus_per_node}", f"--cpus-per-task={cpus_per_node}",
              f"--time={time}", f"--output={workdir}.%j.log", "--signal=TERM@120", "--requeue"]
    if partition:
        header.append(f"--partition={partition}")
    python = (f"{shlex.quote(project_dir)}/.venv/bin/python -m {experiment} --distributed "
              f"--coordinator=$COORDINATOR --num_processes=$SLURM_NTASKS "
              f"--process_id=$SLURM_PROCID --workdir={shlex.quote(workdir)} $RESUME")
    return "\n".join([
        "#!/bin/bash",
        *(f"#SBATCH {h}" for h in header),
        "set -euo pipefail",
        f'COORDINATOR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1):{port}"',
        f"RESUME=$( [ -e {shlex.quote(workdir)}/config.json ] && echo --resume || true )",
        "export COORDINATOR RESUME",
        f"srun --kill-on-bad-exit=1 bash -c {shlex.quote(python)}",
        ""])


def _define_flags() -> None:
    """The entry point's flags (defined only when run, so that the launchers can be imported
    together)."""
    flags.DEFINE_string("name", None, "Job name.", required=True)
    flags.DEFINE_integer("nodes", 1, "Nodes (one JAX process each).")
    flags.DEFINE_integer("gpus_per_node", 8, "GPUs per node.")
    flags.DEFINE_integer("cpus_per_node", 32, "CPU cores per node (input pipeline).")
    flags.DEFINE_string("time", "24:00:00", "Time limit, HH:MM:SS.")
    flags.DEFINE_string("partition", None, "SLURM partition.")
    flags.DEFINE_integer("port", 29500, "Coordinator port on the first node.")
    flags.DEFINE_string("workdir", None, "Shared run directory.", required=True)
    flags.DEFINE_string("experiment", None, "Module and flags after `python -m`.", required=True)
    flags.DEFINE_string("project_dir", ".", "The checkout (with .venv) on the nodes.")
    flags.DEFINE_bool("dry_run", False, "Print the script and command, run nothing.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    text = cmd.from_flags(script, (
        "name", "nodes", "gpus_per_node", "cpus_per_node", "time", "workdir", "experiment",
        "project_dir", "port", "partition"))
    path = Path(f"{f.workdir.rstrip('/')}.sbatch")
    if f.dry_run:
        print(f"# {path}\n{text}")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    cmd.execute([["sbatch", str(path)]], dry_run=f.dry_run)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
