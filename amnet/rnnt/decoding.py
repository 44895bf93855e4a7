"""RNN-T decoding: batched greedy search and frame-synchronous beam search.

Both are written as a per-frame step on an explicit state, so the same code decodes a whole
utterance (`lax.scan` over encoder frames) or a live stream (one call per 30 ms frame).

Greedy: at each frame, up to `max_symbols_per_frame` times, take the joint's argmax; a blank
(or an invalid frame) moves on to the next frame, a label is appended and advances the
prediction network.

Beam: hypotheses `[B, K]`, frame-synchronous. Within a frame each hypothesis emits 0 to
`max_symbols_per_frame` labels (the best K one-label extensions at each sub-step) and then a
blank; the blank-terminated candidates are pooled, candidates with the same label sequence
(compared by a rolling hash) are merged by adding their probabilities, and the best K go on.

Shallow fusion (`Fusion`): automata of `amnet.rnnt.lm` (an n-gram LM, a lexicon) each keep a state
per hypothesis; a label v adds `sum_a weight_a * log P_a(v | state_a) + length_bonus` to the
hypothesis' score, and the end of the utterance adds each automaton's end-of-sentence score.
With no automata (or all weights 0 and no bonus) the search is plain beam search.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from amnet.rnnt.lm import END
from amnet.rnnt.loss import NEG
from amnet.rnnt.transducer import Transducer

Params = Any


class GreedyState(NamedTuple):
    pred_proj: jax.Array  # [B, J]
    pred_carries: Any
    tokens: jax.Array  # [B, L]
    lengths: jax.Array  # [B]


def _apply(model: Transducer, params: Params, method, *args):
    return model.apply({"params": params}, *args, method=method)


def _select(mask: jax.Array, new, old):
    """Per-hypothesis choice between two pytrees; `mask` covers their leading axes."""
    return jax.tree.map(lambda n, o: jnp.where(
        mask.reshape(*mask.shape, *([1] * (n.ndim - mask.ndim))), n, o), new, old)


def greedy_init(model: Transducer, params: Params, batch: int, max_length: int) -> GreedyState:
    blank = model.config.blank
    _, pred_carries = _apply(model, params, lambda m, b: m.initial_state(b), batch)
    pred_proj, pred_carries = _apply(model, params, Transducer.predict_step,
                                     jnp.full((batch,), blank, jnp.int32), pred_carries)
    return GreedyState(pred_proj, pred_carries, jnp.zeros((batch, max_length), jnp.int32),
                       jnp.zeros((batch,), jnp.int32))


def greedy_step(model: Transducer, params: Params, state: GreedyState, enc_frame: jax.Array,
                valid: jax.Array, *, max_symbols_per_frame: int = 5) -> GreedyState:
    """Consumes one encoder frame `[B, J]` (`valid` `[B]` masks finished utterances): each
    hypothesis emits its best label until that is blank, `max_symbols_per_frame` labels or
    `max_length` tokens. The loop ends when no hypothesis emits, so that the streaming engine
    (batch 1) pays for the labels it emits and one joint more, not for the bound."""
    blank = model.config.blank
    batch, max_length = state.tokens.shape
    rows = jnp.arange(batch)

    def best_label(state: GreedyState) -> jax.Array:
        logits = _apply(model, params, Transducer.joint, enc_frame, state.pred_proj)
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def emits(state: GreedyState, best: jax.Array, emitting: jax.Array) -> jax.Array:
        return emitting & (best != blank) & (state.lengths < max_length)

    def emit(carry):
        state, best, emitting, count = carry
        position = jnp.minimum(state.lengths, max_length - 1)
        tokens = state.tokens.at[rows, position].set(
            jnp.where(emitting, best, state.tokens[rows, position]))
        pred_proj, pred_carries = _apply(model, params, Transducer.predict_step, best,
                                         state.pred_carries)
        state = GreedyState(_select(emitting, pred_proj, state.pred_proj),
                            _select(emitting, pred_carries, state.pred_carries), tokens,
                            state.lengths + emitting)
        best = best_label(state)
        return state, best, emits(state, best, emitting), count + 1

    def keep_going(carry):
        _, _, emitting, count = carry
        return jnp.any(emitting) & (count < max_symbols_per_frame)

    best = best_label(state)
    state, _, _, _ = jax.lax.while_loop(keep_going, emit,
                                        (state, best, emits(state, best, valid), 0))
    return state


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("max_symbols_per_frame",
                                                                  "max_length"))
def greedy_decode(model: Transducer, params: Params, features: jax.Array, lengths: jax.Array,
                  *, max_symbols_per_frame: int = 5,
                  max_length: int = 160) -> tuple[jax.Array, jax.Array]:
    """features `[B, T, D]`, lengths `[B]` -> tokens `[B, max_length]`, token lengths `[B]`."""
    tokens, token_lengths, _ = greedy_alignment(
        model, params, features, lengths, max_symbols_per_frame=max_symbols_per_frame,
        max_length=max_length)
    return tokens, token_lengths


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("max_symbols_per_frame",
                                                                  "max_length"))
def greedy_alignment(model: Transducer, params: Params, features: jax.Array,
                     lengths: jax.Array, *, max_symbols_per_frame: int = 5,
                     max_length: int = 160) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Greedy decoding and where it emitted: features `[B, T, D]`, lengths `[B]` -> tokens
    `[B, max_length]`, token lengths `[B]`, symbols emitted at each encoder frame `[B, T']`
    (0 on blank frames; T' the encoder's frame count)."""
    enc_proj, _ = _apply(model, params, Transducer.encode, features, lengths)
    state = greedy_init(model, params, features.shape[0], max_length)

    def step(state, inputs):
        frame, t = inputs
        new = greedy_step(model, params, state, frame, t < lengths,
                          max_symbols_per_frame=max_symbols_per_frame)
        return new, new.lengths - state.lengths

    frames = enc_proj.shape[1]
    state, emitted = jax.lax.scan(step, state, (enc_proj.swapaxes(0, 1), jnp.arange(frames)))
    return state.tokens, state.lengths, emitted.swapaxes(0, 1)


