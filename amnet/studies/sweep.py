r"""Sweeps: a grid or list of `--config.*` overrides, run here or emitted as launch commands.

    python -m experiments.sweep --sweep=experiments/sweeps/tiny_2x2.toml \
        --workdir=runs/sweeps/tiny_2x2 [--mode=local|commands|tpu_vm|slurm] [--data_dir=...]
        [--set=train.steps=400 ...] \
        [--launcher_flags="--name=asr --zone=... --accelerator_type=v5litepod-16 --bucket=b"]

A sweep file (TOML) names one config and the overrides of each run:

    config = "experiments/configs/baseline.py:tiny"   # file[:preset], as --config
    [fixed]                                           # every run
    "train.steps" = 40
    [grid]                                            # every combination (runs named after it)
    "model.encoder_hidden" = [16, 32]
    "model.encoder_layers" = [1, 2]
    [[runs]]                                          # and/or a list of named runs
    name = "torch_h32_l1"
    framework = "torch"                               # jax (default) or torch
    overrides = { "model.encoder_hidden" = 32, "model.encoder_layers" = 1 }

Each run gets `<workdir>/<run>/` with the shared results (metrics.json, `amnet.evaluation.results`).
`--mode=local` trains and evaluates the runs one after another in this process: a finished run
(metrics.json with the same config) is skipped, an interrupted JAX run resumes, an interrupted
PyTorch run starts again. The other modes print one command per unfinished run instead:
`commands` the local command lines, `tpu_vm`/`slurm` the launcher invocations (`launch/`) with
`--launcher_flags` added; PyTorch runs are always printed as local commands (CPU baselines).
`<workdir>/sweep.json` lists the runs and their overrides. Compare with experiments/compare.py.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import re
import shlex
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections

from amnet import trainer
from amnet.evaluation import results as results_io
from amnet.rnnt import cmvn
from amnet.training import rundir

FRAMEWORKS = {"jax": "experiments.train", "torch": "experiments.torch_baselines.train"}
MODES = ("local", "commands", "tpu_vm", "slurm")


class SweepError(ValueError):
    """The sweep file or the sweep directory cannot be used as asked."""


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    framework: str
    config: str  # file[:preset]
    overrides: dict[str, Any]

    def command(self, workdir: str | None, data_dir: str | None) -> list[str]:
        """`python -m <entry point> --config=... --config.<key>=<value> ... --workdir=...`."""
        args = [sys.executable, "-m", FRAMEWORKS[self.framework], f"--config={self.config}"]
        args += [f"--config.{k}={_flag_value(v)}" for k, v in self.overrides.items()]
        if data_dir:
            args.append(f"--config.data.data_dir={data_dir}")
        if workdir:
            args.append(f"--workdir={workdir}")
        return args


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return ",".join(_flag_value(v) for v in value)
    return str(value)


def _run_name(overrides: dict[str, Any]) -> str:
    parts = [f"{key.rsplit('.', 1)[-1]}-{_flag_value(value)}" for key, value in overrides.items()]
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", "_".join(parts)) or "default"


def read_sweep(path: str | Path) -> list[Run]:
    """The runs of a sweep file (see the module docstring)."""
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text())
    except OSError as e:
        raise SweepError(f"cannot read sweep file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise SweepError(f"{path}: not TOML ({e})") from None
    unknown = sorted(set(spec) - {"config", "fixed", "grid", "runs"})
    if unknown:
        raise SweepError(f"{path}: unknown keys {unknown} (config, fixed, grid, runs)")
    if not isinstance(spec.get("config"), str):
        raise SweepError(f"{path}: `config` (file[:preset]) is required")
    fixed, grid = spec.get("fixed", {}), spec.get("grid", {})
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: grid entry {key!r} must be a non-empty list")
    runs = []
    for combination in itertools.product(*grid.values()) if grid else []:
        overrides = dict(zip(grid, combination, strict=True))
        runs.append(Run(f"jax_{_run_name(overrides)}", "jax", spec["config"],
                        {**fixed, **overrides}))
    for i, entry in enumerate(spec.get("runs", [])):
        extra = sorted(set(entry) - {"name", "framework", "config", "overrides"})
        if extra or "name" not in entry:
            raise SweepError(f"{path}: runs[{i}] needs a name and may have framework, config, "
                             f"overrides (unknown: {extra})")
        framework = entry.get("framework", "jax")
        if framework not in FRAMEWORKS:
            raise SweepError(f"{path}: runs[{i}] ({entry['name']}): framework {framework!r}, "
                             f"choose from {sorted(FRAMEWORKS)}")
        runs.append(Run(entry["name"], framework, entry.get("config", spec["config"]),
                        {**fixed, **entry.get("overrides", {})}))
    names = [r.name for r in runs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SweepError(f"{path}: run names used twice: {repeated}")
    if not runs:
        raise SweepError(f"{path}: no runs (give a grid or runs)")
    return runs


def load_config(spec: str) -> ml_collections.ConfigDict:
    """`get_config(preset)` of a config file `file[:preset]` (what --config loads)."""
    file, _, preset = spec.partition(":")
    if not Path(file).is_file():
        raise SweepError(f"config file {file} not found (paths are relative to {Path.cwd()})")
    module_spec = importlib.util.spec_from_file_location(f"sweep_config_{Path(file).stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(preset) if preset else module.get_config()


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any],
                    source: str) -> ml_collections.ConfigDict:
    """`config` with `--config.<key>=<value>` overrides; unknown keys and wrong types are
    named with `source`."""
    config = config.copy_and_resolve_references()
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
            if not isinstance(node, ml_collections.ConfigDict):
                raise SweepError(f"{source}: no config block {key.rsplit('.', 1)[0]!r} "
                                 f"(override {key!r})")
        if leaf not in node:
            raise SweepError(f"{source}: no config field {key!r}")
        if isinstance(value, list) and (node[leaf] is None or isinstance(node[leaf], tuple)):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        try:
            node[leaf] = value
        except (TypeError, ValueError) as e:
            raise SweepError(f"{source}: override {key}={value!r}: {e}") from None
    return config


def run_config(run: Run, data_dir: str | None) -> ml_collections.ConfigDict:
    config = apply_overrides(load_config(run.config), run.overrides, f"run {run.name}")
    if data_dir:
        config.data.data_dir = data_dir
    return config


def status(run: Run, config: ml_collections.ConfigDict, run_dir: Path) -> str:
    """`new`, `unfinished` or `finished`; a finished run with another config is an error."""
    state = rundir.status(run_dir)
    if state == "finished":
        if not (run_dir / rundir.CONFIG).exists():
            raise SweepError(f"run {run.name}: {run_dir} holds results but no config.json (not "
                             "a run of this sweep); move it away or rename the run")
        stored = json.loads((run_dir / "config.json").read_text())
        # The CMVN statistics a run computed for itself are part of its stored config.
        current = json.loads(cmvn.resolve(config, stored=run_dir / "config.json").to_json())
        for both in (stored, current):
            both.get("data", {}).pop("data_dir", None)
        changed = rundir.config_differences(stored, current)
        if stored.get("train", {}).get("steps") != current["train"]["steps"]:
            changed.append("train.steps")
        if changed:
            raise SweepError(f"run {run.name} in {run_dir} is finished with another config "
                             f"(differs in {changed}); move it away or rename the run")
        return "finished"
    return state


def run_locally(run: Run, config: ml_collections.ConfigDict, run_dir: Path,
                state: str) -> dict:
    if run.framework == "torch":
        try:
            from amnet.torch_baselines import train as torch_train
        except ImportError as e:
            raise SweepError(f"run {run.name} needs PyTorch, the optional extra `torch` "
                             f"(pip install -e '.[torch]'): {e}") from None

        return torch_train.train_and_evaluate(config, str(run_dir),
                                              restart=state == "unfinished")
    trainer.train_and_evaluate(config, str(run_dir), resume=state == "unfinished")
    return results_io.read_metrics(run_dir / results_io.METRICS)


def launcher_command(run: Run, mode: str, workdir: Path, data_dir: str | None,
                     launcher_flags: str, sweep_name: str) -> list[str]:
    """The command that runs `run` in `mode` (see the module docstring)."""
    if mode == "commands" or run.framework == "torch":
        return run.command(str(workdir / run.name), data_dir)
    experiment = shlex.join(run.command(None, data_dir)[2:])  # after `python -m`
    extra = shlex.split(launcher_flags)
    if mode == "tpu_vm":
        return [sys.executable, "-m", "launch.tpu_vm", *extra, f"--run={sweep_name}/{run.name}",
                f"--experiment={experiment}"]
    return [sys.executable, "-m", "launch.slurm", *extra, f"--name={sweep_name}-{run.name}",
            f"--workdir={workdir / run.name}", f"--experiment={experiment}"]


def parse_settings(settings: Sequence[str]) -> dict[str, Any]:
    """`key=value` strings (values in TOML syntax; bare words are strings) -> overrides."""
    out = {}
    for setting in settings:
        key, sep, text = setting.partition("=")
        if not sep or not key:
            raise SweepError(f"--set {setting!r}: expected key=value")
        try:
            out[key] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = text
    return out


def sweep(sweep_file: str, workdir: str, *, mode: str = "local", data_dir: str | None = None,
          launcher_flags: str = "", settings: dict[str, Any] | None = None,
          ) -> list[dict] | list[str]:
    """Runs the sweep (`local`: the metrics of every run) or returns its command lines.
    `settings` are overrides added to every run (last, so they win)."""
    if mode not in MODES:
        raise SweepError(f"--mode must be one of {MODES}, got {mode!r}")
    runs = [dataclasses.replace(r, overrides={**r.overrides, **(settings or {})})
            for r in read_sweep(sweep_file)]
    workdir_path = Path(workdir)
    configs = {r.name: run_config(r, data_dir) for r in runs}  # every override checked first
    states = {r.name: status(r, configs[r.name], workdir_path / r.name) for r in runs}
    if mode != "local":
        return [shlex.join(launcher_command(r, mode, workdir_path, data_dir, launcher_flags,
                                            Path(sweep_file).stem))
                for r in runs if states[r.name] != "finished"]
    workdir_path.mkdir(parents=True, exist_ok=True)
    (workdir_path / "sweep.json").write_text(json.dumps(
        {"sweep_file": str(sweep_file), "runs": [dataclasses.asdict(r) for r in runs]},
        indent=2) + "\n")
    out = []
    for i, run in enumerate(runs, start=1):
        run_dir, state = workdir_path / run.name, states[run.name]
        if state == "finished":
            print(f"[{i}/{len(runs)}] {run.name}: finished, skipped")
            out.append(results_io.read_metrics(run_dir / results_io.METRICS))
            continue
        action = {"new": "training", "unfinished": "resuming" if run.framework == "jax"
                  else "restarting (PyTorch runs do not resume)"}[state]
        print(f"[{i}/{len(runs)}] {run.name}: {action} ({run.framework}, {run.overrides})",
              flush=True)
        metrics = run_locally(run, configs[run.name], run_dir, state)
        print(f"[{i}/{len(runs)}] {run.name}: WER {metrics['wer_greedy']:.2%}, "
              f"{metrics['mflops_per_frame']:.2f} MFLOPs/frame", flush=True)
        out.append(metrics)
    return out
