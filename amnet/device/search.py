"""Greedy and beam search over one stream, a frame at a time (`amnet.rnnt.decoding` in NumPy).

Greedy: per frame, up to `max_symbols` times, the joint's argmax; a blank moves on to the next
frame, a label is appended and advances the prediction network.

Beam (K hypotheses, frame-synchronous): within a frame each hypothesis emits 0 to `max_symbols`
labels (the best K one-label extensions at each sub-step) and then a blank; blank-terminated
candidates are pooled, candidates with the same label sequence (a rolling hash) merged by adding
their probabilities, and the best K go on. Shallow fusion adds `sum_a w_a log P_a(v | s_a) +
length_bonus` per label and each automaton's end-of-sentence score at the end (`amnet.rnnt.lm`).
Ties are broken towards the lower index, as `jax.lax.top_k` and `argmax` do, and sums are
float32 in the JAX order, so both give the same hypotheses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from amnet.device.network import Network, take
from amnet.rnnt.lm import END, Automaton

NEG = np.float32(-1e30)  # as amnet.rnnt.loss.NEG
_HASH = np.uint32(1_000_003)


def top_k(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries of `x` `[n]`, ties to the lower index."""
    return np.argsort(-x, kind="stable")[:k]


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - np.max(x, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


@dataclasses.dataclass(frozen=True)
class Fusion:
    """Automata fused into beam search, with their weights and a per-label bonus."""

    automata: tuple[Automaton, ...]
    weights: np.ndarray  # [A] float32
    length_bonus: np.float32

    @classmethod
    def of(cls, automata: Sequence[Automaton], weights: Sequence[float],
           length_bonus: float = 0.0) -> Fusion:
        if len(automata) != len(weights):
            raise ValueError(f"{len(automata)} automata, {len(weights)} weights")
        return cls(tuple(automata), np.asarray(weights, np.float32), np.float32(length_bonus))

    @property
    def start(self) -> np.ndarray:
        return np.asarray([a.start for a in self.automata], np.int32)

    def label_scores(self, states: np.ndarray) -> np.ndarray:
        """states `[K, A]` -> the fused score of every next label `[K, V]`."""
        total = self.length_bonus
        for a, automaton in enumerate(self.automata):
            total = total + self.weights[a] * automaton.log_probs[states[:, a]]
        return total

    def end_scores(self, states: np.ndarray) -> np.ndarray:
        total = np.zeros(states.shape[0], np.float32)
        for a, automaton in enumerate(self.automata):
            total = total + self.weights[a] * automaton.log_probs[states[:, a], END]
        return total

    def advance(self, states: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        if not self.automata:
            return states
        return np.stack([a.next_state[states[:, i], tokens]
                         for i, a in enumerate(self.automata)], axis=-1)


class Greedy:
    """Greedy search state of one stream."""

    def __init__(self, network: Network, max_symbols: int, max_length: int):
        self.network, self.max_symbols, self.max_length = network, max_symbols, max_length
        carry = network.predictor.initial_carry(1)
        self.pred_proj, self.carry = network.predict_step(
            np.full(1, network.blank, np.int32), carry)
        self.tokens: list[int] = []
        self.frames: list[int] = []  # the frame each token was emitted at

    def step(self, enc_proj: np.ndarray, frame: int) -> None:
        """Consumes one encoder frame `[1, J]`."""
        net = self.network
        for _ in range(self.max_symbols):
            best = int(np.argmax(net.joint(enc_proj, self.pred_proj)[0]))
            if best == net.blank or len(self.tokens) >= self.max_length:
                return
            self.tokens.append(best)
            self.frames.append(frame)
            self.pred_proj, self.carry = net.predict_step(np.array([best], np.int32),
                                                          self.carry)

    def best(self) -> list[int]:
        return list(self.tokens)

    def best_frames(self) -> list[int]:
        """The frame each label of `best()` was emitted at."""
        return list(self.frames)

    def length(self) -> int:
        """Labels of the best hypothesis so far."""
        return len(self.tokens)


@dataclasses.dataclass
class Hypotheses:
    scores: np.ndarray  # [K] float32
    hashes: np.ndarray  # [K] uint32 rolling hash of the label sequence
    tokens: np.ndarray  # [K, L] int32
    frames: np.ndarray  # [K, L] int32: the frame each label was emitted at
    lengths: np.ndarray  # [K] int32
    pred_proj: np.ndarray  # [K, J]
    carry: object  # predictor carry, leading axis K
    lm_states: np.ndarray  # [K, A] int32

    def take(self, index: np.ndarray) -> Hypotheses:
        return Hypotheses(self.scores[index], self.hashes[index], self.tokens[index],
                          self.frames[index], self.lengths[index], self.pred_proj[index],
                          take(self.carry, index), self.lm_states[index])

    @staticmethod
    def concatenate(parts: Sequence[Hypotheses]) -> Hypotheses:
        def cat(*xs):
            if isinstance(xs[0], (list, tuple)):
                return type(xs[0])(cat(*group) for group in zip(*xs, strict=True))
            return np.concatenate(xs, axis=0)

        return Hypotheses(*(cat(*(getattr(p, f.name) for p in parts))
                            for f in dataclasses.fields(Hypotheses)))


class Beam:
    """Beam search state of one stream."""

    def __init__(self, network: Network, beam: int, max_symbols: int, max_length: int,
                 fusion: Fusion | None = None):
        self.network, self.beam, self.max_symbols = network, beam, max_symbols
        self.fusion = fusion
        greedy = Greedy(network, max_symbols, max_length)
        tile = lambda x: np.repeat(x, beam, axis=0)  # noqa: E731
        starts = fusion.start if fusion is not None else np.zeros(0, np.int32)
        self.state = Hypotheses(
            np.where(np.arange(beam) == 0, np.float32(0.0), NEG).astype(np.float32),
            np.zeros(beam, np.uint32), np.zeros((beam, max_length), np.int32),
            np.zeros((beam, max_length), np.int32), np.zeros(beam, np.int32),
            tile(greedy.pred_proj), take(greedy.carry, np.zeros(beam, np.int64)),
            np.broadcast_to(starts, (beam, starts.shape[0])).copy())

    def _extend(self, state: Hypotheses, label_scores: np.ndarray, frame: int) -> Hypotheses:
        """The best K one-label extensions, given their scores `[K, V]`, emitted at `frame`."""
        vocab = label_scores.shape[-1]
        flat = label_scores.reshape(-1)
        index = top_k(flat, self.beam)
        parent, token = index // vocab, (index % vocab).astype(np.int32)
        new = state.take(parent)
        max_length = new.tokens.shape[1]
        at = (np.arange(self.beam), np.minimum(new.lengths, max_length - 1))
        new.tokens[at], new.frames[at] = token, frame
        pred_proj, carry = self.network.predict_step(token, new.carry)
        lm_states = new.lm_states if self.fusion is None else self.fusion.advance(
            new.lm_states, token)
        with np.errstate(over="ignore"):
            hashes = new.hashes * _HASH + token.astype(np.uint32) + np.uint32(1)
        return Hypotheses(flat[index], hashes, new.tokens, new.frames, new.lengths + 1,
                          pred_proj, carry, lm_states)

    def step(self, enc_proj: np.ndarray, frame: int) -> None:
        """Consumes one encoder frame `[1, J]`."""
        net, blank = self.network, self.network.blank
        active, pool = self.state, []
        for symbol in range(self.max_symbols + 1):
            log_probs = log_softmax(net.joint(enc_proj, active.pred_proj))  # [K, V]
            pool.append(dataclasses.replace(active, scores=active.scores + log_probs[:, blank]))
            if symbol == self.max_symbols:
                break
            can_emit = ((active.lengths < active.tokens.shape[1])[:, None]
                        & (np.arange(log_probs.shape[-1]) != blank))
            if self.fusion is not None:
                log_probs = log_probs + self.fusion.label_scores(active.lm_states)
            active = self._extend(active, np.where(
                can_emit, active.scores[:, None] + log_probs, NEG), frame)
        pool = Hypotheses.concatenate(pool)
        size = pool.scores.shape[0]
        alive = pool.scores > NEG / 2
        same = (pool.hashes[:, None] == pool.hashes[None, :]) & alive[None, :]
        earlier_twin = np.any(same & (np.arange(size)[:, None] > np.arange(size)[None, :]),
                              axis=1)
        masked = np.where(same, pool.scores[None, :], np.float32(-np.inf))
        peak = np.max(masked, axis=1, keepdims=True)
        peak = np.where(np.isfinite(peak), peak, np.float32(0.0))
        with np.errstate(divide="ignore"):
            merged = (np.log(np.sum(np.exp(masked - peak), axis=1, keepdims=True)) + peak)[:, 0]
        scores = np.where(earlier_twin | ~alive, NEG, np.maximum(merged, NEG)).astype(np.float32)
        pool.scores = scores
        self.state = pool.take(top_k(scores, self.beam))

    def length(self) -> int:
        """Labels of the best hypothesis so far (before end-of-sentence scores)."""
        return int(self.state.lengths[int(np.argmax(self.state.scores))])

    def _best(self) -> int:
        s = self.state
        scores = s.scores if self.fusion is None else s.scores + self.fusion.end_scores(
            s.lm_states)
        return int(np.argmax(scores))

    def best(self) -> list[int]:
        best = self._best()
        return self.state.tokens[best, :self.state.lengths[best]].tolist()

    def best_frames(self) -> list[int]:
        """The frame each label of `best()` was emitted at (of the alignment kept when
        hypotheses with the same labels merged)."""
        best = self._best()
        return self.state.frames[best, :self.state.lengths[best]].tolist()
