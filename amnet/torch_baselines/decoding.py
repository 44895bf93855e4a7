"""Greedy RNN-T decoding in PyTorch, the rule of `amnet.rnnt.decoding.greedy_step`: at each frame
up to `max_symbols_per_frame` times take the joint's argmax; a blank moves on, a label is
emitted and advances the prediction network."""

from __future__ import annotations

import torch

from amnet.torch_baselines.model import TorchTransducer


@torch.no_grad()
def greedy_decode(model: TorchTransducer, features: torch.Tensor, lengths: torch.Tensor, *,
                  max_symbols_per_frame: int = 5, max_length: int = 160) -> list[list[int]]:
    """features `[B, T, D]` -> token ids per utterance."""
    enc = model.encode(features, lengths)
    blank = model.config.blank
    results = []
    for b in range(features.shape[0]):
        tokens: list[int] = []
        pred, carries = _advance(model, blank, [None] * len(model.predictor)
                                 if model.config.predictor == "lstm" else [])
        for t in range(int(lengths[b])):
            for _ in range(max_symbols_per_frame):
                best = int(model.joint(enc[b, t][None], pred).argmax(-1))
                if best == blank or len(tokens) >= max_length:
                    break
                tokens.append(best)
                pred, carries = _advance(model, best, carries)
        results.append(tokens)
    return results


def _advance(model: TorchTransducer, token: int, carries: list):
    """The prediction network after one more token: (pred_proj `[1, J]`, new carries); the
    carries of a stateless predictor are the labels so far."""
    if model.config.predictor == "stateless":
        history = [*carries, token][-model.config.predictor_context:]
        x = model.embed(torch.tensor([history]))
        return model.predictor_to_joint(model.stateless(x)[:, -1]), history
    x = model.embed(torch.tensor([[token]]))
    new = []
    for layer, carry in zip(model.predictor, carries, strict=True):
        x, carry = layer.lstm(x, carry)
        new.append(carry)
    return model.predictor_to_joint(x[:, 0]), new