class Fusion(NamedTuple):
    """Automata fused into beam search (a pytree: pass it to the jitted decoders as data)."""

    log_probs: tuple[jax.Array, ...]  # per automaton [S_a, V]
    next_state: tuple[jax.Array, ...]  # per automaton [S_a, V] int32
    start: jax.Array  # [A] int32
    weights: jax.Array  # [A]
    length_bonus: jax.Array  # [] added per emitted label

    @classmethod
    def of(cls, automata: list, weights: list[float], length_bonus: float = 0.0) -> Fusion:
        """From `amnet.rnnt.lm.Automaton`s and their weights."""
        return cls(tuple(jnp.asarray(a.log_probs) for a in automata),
                   tuple(jnp.asarray(a.next_state) for a in automata),
                   jnp.asarray([a.start for a in automata], jnp.int32),
                   jnp.asarray(weights, jnp.float32), jnp.asarray(length_bonus, jnp.float32))

    def label_scores(self, states: jax.Array) -> jax.Array:
        """states `[..., A]` -> the fused score of every next label `[..., V]`."""
        total = self.length_bonus
        for a, table in enumerate(self.log_probs):
            total = total + self.weights[a] * table[states[..., a]]
        return total

    def end_scores(self, states: jax.Array) -> jax.Array:
        """states `[..., A]` -> the fused end-of-sentence score `[...]`."""
        total = jnp.zeros(states.shape[:-1])
        for a, table in enumerate(self.log_probs):
            total = total + self.weights[a] * table[states[..., a], END]
        return total

    def advance(self, states: jax.Array, tokens: jax.Array) -> jax.Array:
        """states `[..., A]`, tokens `[...]` -> the states after the tokens."""
        return jnp.stack([table[states[..., a], tokens]
                          for a, table in enumerate(self.next_state)], axis=-1)


class BeamState(NamedTuple):
    scores: jax.Array  # [B, K] log-probabilities (+ fused scores)
    hashes: jax.Array  # [B, K] uint32 hash of the label sequence
    tokens: jax.Array  # [B, K, L]
    lengths: jax.Array  # [B, K]
    pred_proj: jax.Array  # [B, K, J]
    pred_carries: Any  # leaves [B, K, ...]
    lm_states: jax.Array  # [B, K, A] states of the fused automata (A may be 0)


def beam_init(model: Transducer, params: Params, batch: int, beam: int,
              max_length: int, fusion: Fusion | None = None) -> BeamState:
    greedy = greedy_init(model, params, batch, max_length)
    tile = lambda x: jnp.repeat(x[:, None], beam, axis=1)  # noqa: E731
    scores = jnp.where(jnp.arange(beam) == 0, 0.0, NEG)[None].repeat(batch, axis=0)
    starts = fusion.start if fusion is not None else jnp.zeros((0,), jnp.int32)
    return BeamState(scores, jnp.zeros((batch, beam), jnp.uint32),
                     jnp.zeros((batch, beam, max_length), jnp.int32),
                     jnp.zeros((batch, beam), jnp.int32), tile(greedy.pred_proj),
                     jax.tree.map(tile, greedy.pred_carries),
                     jnp.broadcast_to(starts, (batch, beam, starts.shape[0])))


def _gather(state: BeamState, index: jax.Array) -> BeamState:
    """Selects hypotheses `index` `[B, K']` along axis 1 of every field."""
    return jax.tree.map(lambda x: jnp.take_along_axis(
        x, index.reshape(*index.shape, *([1] * (x.ndim - 2))), axis=1), state)


