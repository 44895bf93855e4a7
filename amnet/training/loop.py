"""The training loop, one for every trainer: a whole JAX run (`amnet.trainer`), model updates
(`amnet.studies.update_trainer`) and the PyTorch baselines (`amnet.torch_baselines.train`).
It takes steps of a train step (`amnet.training.step`, or PyTorch's) on batches placed where
the step wants them (`place`: JAX's global batches over a mesh), counts steps whose loss or
gradient is not finite (the step itself leaves the state unchanged then) and stops the run when
too many come in a row, runs the caller's per-step hooks (logging, validation, checkpoints,
pruning of a diff), and with `on_preempt` turns SIGTERM / SIGINT into a clean stop after the
step in flight, agreed by every process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from absl import logging
from jax.sharding import Mesh

from amnet.training import parallel, preemption

# hook(step, state, metrics) -> the state to continue with (None: unchanged). `metrics` are the
# step's (`make_train_step`) plus "nonfinite_steps", the skipped steps so far.
Hook = Callable[[int, Any, dict[str, Any]], Any]


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


def global_batches(mesh: Mesh) -> Callable[[dict], dict]:
    """`place` of the JAX trainers: process-local rows -> a global batch sharded over `mesh`."""
    return lambda batch: parallel.global_batch(batch, mesh)


def fit(step_fn: Callable, state: Any, batches: Iterator[dict], place: Callable[[dict], Any],
        steps: Iterable[int], *, max_nonfinite_steps: int, hooks: Sequence[Hook] = (),
        on_nonfinite_stop: Callable[[], str] | None = None,
        on_preempt: Callable[[int, Any], None] | None = None,
        ) -> tuple[Any, str | None]:
    """Trains `state` over `steps` (step numbers, 1-based); returns (state, the name of the
    signal that stopped training early, or None).

    step_fn: `(state, placed batch) -> (state, metrics)` with metrics "nonfinite" (0/1).
    batches: process-local batches (`amnet.data.input_pipeline.make_dataset`); `place` turns
      each into the step's input (`global_batches(mesh)` for a JAX step).
    max_nonfinite_steps: more consecutive non-finite steps than this raise `NonFiniteError`,
      after `on_nonfinite_stop()` (its text ends the message: where the last good params are).
    on_preempt: when given, SIGTERM / SIGINT in any process stop training after the step in
      flight; `on_preempt(step, state)` runs first (save a checkpoint).
    """
    run = total = 0
    with preemption.Preemption() if on_preempt is not None else _NoSignals() as signals:
        for step in steps:
            state, metrics = step_fn(state, place(next(batches)))
            if int(metrics["nonfinite"]):
                run, total = run + 1, total + 1
                logging.warning("step %d: non-finite loss or gradient, update skipped (%d in a "
                                "row)", step, run)
                if run > max_nonfinite_steps:
                    where = on_nonfinite_stop() if on_nonfinite_stop is not None else ""
                    raise NonFiniteError(
                        f"{run} consecutive steps up to {step} had a non-finite loss or "
                        f"gradient (max_nonfinite_steps={max_nonfinite_steps}); every one was "
                        f"skipped{where}")
            else:
                run = 0
            metrics = {**metrics, "nonfinite_steps": total}
            for hook in hooks:
                state = hook(step, state, metrics) or state
            if on_preempt is not None and parallel.agreed(signals.signal_name is not None):
                on_preempt(step, state)
                return state, signals.signal_name or "a signal to another process"
    return state, None


class _NoSignals:
    """Signals keep their default handlers (a run that cannot stop cleanly half-way)."""

    signal_name = None

    def __enter__(self) -> _NoSignals:
        return self

    def __exit__(self, *exc) -> None:
        pass
