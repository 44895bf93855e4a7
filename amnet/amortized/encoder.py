"""The AmNet encoder: K LSTM-stack branches sharing one state, one branch chosen per frame.

Branch k is a whole stack of L LSTM layers whose weights are stored as its `LinearSpec`
(dense, sparse(s), lowrank(r)); all branches have the same hidden sizes, so the per-layer
state (h, c) is shared: whichever branch runs on frame t hands its state to frame t + 1.

Per frame t (shapes for a batch of B utterances):
  b_t   = max(0, f_{t-1} - a_t)                       backlog of the simulated processor [B]
  z_t   = arbitrator(x_t, log1p(b_t / Δ))             logits [B, K]
  g_t   = straight-through Gumbel one-hot (training, `noise` given) or onehot(argmax z_t)
  s^k_t = branch_k(x_t, s_{t-1})                      every layer's (h, c), for each k
  s_t   = Σ_k g_t[k] s^k_t                            = the chosen branch's state (g is one-hot)
  c_t   = Σ_k g_t[k] C_k;  f_t = max(f_{t-1}, a_t) + c_t / P   (`amnet.amortized.latency`)
with C_k the counted FLOPs of a frame routed to branch k (arbitrator, branch, decoder work),
a_t = (t + 1) Δ and P the processor speed the model is trained for. The backlog enters the
arbitrator under stop_gradient. Training computes every branch; `step` (streaming, batch 1)
runs only the chosen one through `lax.switch`, so the saving is real.

K >= 2: a single stack is the generic encoder, `amnet.rnnt.encoder.Encoder` (layer by layer,
input products hoisted out of the time loop), with the same parameter paths as branch 0 here.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from amnet.amortized import latency, router
from amnet.amortized.arbitrator import Arbitrator, ArbitratorWeights, arbitrator_logits
from amnet.rnnt.flops import LinearSpec
from amnet.rnnt.lstm import Carry, LayerWeights, LSTMStack, layer_step, lstm_cell, matmul


class EncoderState(NamedTuple):
    """What a stream carries from frame to frame."""

    carries: list[Carry]  # per layer (h [B, P], c [B, H]), shared by all branches
    finish: jax.Array  # [B] simulated finish time of the last frame, seconds
    frames: jax.Array  # [B] frames consumed so far


class RoutingTrace(NamedTuple):
    """Per-frame routing record of a whole-sequence pass (zeros past each length)."""

    logits: jax.Array  # [B, T, K] arbitrator logits z_t
    gates: jax.Array  # [B, T, K] one-hot decisions (straight-through in training)
    soft: jax.Array  # [B, T, K] the Gumbel-softmax sample y (training) or softmax(z) (inference)
    frame_flops: jax.Array  # [B, T] counted FLOPs of each frame (C of the chosen branch)
    backlog: jax.Array  # [B, T] backlog b_t seen by the arbitrator, seconds
    finish: jax.Array  # [B, T] finish time f_t, seconds


def _branch_step(weights: Sequence[LayerWeights], first_gates: jax.Array,
                 carries: Sequence[Carry]) -> list[Carry]:
    """One frame through one branch, given its first layer's input gates `[B, 4H]`."""
    first = weights[0]
    out = [lstm_cell(first_gates, carries[0], first.recurrent_kernel, first.projection)]
    for layer, carry in zip(weights[1:], carries[1:], strict=True):
        out.append(layer_step(layer, out[-1][0], carry))
    return out


def _mix(gate: jax.Array, states: Sequence[list[Carry]]) -> list[Carry]:
    """Σ_k gate[:, k] * states[k], layer by layer; gate `[B, K]`."""
    return jax.tree.map(lambda *xs: sum(gate[:, k, None] * x for k, x in enumerate(xs)),
                        *states)


