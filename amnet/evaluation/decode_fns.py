"""Jitted decode functions over global batches (`amnet.training.parallel.global_batch`):
greedy or beam search (+ shallow fusion) of the transducer, greedy CTC of the encoder's head,
and the encoder-reliance probe."""

from __future__ import annotations

import jax

from amnet.rnnt import ctc, decoding, frontend
from amnet.rnnt.transducer import Transducer


def make_decoder(model: Transducer, frontend_config: frontend.FrontendConfig, *, beam: int,
                 max_length: int, max_symbols_per_frame: int,
                 fusion: decoding.Fusion | None = None):
    """Returns `decode(params, global_batch) -> (tokens, lengths)`; beam 0 means greedy.
    `fusion`: automata fused into the beam search (an n-gram LM, a lexicon: `amnet.rnnt.lm`)."""
    if fusion is not None and not beam:
        raise ValueError("shallow fusion needs beam search (beam > 0)")

    def decode(params, batch, fusion):
        features, lengths = frontend.featurize(batch["audio"], batch["audio_lengths"],
                                               frontend_config)
        if beam:
            return decoding.beam_decode(model, params, features, lengths, beam=beam,
                                        max_length=max_length,
                                        max_symbols_per_frame=max_symbols_per_frame,
                                        fusion=fusion)
        return decoding.greedy_decode(model, params, features, lengths, max_length=max_length,
                                      max_symbols_per_frame=max_symbols_per_frame)

    jitted = jax.jit(decode)  # the automata are arguments, not constants baked into the code
    return lambda params, batch: jitted(params, batch, fusion)


def make_ctc_decoder(model: Transducer, frontend_config: frontend.FrontendConfig):
    """Returns `decode(params, global_batch) -> (tokens, lengths)`: CTC greedy decoding of the
    encoder's CTC head (`amnet.rnnt.ctc`)."""

    def decode(params, batch):
        features, lengths = frontend.featurize(batch["audio"], batch["audio_lengths"],
                                               frontend_config)
        logits = model.apply({"params": params}, features, lengths, method=Transducer.ctc_logits)
        return ctc.greedy_decode(logits, lengths, blank=model.config.blank)

    return jax.jit(decode)


def make_probe(model: Transducer, frontend_config: frontend.FrontendConfig):
    """Returns `probe(params, global_batch) -> (rnnt, rnnt with the encoder output replaced by
    its per-utterance mean, rnnt with another utterance's encoder output)`, each `[B]`,
    unaugmented: how much the transducer's likelihood depends on the audio (docs/rnnt.md)."""

    def probe(params, batch):
        features, lengths = frontend.featurize(batch["audio"], batch["audio_lengths"],
                                               frontend_config)
        costs = [model.apply({"params": params}, features, lengths, batch["tokens"],
                             batch["token_lengths"], encoder_probe=kind, exact=True,
                             method=Transducer.forward).rnnt for kind in (None, "mean", "swap")]
        return tuple(costs)

    return jax.jit(probe)
