"""Latency model: a single-thread FIFO processor consuming 30 ms encoder frames.

Frame t (0-based) arrives at a_t = (t + 1) * Δ and costs c_t FLOPs on a processor of P FLOP/s:
  f_t = max(f_{t-1}, a_t) + c_t / P,   f_{-1} = 0          (finish time of frame t)
  b_t = max(0, f_{t-1} - a_t)                             (backlog seen when frame t arrives)
  UPL = f_{T-1} - a_{T-1}                                 (user-perceived latency)
With c / P <= Δ for every frame the processor keeps up and UPL = c_{T-1} / P; with a constant
cost above real time, UPL = T c / P - (T - 1) Δ.

`backlog` and `finish` are the recursion's one step, for NumPy (`xp=np`) or JAX (`xp=jnp`);
`simulate` (the exact reference: float64, one utterance), `simulate_batch` (batched JAX, used in
training: the same recursion under `lax.scan`, differentiable in the costs almost everywhere
through `max`, padded frames beyond each length costing nothing) and the AmNet encoder's
per-frame routing (`amnet.amortized.encoder`) all run it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import jax


@dataclasses.dataclass(frozen=True)
class LatencyResult:
    latency_s: float  # user-perceived latency of the utterance
    backlog_s: np.ndarray  # [T] backlog when each frame arrives
    finish_s: np.ndarray  # [T] time each frame's processing ends


def backlog(previous_finish, arrival, xp=np):
    """b_t = max(0, f_{t-1} - a_t): the work still queued when frame t arrives, seconds."""
    return xp.maximum(0.0, previous_finish - arrival)


def finish(previous_finish, arrival, seconds, xp=np):
    """f_t = max(f_{t-1}, a_t) + c_t / P, with `seconds` = c_t / P."""
    return xp.maximum(previous_finish, arrival) + seconds


def simulate(frame_flops, *, frame_period_s: float, processor_flops: float) -> LatencyResult:
    """Exact FIFO simulation of one utterance; `frame_flops` `[T]` (T >= 1)."""
    costs = np.asarray(frame_flops, dtype=np.float64)
    if costs.ndim != 1 or costs.size == 0:
        raise ValueError(f"frame_flops must be a non-empty 1-D sequence, got shape {costs.shape}")
    if np.any(costs < 0) or not np.all(np.isfinite(costs)):
        raise ValueError("frame_flops must be finite and non-negative")
    if frame_period_s <= 0 or processor_flops <= 0:
        raise ValueError(f"frame_period_s ({frame_period_s}) and processor_flops "
                         f"({processor_flops}) must be positive")
    finishes = np.empty_like(costs)
    backlogs = np.empty_like(costs)
    previous = 0.0
    for t, cost in enumerate(costs):
        arrival = (t + 1) * frame_period_s
        backlogs[t] = backlog(previous, arrival)
        previous = finish(previous, arrival, cost / processor_flops)
        finishes[t] = previous
    return LatencyResult(float(finishes[-1] - costs.size * frame_period_s), backlogs, finishes)


def simulate_batch(frame_flops: jax.Array, lengths: jax.Array, *, frame_period_s: float,
                   processor_flops: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Batched simulation.

    Args:
      frame_flops: `[B, T]` cost of each frame (frames at or beyond `lengths` are ignored).
      lengths: `[B]` frames per utterance (>= 1).
    Returns:
      latency `[B]`, backlog `[B, T]`, finish `[B, T]` (seconds, float32; padded frames hold the
      last real frame's finish time and zero backlog).
    """
    import jax  # here, so that NumPy users of the step (the device runtime) do not load JAX
    import jax.numpy as jnp

    batch, frames = frame_flops.shape
    valid = jnp.arange(frames)[None, :] < lengths[:, None]
    seconds = jnp.where(valid, frame_flops / processor_flops, 0.0).swapaxes(0, 1)  # [T, B]
    arrivals = (jnp.arange(frames, dtype=jnp.float32) + 1.0) * frame_period_s

    def step(previous, inputs):
        cost, arrival, is_valid = inputs
        waiting = jnp.where(is_valid, backlog(previous, arrival, jnp), 0.0)
        done = jnp.where(is_valid, finish(previous, arrival, cost, jnp), previous)
        return done, (waiting, done)

    _, (backlogs, finishes) = jax.lax.scan(step, jnp.zeros((batch,), jnp.float32),
                                           (seconds, arrivals, valid.swapaxes(0, 1)))
    finishes, backlogs = finishes.swapaxes(0, 1), backlogs.swapaxes(0, 1)
    last = finishes[jnp.arange(batch), lengths - 1]
    return last - lengths * frame_period_s, backlogs, finishes
