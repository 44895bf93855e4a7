r"""Profiles of the train step and the streaming loop (jax.profiler), summarized by op.

    python -m benchmarks.profile --target=train_step [--batch=32 --steps=5] --out=runs/profile
    python -m benchmarks.profile --target=streaming [--frames=200] --out=runs/profile
    python -m benchmarks.profile --target=parts [--batch=32]     # the step's pieces, timed apart
        [--autodiff_lstm] [--loss_frames_per_chunk=4]             # variants, for before/after

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

_TARGET = flags.DEFINE_enum("target", "train_step", ["train_step", "parts", "streaming"],
                            "What to profile (`parts`: the train step's pieces timed apart).")
_BATCH = flags.DEFINE_integer("batch", 32, "train_step: utterances per step.")
_STEPS = flags.DEFINE_integer("steps", 5, "train_step: profiled steps.")
_FRAMES = flags.DEFINE_integer("frames", 200, "streaming: frames of the profiled utterance.")
_OUT = flags.DEFINE_string("out", "runs/profile", "Trace directory.")
_AUTODIFF_LSTM = flags.DEFINE_bool("autodiff_lstm", False, "Autodiff's LSTM backward instead of "
                                   "amnet.rnnt.lstm_recurrence (the before of that fix).")
_LOSS_CHUNK = flags.DEFINE_integer("loss_frames_per_chunk", None, "Override the config's "
                                   "fused-loss chunk.")
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


def _lstm_backward() -> str:
    return "autodiff" if _AUTODIFF_LSTM.value else "hand_written"


def profile_train_step(out: Path) -> float:
    from benchmarks import models

    bench = models.TrainStep(_BATCH.value, loss_frames_per_chunk=_LOSS_CHUNK.value,
                             lstm_backward=_lstm_backward())
    bench.run()
    start = time.perf_counter()
    with jax.profiler.trace(str(out), create_perfetto_trace=True):
        for _ in range(_STEPS.value):
            bench.run()
    return (time.perf_counter() - start) / _STEPS.value


def train_step_parts() -> dict[str, float]:
    """Median ms of the small train step and of its pieces, each jitted alone on the same
    batch: frontend, encoder (forward; forward + backward), prediction network (forward +
    backward), fused loss (+ backward) and its lattice recursion alone."""
    import statistics

    import jax.numpy as jnp

    from amnet.rnnt import frontend
    from amnet.rnnt import loss as rnnt
    from amnet.rnnt.transducer import Transducer
    from benchmarks import models

    bench = models.TrainStep(_BATCH.value, loss_frames_per_chunk=_LOSS_CHUNK.value,
                             lstm_backward=_lstm_backward())
    model, front, batch = bench.model, bench.front, bench.batch
    params = jax.tree.map(jnp.copy, bench.state.params)  # the step donates its state

    def median_ms(fn, *args) -> float:
        jax.block_until_ready(fn(*args))
        times = []
        for _ in range(5):
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times.append(time.perf_counter() - start)
        return 1e3 * statistics.median(times)

    features, lengths = jax.jit(lambda a, n: frontend.featurize(a, n, front))(
        batch["audio"], batch["audio_lengths"])
    tokens, token_lengths = batch["tokens"], batch["token_lengths"]
    encode = lambda p: model.apply({"params": p}, features, lengths,  # noqa: E731
                                   method=Transducer.encode)[0]
    predict = lambda p: model.apply({"params": p}, tokens, token_lengths,  # noqa: E731
                                    method=Transducer.predict)
    enc, pred = jax.jit(encode)(params), jax.jit(predict)(params)
    loss = lambda e, q, w, b: rnnt.rnnt_loss_fused(  # noqa: E731
        e, q, w, b, lengths, tokens, token_lengths,
        frames_per_chunk=model.config.loss_frames_per_chunk).sum()
    lattice = jnp.full((_BATCH.value, enc.shape[1], tokens.shape[1] + 1), -3.0)
    return {
        "whole step": median_ms(bench.run),
        "frontend (log-mel, stack)": median_ms(
            jax.jit(lambda a, n: frontend.featurize(a, n, front)), batch["audio"],
            batch["audio_lengths"]),
        "encoder forward": median_ms(jax.jit(encode), params),
        "encoder forward + backward": median_ms(
            jax.jit(jax.grad(lambda p: jnp.sum(encode(p)))), params),
        "prediction network forward + backward": median_ms(
            jax.jit(jax.grad(lambda p: jnp.sum(predict(p)))), params),
        "fused loss forward + backward": median_ms(
            jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))), enc, pred, params["output_kernel"],
            params["output_bias"]),
        "  of which the lattice recursion": median_ms(
            jax.jit(jax.grad(lambda b, e: rnnt.lattice_nll(b, e, lengths, token_lengths).sum(),
                             argnums=(0, 1))), lattice, lattice),
    }


def profile_streaming(out: Path) -> float:
    from amnet.amortized import streaming
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
    if _TARGET.value == "parts":
        print(f"| small train step, batch {_BATCH.value}, first bucket | ms (median of 5) |\n"
              "|---|---:|")
        for name, ms in train_step_parts().items():
            print(f"| {name} | {ms:.0f} |")
        return
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
