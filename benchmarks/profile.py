r"""Profiles of the train step and the streaming loop (jax.profiler), summarized by op.

    python -m benchmarks.profile --target=train_step [--batch=32 --steps=5] --out=runs/profile
    python -m benchmarks.profile --target=streaming [--frames=200] --out=runs/profile

Writes a TensorBoard/Perfetto trace under `--out` (open it with TensorBoard's profile plugin or
ui.perfetto.dev) and prints the events that took the most time in total: XLA's compiled ops
(fusions, dots, while loops) and the host-side work around them, each with its share of the
profiled wall time.
"""

from __future__ import annotations

import collections
import gzip
import json
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

_TARGET = flags.DEFINE_enum("target", "train_step", ["train_step", "streaming"], "What to profile.")
_BATCH = flags.DEFINE_integer("batch", 32, "train_step: utterances per step.")
_STEPS = flags.DEFINE_integer("steps", 5, "train_step: profiled steps.")
_FRAMES = flags.DEFINE_integer("frames", 200, "streaming: frames of the profiled utterance.")
_OUT = flags.DEFINE_string("out", "runs/profile", "Trace directory.")
_TOP = flags.DEFINE_integer("top", 15, "Events to print.")


def summarize(trace_dir: Path, top: int) -> tuple[float, list[tuple[str, float, int]]]:
    """(profiled wall seconds, [(event name, total seconds, count)]) of the newest Perfetto
    trace under `trace_dir`, top `top` by total time (nested events counted in full)."""
    traces = sorted(trace_dir.rglob("perfetto_trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not traces:
        raise FileNotFoundError(f"no perfetto_trace.json.gz under {trace_dir}")
    with gzip.open(traces[-1]) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    complete = [e for e in events if e.get("ph") == "X" and "dur" in e]
    if not complete:
        return 0.0, []
    begin = min(e["ts"] for e in complete)
    end = max(e["ts"] + e["dur"] for e in complete)
    totals: dict[str, float] = collections.defaultdict(float)
    counts: collections.Counter = collections.Counter()
    for e in complete:
        totals[e["name"]] += e["dur"] / 1e6
        counts[e["name"]] += 1
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return (end - begin) / 1e6, [(name, seconds, counts[name]) for name, seconds in ranked]


def profile_train_step(out: Path) -> float:
    from amnet import build, optim, train_step
    from amnet.transducer import Transducer
    from benchmarks import models

    config = models.small_config(_BATCH.value)
    front, augment = build.frontend_configs(config)
    model = Transducer(build.model_config(config, 29))
    optimizer = optim.make_optimizer(config.optimizer, 1000)
    mesh = train_step.make_mesh(1)
    state = train_step.create_train_state(model, optimizer, tuple(config.data.buckets[0]), front,
                                          config.seed, mesh)
    step = train_step.make_train_step(model, optimizer, mesh, front, augment)
    batch = train_step.global_batch(models.synthetic_batch(config, _BATCH.value), mesh)
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics["loss"])
    start = time.perf_counter()
    with jax.profiler.trace(str(out), create_perfetto_trace=True):
        for _ in range(_STEPS.value):
            state, metrics = step(state, batch)
            jax.block_until_ready(metrics["loss"])
    return (time.perf_counter() - start) / _STEPS.value


def profile_streaming(out: Path) -> float:
    from amnet import streaming
    from benchmarks.models import fresh_model

    model, params = fresh_model("single-dense")
    features = np.random.default_rng(0).normal(-3.0, 4.0, (_FRAMES.value, model.config.input_dim))
    recognizer = streaming.StreamingRecognizer(model, params)
    recognizer.run(features[:5])  # compile
    with jax.profiler.trace(str(out), create_perfetto_trace=True):
        result = recognizer.run(features)
    return float(result.frame_seconds.mean())


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    out = Path(_OUT.value) / _TARGET.value
    per_unit = (profile_train_step if _TARGET.value == "train_step" else profile_streaming)(out)
    unit = "step" if _TARGET.value == "train_step" else "frame"
    wall, ranked = summarize(out, _TOP.value)
    print(f"{_TARGET.value}: {1e3 * per_unit:.3f} ms per {unit} (wall, while tracing); "
          f"trace spans {wall:.3f} s; trace in {out}")
    print("| event | total ms | count | share of traced wall |\n|---|---:|---:|---:|")
    for name, seconds, count in ranked:
        print(f"| {name[:90]} | {1e3 * seconds:.1f} | {count} | {100 * seconds / wall:.1f}% |")


if __name__ == "__main__":
    app.run(main)
