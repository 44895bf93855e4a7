"""Streaming recognition, batch 1, one 30 ms frame per call, timed on the wall clock.

Per frame, one jitted call: the arbitrator scores the branches, `lax.switch` runs only the
chosen branch (`Encoder.step`), then greedy RNN-T decoding consumes the frame: the joint is
evaluated and, while it emits a label (at most `max_symbols_per_frame`), the prediction network
steps; a `lax.while_loop` stops at the first blank, so a silent frame costs one joint
evaluation. Each call is timed with `block_until_ready`; the first (compiling) call is
excluded. The whole stream state (LSTM states, decoder state, simulated finish time) travels as
one flat float32 vector: every output buffer of a jitted call costs several microseconds on the
host, as much as the low-rank branch's arithmetic, so one buffer instead of a dozen.

The backlog the arbitrator sees is the simulated processor's (`amnet.amortized.latency`, counted
FLOPs at
the model's configured speed), exactly as in training, so the decisions do not depend on the
speed of the machine running the benchmark.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from amnet.amortized.costs import frame_costs
from amnet.rnnt import decoding
from amnet.rnnt.transducer import Transducer

Params = Any


@dataclasses.dataclass(frozen=True)
class StreamResult:
    tokens: list[int]  # the greedy hypothesis
    branches: np.ndarray  # [T] branch run on each frame
    frame_flops: np.ndarray  # [T] counted FLOPs of each frame (C of its branch)
    frame_seconds: np.ndarray  # [T] measured wall clock of each frame's call


class StreamingRecognizer:
    """`recognizer.run(features [T, D]) -> StreamResult`, frame by frame."""

    def __init__(self, model: Transducer, params: Params, *, max_length: int = 160,
                 max_symbols_per_frame: int = 5):
        self.model, self.params, self.max_length = model, params, max_length
        self.branch_flops = np.asarray(frame_costs(model.config).per_branch, np.float64)

        def start(params):
            encoder_state, _ = model.apply({"params": params}, 1,
                                           method=Transducer.initial_state)
            return encoder_state, decoding.greedy_init(model, params, 1, max_length)

        self._initial, self._unflatten = jax.flatten_util.ravel_pytree(
            jax.jit(start)(params))  # token ids and frame counts are exact in float32

        def step(params, flat_state, frame):
            encoder_state, greedy_state = self._unflatten(flat_state)
            enc_proj, encoder_state, branch = model.apply(
                {"params": params}, frame[None], encoder_state, method=Transducer.encode_step)
            greedy_state = decoding.greedy_step(model, params, greedy_state, enc_proj,
                                                jnp.ones((1,), bool),
                                                max_symbols_per_frame=max_symbols_per_frame)
            return jax.flatten_util.ravel_pytree((encoder_state, greedy_state))[0], branch[0]

        self._step = jax.jit(step)

    def run(self, features: np.ndarray) -> StreamResult:
        state = self._initial
        frames = [jnp.asarray(f) for f in np.asarray(features, np.float32)]
        # Compile (and warm up) outside the timed loop.
        jax.block_until_ready(self._step(self.params, state, frames[0]))
        branches, seconds = [], []
        for frame in frames:
            begin = time.perf_counter()
            state, branch = self._step(self.params, state, frame)
            branch = int(jax.block_until_ready(branch))
            seconds.append(time.perf_counter() - begin)
            branches.append(branch)
        _, greedy_state = self._unflatten(state)
        length = int(greedy_state.lengths[0])
        branches = np.asarray(branches)
        return StreamResult(np.asarray(greedy_state.tokens[0, :length]).tolist(), branches,
                            self.branch_flops[branches], np.asarray(seconds))