class Encoder(nn.Module):
    input_dim: int
    hidden: int
    num_layers: int
    projection: int | None = None
    dtype: jnp.dtype = jnp.float32
    branches: tuple[LinearSpec, ...] = (LinearSpec(),)
    arbitrator_hidden: int = 16
    branch_flops: tuple[float, ...] = (0.0,)  # C_k: counted FLOPs of a frame sent to branch k
    frame_period_s: float = 0.03
    processor_flops: float = 1e8
    hand_written_backward: bool = True  # `amnet.rnnt.lstm.LSTM.hand_written_backward`

    def setup(self):
        if len(self.branches) < 2:
            raise ValueError(f"an AmNet encoder needs two or more branches, got "
                             f"{len(self.branches)} (one stack: amnet.rnnt.encoder.Encoder)")
        if len(self.branch_flops) != len(self.branches):
            raise ValueError(f"{len(self.branches)} branches but {len(self.branch_flops)} costs")
        self.branch = [LSTMStack(self.input_dim, self.hidden, self.num_layers, self.projection,
                                 self.dtype, spec, self.hand_written_backward)
                       for spec in self.branches]
        self.arbitrator = Arbitrator(self.input_dim, self.arbitrator_hidden, len(self.branches))

    @property
    def output_dim(self) -> int:
        return self.projection or self.hidden

    def initial_state(self, batch: int) -> EncoderState:
        return EncoderState(self.branch[0].initial_carry(batch), jnp.zeros((batch,)),
                            jnp.zeros((batch,), jnp.int32))

    def _weights(self) -> tuple[list[list[LayerWeights]], ArbitratorWeights]:
        return ([[layer.weights() for layer in stack.layers] for stack in self.branch],
                self.arbitrator.weights())

    def _decide(self, arbitrator: ArbitratorWeights, x_t: jax.Array, finish: jax.Array,
                arrival: jax.Array):
        """(backlog [B], logits [B, K]) for frames x_t `[B, D]` arriving at `arrival` `[B]`."""
        waiting = latency.backlog(finish, arrival, jnp)
        feature = jnp.log1p(jax.lax.stop_gradient(waiting) / self.frame_period_s)
        return waiting, arbitrator_logits(arbitrator, x_t, feature)

    def __call__(self, x: jax.Array, lengths: jax.Array, state: EncoderState | None = None, *,
                 noise: jax.Array | None = None, temperature: jax.Array | float = 1.0,
                 ) -> tuple[jax.Array, EncoderState, RoutingTrace]:
        """x `[B, T, D]`, lengths `[B]` -> outputs `[B, T, P]`, the state after each length and
        the routing trace.

        noise: Gumbel(0, 1) noise `[B, T, K]` for stochastic training-time routing; None routes
          by argmax (inference).
        """
        batch, frames, _ = x.shape
        state = self.initial_state(batch) if state is None else state
        branches, arbitrator = self._weights()
        costs = jnp.asarray(self.branch_flops, jnp.float32)
        first_gates = jnp.stack([matmul(x, w[0].input_kernel) + w[0].bias for w in branches])
        time = jnp.arange(frames)
        arrivals = (state.frames[None, :] + time[:, None] + 1) * self.frame_period_s  # [T, B]
        valid = time[:, None] < lengths[None, :]  # [T, B]
        inputs = (x.swapaxes(0, 1), first_gates.transpose(2, 0, 1, 3), arrivals, valid,
                  None if noise is None else noise.swapaxes(0, 1))

        def step(carry, inputs):
            carries, finish = carry
            x_t, gates_x, arrival, valid_t, noise_t = inputs
            backlog, logits = self._decide(arbitrator, x_t, finish, arrival)
            if noise_t is None:
                gate = jax.nn.one_hot(router.route(logits), len(branches))
                soft = jax.nn.softmax(logits, axis=-1)
            else:
                gate, soft = router.straight_through(logits, noise_t, temperature)
            mixed = _mix(gate, [_branch_step(w, gates_x[k], carries)
                                for k, w in enumerate(branches)])
            cost = gate @ costs
            new_finish = latency.finish(finish, arrival, cost / self.processor_flops, jnp)
            keep = valid_t[:, None]
            carries = jax.tree.map(lambda n, o: jnp.where(keep, n, o), mixed, carries)
            finish = jnp.where(valid_t, new_finish, finish)
            record = (jnp.where(keep, mixed[-1][0], 0.0), logits, gate, soft,
                      jnp.where(valid_t, cost, 0.0), jnp.where(valid_t, backlog, 0.0), finish)
            return (carries, finish), record

        (carries, finish), records = jax.lax.scan(step, (state.carries, state.finish), inputs)
        outputs, *trace = (r.swapaxes(0, 1) for r in records)
        return (outputs, EncoderState(carries, finish, state.frames + lengths),
                RoutingTrace(*trace))

    def step(self, x_t: jax.Array, state: EncoderState,
             ) -> tuple[jax.Array, EncoderState, jax.Array]:
        """One frame x_t `[B, D]` -> output `[B, P]`, new state, branch taken `[B]`.

        With batch 1 only the chosen branch runs (`lax.switch`); larger batches compute every
        branch and select, with the same result.
        """
        batch = x_t.shape[0]
        frames = state.frames + 1
        branches, arbitrator = self._weights()
        arrival = frames * self.frame_period_s
        _, logits = self._decide(arbitrator, x_t, state.finish, arrival)
        choice = router.route(logits).astype(jnp.int32)

        def run(weights, carries):
            return _branch_step(weights, matmul(x_t, weights[0].input_kernel)
                                + weights[0].bias, carries)

        if batch == 1:
            carries = jax.lax.switch(choice[0], [functools.partial(run, w) for w in branches],
                                     state.carries)
        else:
            carries = _mix(jax.nn.one_hot(choice, len(branches)),
                           [run(w, state.carries) for w in branches])
        cost = jnp.asarray(self.branch_flops, jnp.float32)[choice]
        finish = latency.finish(state.finish, arrival, cost / self.processor_flops, jnp)
        return carries[-1][0], EncoderState(carries, finish, frames), choice