def _extend(model: Transducer, params: Params, state: BeamState,
            label_scores: jax.Array, fusion: Fusion | None) -> BeamState:
    """The best K one-label extensions of `state`, given their scores `[B, K, V]`."""
    batch, beam, max_length = state.tokens.shape
    scores, flat = jax.lax.top_k(label_scores.reshape(batch, -1), beam)
    vocab = label_scores.shape[-1]
    parent, token = flat // vocab, (flat % vocab).astype(jnp.int32)
    new = _gather(state, parent)
    at_end = jnp.arange(max_length) == jnp.minimum(new.lengths, max_length - 1)[..., None]
    flat_carries = jax.tree.map(lambda x: x.reshape(batch * beam, *x.shape[2:]),
                                new.pred_carries)
    pred_proj, pred_carries = _apply(model, params, Transducer.predict_step, token.reshape(-1),
                                     flat_carries)
    unflat = lambda x: x.reshape(batch, beam, *x.shape[1:])  # noqa: E731
    lm_states = new.lm_states if fusion is None else fusion.advance(new.lm_states, token)
    return BeamState(scores, new.hashes * jnp.uint32(1_000_003) + token.astype(jnp.uint32) + 1,
                     jnp.where(at_end, token[..., None], new.tokens), new.lengths + 1,
                     unflat(pred_proj), jax.tree.map(unflat, pred_carries), lm_states)


def beam_step(model: Transducer, params: Params, state: BeamState, enc_frame: jax.Array,
              valid: jax.Array, *, max_symbols_per_frame: int = 5,
              fusion: Fusion | None = None) -> BeamState:
    """Consumes one encoder frame `[B, J]` for all hypotheses.

    Within the frame a hypothesis may emit up to `max_symbols_per_frame` labels before its
    blank; every blank-terminated candidate joins a pool, whose duplicates (same label
    sequence) are merged before the best K are kept.
    """
    blank = model.config.blank
    batch, beam, max_length = state.tokens.shape
    active, pool = state, []
    for symbol in range(max_symbols_per_frame + 1):
        logits = _apply(model, params, Transducer.joint, enc_frame[:, None], active.pred_proj)
        log_probs = jax.nn.log_softmax(logits)  # [B, K, V]
        pool.append(active._replace(scores=active.scores + log_probs[..., blank]))
        if symbol == max_symbols_per_frame:
            break
        can_emit = (active.lengths < max_length)[..., None] & (jnp.arange(log_probs.shape[-1])
                                                                != blank)
        if fusion is not None:
            log_probs = log_probs + fusion.label_scores(active.lm_states)
        active = _extend(model, params, active,
                         jnp.where(can_emit, active.scores[..., None] + log_probs, NEG), fusion)
    pool = jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=1), *pool)  # [B, K * (S + 1)]
    size = pool.scores.shape[1]
    alive = pool.scores > NEG / 2
    same = (pool.hashes[:, :, None] == pool.hashes[:, None, :]) & alive[:, None, :]
    earlier_twin = jnp.any(same & (jnp.arange(size)[:, None] > jnp.arange(size))[None], axis=2)
    merged = jax.nn.logsumexp(jnp.where(same, pool.scores[:, None, :], -jnp.inf), axis=2)
    scores = jnp.where(earlier_twin | ~alive, NEG, jnp.maximum(merged, NEG))
    _, best = jax.lax.top_k(scores, beam)
    new = _gather(pool._replace(scores=scores), best)
    return _select(valid, new, state)  # finished utterances (invalid frame) keep their state


@functools.partial(jax.jit, static_argnums=(0,),
                   static_argnames=("beam", "max_length", "max_symbols_per_frame"))
def beam_decode(model: Transducer, params: Params, features: jax.Array, lengths: jax.Array, *,
                beam: int = 4, max_length: int = 160, max_symbols_per_frame: int = 5,
                fusion: Fusion | None = None) -> tuple[jax.Array, jax.Array]:
    """Best hypothesis per utterance: tokens `[B, max_length]`, token lengths `[B]`."""
    enc_proj, _ = _apply(model, params, Transducer.encode, features, lengths)
    state = beam_init(model, params, features.shape[0], beam, max_length, fusion)

    def step(state, inputs):
        frame, t = inputs
        return beam_step(model, params, state, frame, t < lengths,
                         max_symbols_per_frame=max_symbols_per_frame, fusion=fusion), None
    state, _ = jax.lax.scan(step, state, (enc_proj.swapaxes(0, 1),
                                          jnp.arange(enc_proj.shape[1])))
    scores = state.scores if fusion is None else state.scores + fusion.end_scores(
        state.lm_states)
    best = jnp.argmax(scores, axis=1)
    index = jnp.arange(features.shape[0])
    return state.tokens[index, best], state.lengths[index, best]
