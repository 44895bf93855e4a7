"""The transducer in NumPy, one frame and one label at a time (`amnet.rnnt.transducer`'s equations).

Encoder (batch 1): per frame, with K >= 2 branches, the arbitrator scores the branches from the
frame and the simulated processor's backlog (`amnet.amortized.encoder`), and only the chosen branch
runs;
its LSTM states go on to the next frame, whichever branch ran. Prediction network (LSTM or
stateless) and joint take a leading axis N of hypotheses (beam search). All arithmetic is
float32 (also for a model trained with bfloat16 matmuls); sums may round differently from XLA's
in the last bits (an LSTM layer's two products are one here), which the parity tests and the
test-split comparison (`benchmarks/device.py`) show does not change a decision in practice.

Shapes: x `[1, D]` stacked features; carries (h `[N, P]`, c `[N, H]`) per layer; enc_proj and
pred_proj `[N, J]`; logits `[N, V]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import scipy.special

from amnet.amortized import latency
from amnet.device import kernels
from amnet.device.spec import DeviceSpec
from amnet.rnnt.flops import LinearSpec

Carry = tuple[np.ndarray, np.ndarray]


class LSTMLayer:
    def __init__(self, params: Mapping[str, np.ndarray], prefix: str, spec: LinearSpec,
                 int8: bool = False):
        self.bias = np.asarray(params[f"{prefix}/bias"], np.float32)
        has_projection = any(k.startswith(f"{prefix}/projection_kernel") for k in params)
        self.projection = (kernels.stored(kernels.linear(params, f"{prefix}/projection_kernel",
                                                         spec), int8)
                           if has_projection else None)
        self.hidden = self.bias.shape[0] // 4
        self.output_dim = (self.projection.shape[1] if self.projection is not None
                           else self.hidden)
        self.gates = kernels.stored(kernels.stacked(  # [x, h] -> both products, quantized together
            kernels.linear(params, f"{prefix}/input_kernel", spec),
            kernels.linear(params, f"{prefix}/recurrent_kernel", spec)), int8)

    def initial_carry(self, n: int) -> Carry:
        return (np.zeros((n, self.output_dim), np.float32),
                np.zeros((n, self.hidden), np.float32))

    def step(self, x: np.ndarray, carry: Carry) -> Carry:
        """x `[N, D]`, carry -> the new (h, c)."""
        h, c = carry
        gates = self.gates(np.concatenate([x, h], axis=-1)) + self.bias
        hidden = self.hidden
        sig = scipy.special.expit(gates)  # i, f and o (g's column block unused)
        c = sig[:, hidden:2 * hidden] * c + sig[:, :hidden] * np.tanh(
            gates[:, 2 * hidden:3 * hidden])
        h = sig[:, 3 * hidden:] * np.tanh(c)
        if self.projection is not None:
            h = self.projection(h)
        return h, c


def _layers(params: Mapping[str, np.ndarray], prefix: str, count: int,
            spec: LinearSpec = kernels.DENSE, int8: bool = False) -> list[LSTMLayer]:
    return [LSTMLayer(params, f"{prefix}/layers_{i}", spec, int8) for i in range(count)]


class EncoderState(NamedTuple):
    carries: list[Carry]  # per layer, shared by the branches
    finish: np.float32  # simulated finish time of the last frame, seconds
    frames: int  # frames consumed


class Encoder:
    """The streaming encoder; with K >= 2 branches only the chosen one runs per frame."""

    def __init__(self, spec: DeviceSpec, params: Mapping[str, np.ndarray], int8: bool = False):
        m = spec.model
        self.branches = [_layers(params, f"encoder/branch_{k}", m["encoder_layers"], s, int8)
                         for k, s in enumerate(spec.branches)]
        self.costs = spec.branch_flops()
        self.period = np.float32(m["frame_period_s"])
        self.speed = np.float32(m["processor_flops"])
        if len(self.branches) > 1:
            self.w1, self.b1, self.w2, self.b2 = (
                np.asarray(params[f"encoder/arbitrator/{n}"], np.float32)
                for n in ("w1", "b1", "w2", "b2"))

    def initial_state(self) -> EncoderState:
        return EncoderState([layer.initial_carry(1) for layer in self.branches[0]],
                            np.float32(0.0), 0)

    def decide(self, x: np.ndarray, finish: np.float32, arrival: np.float32) -> np.ndarray:
        """The arbitrator's logits `[1, K]` for frame x `[1, D]` arriving at `arrival`."""
        waiting = latency.backlog(finish, arrival)
        feature = np.full((1, 1), np.log1p(waiting / self.period), np.float32)
        hidden = np.maximum(np.concatenate([x, feature], axis=-1) @ self.w1 + self.b1, 0)
        return np.concatenate([hidden, feature], axis=-1) @ self.w2 + self.b2

    def step(self, x: np.ndarray, state: EncoderState) -> tuple[np.ndarray, EncoderState, int]:
        """Frame x `[1, D]` -> output `[1, P]`, the new state, the branch that ran."""
        frames = state.frames + 1
        choice, finish = 0, state.finish
        if len(self.branches) > 1:
            arrival = np.float32(frames) * self.period
            choice = int(np.argmax(self.decide(x, state.finish, arrival)[0]))
            finish = latency.finish(state.finish, arrival, self.costs[choice] / self.speed)
        carries, out = [], x
        for layer, carry in zip(self.branches[choice], state.carries, strict=True):
            carry = layer.step(out, carry)
            carries.append(carry)
            out = carry[0]
        return out, EncoderState(carries, np.float32(finish), frames), choice


