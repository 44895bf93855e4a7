"""A run directory: its config (config.json), whether it is new, unfinished or finished, and
which config changes a resumed run refuses.

Layout: config.json (the resolved config, written first), metrics.jsonl, tensorboard/,
checkpoints/{latest,best}/, outputs.jsonl and, last, metrics.json (`amnet.evaluation.results`):
a run is finished when metrics.json exists, for JAX runs and PyTorch baselines alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import ml_collections

from amnet.data.input_pipeline import PipelineConfig
from amnet.rnnt import objective
from amnet.rnnt.transducer import TransducerConfig
from amnet.training import parallel

CONFIG = "config.json"  # the resolved config, written when the run starts
METRICS = "metrics.json"  # the scored results (`amnet.evaluation.results`), written last
RESULTS = "results.json"  # the JAX trainer's test WERs, written just before metrics.json


def status(workdir: str | Path) -> str:
    """"new" (no config.json), "unfinished" (a config, no metrics.json yet) or "finished"."""
    workdir = Path(workdir)
    if (workdir / METRICS).exists():
        return "finished"
    return "unfinished" if (workdir / CONFIG).exists() else "new"


class RunDirError(ValueError):
    """The run directory cannot be used as asked."""


# The config blocks that make a run what it is: a run continues only with the same ones.
IDENTITY = ("data", "frontend", "model", "loss", "optimizer", "seed", "amnet", "pruning", "init")


# Options added after runs were written, with the value that keeps the earlier behaviour: a
# block holding one of them at that value compares equal to a block without it, so that runs
# and checkpoints written before the option existed still resume.
ADDED_OPTIONS = {"data": {"speed_factors": list(PipelineConfig.speed_factors)},
                 "model": {"loss": TransducerConfig.loss,
                           "prune_range": TransducerConfig.prune_range,
                           "lstm_backward": TransducerConfig.lstm_backward},
                 "loss": {"simple_scale": objective.SIMPLE_SCALE,
                          "pruned_warmup_steps": objective.PRUNED_WARMUP_STEPS}}


def identity_block(name: str, block: Any) -> Any:
    """A config block (JSON form) without the added options that are at their old behaviour."""
    added = ADDED_OPTIONS.get(name, {})
    if not isinstance(block, dict):
        return block
    return {k: v for k, v in block.items() if not (k in added and v == added[k])}


def config_differences(previous: dict, current: dict) -> list[str]:
    """The `IDENTITY` blocks in which two configs (JSON form) differ."""
    return sorted(k for k in IDENTITY
                  if identity_block(k, previous.get(k)) != identity_block(k, current.get(k)))


def prepare_run_dir(workdir: Path, config: ml_collections.ConfigDict, resume: bool) -> None:
    """Creates the run dir and stores the config; refuses to mix runs (nothing is overwritten).

    Every process checks before process 0 writes, so that all agree on what they found.
    """
    stored = workdir / CONFIG
    if stored.exists():
        if not resume:
            raise RunDirError(f"run directory {workdir} already holds a run; pass --resume to "
                              "continue it or choose another --workdir")
        changed = config_differences(json.loads(stored.read_text()),
                                     json.loads(config.to_json()))
        if changed:
            raise RunDirError(f"--resume with a config that differs from {stored} in {changed}")
        return
    if resume:
        raise RunDirError(f"--resume: no run in {workdir} (no config.json)")
    parallel.sync("run directory checked")
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        stored.write_text(config.to_json(indent=2))
    parallel.sync("run directory written")


def read_run_config(workdir: str | Path, data_dir: str | None = None,
                    ) -> ml_collections.ConfigDict:
    """The resolved config a run stored in `workdir` (`prepare_run_dir`); `data_dir` replaces
    its data directory when given (the corpus was built elsewhere)."""
    config = ml_collections.ConfigDict(json.loads((Path(workdir) / CONFIG).read_text()))
    if data_dir:
        config.data.data_dir = data_dir
    return config


def train_time_before(workdir: Path, step: int) -> float:
    """Training seconds logged up to `step` by earlier segments of a resumed run."""
    seconds = 0.0
    log = workdir / "metrics.jsonl"
    if log.exists():
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if record.get("step", 0) <= step and "train_time_s" in record:
                seconds = max(seconds, float(record["train_time_s"]))
    return seconds
