"""Metrics to disk: JSON lines always, TensorBoard event files (tensorboardX, no TensorFlow)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


class MetricWriter:
    """Writes `{step, time, **scalars}` records to `metrics.jsonl` and TensorBoard events.

    Only process 0 of a multi-host job writes (`enabled=False` elsewhere).
    """

    def __init__(self, workdir: str | Path, *, enabled: bool = True, tensorboard: bool = True):
        self._enabled = enabled
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(workdir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        if tensorboard:
            self._tb = _summary_writer(workdir / "tensorboard")

    def write(self, step: int, scalars: dict[str, Any]) -> None:
        if not self._enabled:
            return
        values = {k: float(np.asarray(v)) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **values}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for name, value in values.items():
                self._tb.add_scalar(name, value, int(step))

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _summary_writer(logdir: Path):
    """tensorboardX's writer, imported without PyTorch: tensorboardX imports torch whenever it is
    installed (2 s of every run's start), and scalars do not need it."""
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # `import torch` raises ImportError meanwhile
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hide:
            del sys.modules["torch"]
    return SummaryWriter(str(logdir))


def read_metrics(workdir: str | Path) -> list[dict[str, float]]:
    """The records of `metrics.jsonl`."""
    with open(Path(workdir) / "metrics.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