class Predictor:
    """Embedding, then an LSTM stack or the stateless window (`amnet.rnnt.predictor`)."""

    def __init__(self, spec: DeviceSpec, params: Mapping[str, np.ndarray], int8: bool = False):
        m = spec.model
        self.embedding = np.asarray(params["embed/embedding"], np.float32)
        self.stateless = m["predictor"] == "stateless"
        if self.stateless:
            self.context = int(m["predictor_context"])
            self.kernel = kernels.stored(kernels.linear(params, "predictor/layer/kernel"), int8)
            self.bias = np.asarray(params["predictor/layer/bias"], np.float32)
        else:
            self.layers = _layers(params, "predictor", m["predictor_layers"], int8=int8)

    def initial_carry(self, n: int):
        if self.stateless:
            return np.zeros((n, self.context - 1, self.embedding.shape[1]), np.float32)
        return [layer.initial_carry(n) for layer in self.layers]

    def step(self, tokens: np.ndarray, carry):
        """tokens `[N]` -> output `[N, H]` and the new carry."""
        x = self.embedding[tokens]
        if self.stateless:
            window = np.concatenate([carry, x[:, None]], axis=1)
            out = np.maximum(self.kernel(window.reshape(window.shape[0], -1)) + self.bias, 0)
            return out, window[:, 1:]
        new = []
        for layer, layer_carry in zip(self.layers, carry, strict=True):
            layer_carry = layer.step(x, layer_carry)
            new.append(layer_carry)
            x = layer_carry[0]
        return x, new


def take(carry, index: np.ndarray):
    """Rows `index` of every array of a predictor carry (nested lists and tuples)."""
    if isinstance(carry, (list, tuple)):
        return type(carry)(take(c, index) for c in carry)
    return carry[index]


class Network:
    """Encoder, prediction network and joint of one model file; `int8`: every dense matrix
    product stored as `kernels.Int8` (embedding, biases and the arbitrator stay float32)."""

    def __init__(self, spec: DeviceSpec, params: Mapping[str, np.ndarray], int8: bool = False):
        self.spec = spec
        self.blank = int(spec.model["blank"])
        self.encoder = Encoder(spec, params, int8)
        self.predictor = Predictor(spec, params, int8)
        self.enc_kernel = kernels.stored(kernels.linear(params, "encoder_to_joint/kernel"), int8)
        self.enc_bias = np.asarray(params["encoder_to_joint/bias"], np.float32)
        self.pred_kernel = kernels.stored(kernels.linear(params, "predictor_to_joint/kernel"),
                                          int8)
        self.out_kernel = kernels.stored(kernels.linear(params, "output_kernel"), int8)
        self.out_bias = np.asarray(params["output_bias"], np.float32)

    def encode_step(self, x: np.ndarray, state: EncoderState):
        """x `[1, D]` -> enc_proj `[1, J]`, the new encoder state, the branch that ran."""
        out, state, branch = self.encoder.step(x, state)
        return self.enc_kernel(out) + self.enc_bias, state, branch

    def predict_step(self, tokens: np.ndarray, carry):
        """tokens `[N]` (blank = start) -> pred_proj `[N, J]` and the new carry."""
        out, carry = self.predictor.step(tokens, carry)
        return self.pred_kernel(out), carry

    def joint(self, enc_proj: np.ndarray, pred_proj: np.ndarray) -> np.ndarray:
        """Broadcastable enc_proj and pred_proj `[..., J]` -> logits `[..., V]`."""
        return self.out_kernel(np.tanh(enc_proj + pred_proj)) + self.out_bias

    def weight_bytes(self) -> int:
        """Bytes of the matrix products' weights as this network stores them (the
        arbitrator's small MLP, float32 always, left out)."""
        layers = [layer for branch in self.encoder.branches for layer in branch]
        if not self.predictor.stateless:
            layers += self.predictor.layers
        maps = [self.enc_kernel, self.pred_kernel, self.out_kernel]
        maps += [layer.gates for layer in layers]
        maps += [layer.projection for layer in layers if layer.projection is not None]
        if self.predictor.stateless:
            maps.append(self.predictor.kernel)
        return sum(kernels.nbytes(m) for m in maps)
