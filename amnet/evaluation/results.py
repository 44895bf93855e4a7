"""A run's results on disk, the same for every framework (docs/sweeps.md has the schema).

    <run>/outputs.jsonl   one line per test utterance: the raw outputs
        {"id", "reference", "greedy", "beam" (null: not decoded), "branches",
         "beam_lm" (beam search with the run's LM fused, null: not decoded; optional)}
        `branches` has one digit per encoder frame: the branch that ran it ("0" = the only or
        the first branch), so FLOPs and latency can be recounted without the model.
    <run>/metrics.json    the scored run: `amnet.evaluation.scoring.score` of outputs.jsonl plus
    what the
        run was (framework, config, dataset, model description, hardware, train time).

Both are JSON (no pickle); `read_metrics` and `read_outputs` name the file and the field when
something is missing or of the wrong type.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from amnet.training import rundir

SCHEMA = "amnet-results/1"
OUTPUTS = "outputs.jsonl"
METRICS = rundir.METRICS  # its existence marks a finished run (`amnet.training.rundir.status`)

# metrics.json: field -> allowed JSON types (None: may be null).
FIELDS: dict[str, tuple[type | None, ...]] = {
    "schema": (str,),
    "run": (str,),
    "framework": (str,),  # "jax", "torch", or whatever produced it
    "dataset": (dict,),  # name, split, utterances, words, fingerprint
    "config": (dict, None),  # the resolved experiment config
    "model": (dict, None),  # TransducerConfig fields: what FLOPs are counted from
    "latency_model": (dict,),  # frame_period_s, processor_flops
    "wer_greedy": (float, int),
    "wer_beam": (float, int, None),
    "wer_beam_lm": (float, int, None),  # beam search + the run's n-gram LM (optional field)
    "mflops_per_frame": (float, int),
    "frames_per_branch": (dict,),  # branch spec -> share of test frames
    "upl_mean_ms": (float, int),
    "upl_p90_ms": (float, int),
    "upl_max_ms": (float, int),
    "update_bytes": (int, None),  # bytes shipped to a device for this model (neural diff)
    "train_time_s": (float, int, None),
    "hardware": (dict,),
}


# Fields added after the schema's first files: absent means null.
OPTIONAL = {"wer_beam_lm"}


class ResultsError(ValueError):
    """A results file is missing, unreadable or does not follow the schema."""


@dataclasses.dataclass(frozen=True)
class UtteranceOutput:
    id: str
    reference: str
    greedy: str
    beam: str | None
    branches: str  # one digit per encoder frame
    beam_lm: str | None = None

    def __post_init__(self):
        if not self.branches or not self.branches.isdigit():
            raise ResultsError(f"utterance {self.id!r}: branches must be a non-empty string of "
                               f"digits (one per encoder frame), got {self.branches[:20]!r}")


def write_outputs(path: str | Path, outputs: Sequence[UtteranceOutput]) -> None:
    with open(path, "w") as f:
        for output in outputs:
            f.write(json.dumps(dataclasses.asdict(output)) + "\n")


def read_outputs(path: str | Path) -> list[UtteranceOutput]:
    names = {f.name for f in dataclasses.fields(UtteranceOutput)}
    out = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise ResultsError(f"cannot read {path}: {e}") from None
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ResultsError(f"{path}:{number}: not JSON ({e})") from None
        if isinstance(record, dict):
            record.setdefault("beam_lm", None)
        if not isinstance(record, dict) or set(record) != names:
            got = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise ResultsError(f"{path}:{number}: expected fields {sorted(names)}, got {got}")
        try:
            out.append(UtteranceOutput(**record))
        except ResultsError as e:
            raise ResultsError(f"{path}:{number}: {e}") from None
    if not out:
        raise ResultsError(f"{path} holds no utterances")
    return out


def check_metrics(metrics: Any, source: str) -> dict:
    """`metrics` if it follows the schema; a ResultsError naming `source` and the field if not."""
    if not isinstance(metrics, dict):
        raise ResultsError(f"{source}: expected a JSON object, got {type(metrics).__name__}")
    if metrics.get("schema") != SCHEMA:
        raise ResultsError(f"{source}: schema {metrics.get('schema')!r}, expected {SCHEMA!r}")
    for name, types in FIELDS.items():
        if name not in metrics and name in OPTIONAL:
            continue
        if name not in metrics:
            raise ResultsError(f"{source}: missing field {name!r}")
        value = metrics[name]
        allowed = tuple(t for t in types if t is not None)
        if value is None and None in types:
            continue
        if isinstance(value, bool) or not isinstance(value, allowed):
            raise ResultsError(f"{source}: field {name!r} is {type(value).__name__}, expected "
                               f"{' or '.join(t.__name__ if t else 'null' for t in types)}")
    return metrics


def write_metrics(path: str | Path, metrics: dict) -> None:
    check_metrics(metrics, str(path))
    Path(path).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def read_metrics(path: str | Path) -> dict:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ResultsError(f"cannot read {path}: {e}") from None
    try:
        metrics = json.loads(text)
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: not JSON ({e})") from None
    return check_metrics(metrics, str(path))


def host_description() -> dict[str, Any]:
    """The machine, framework-independent part (the runner adds its framework's devices)."""
    return {"host": platform.node(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version()}
