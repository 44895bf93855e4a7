"""What a trained model does per frame on an evaluation split: routing, counted FLOPs, latency.

`collect` runs the model's inference-time routing (argmax) over every utterance of a split and
keeps, per utterance, the branch of each frame, its counted FLOPs and the arbitrator's
probabilities; `summarize` turns that into the paper's columns, with the user-perceived latency
of each utterance from the exact simulator `amnet.latency.simulate` at the model's processor
speed. Single process.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from amnet import frontend, train_step
from amnet.data import input_pipeline
from amnet.flops import frame_costs
from amnet.latency import simulate
from amnet.objective import CONFIDENT
from amnet.transducer import Transducer

Params = Any


@dataclasses.dataclass
class Utterance:
    id: str
    branches: np.ndarray  # [T] branch per frame
    frame_flops: np.ndarray  # [T] counted FLOPs per frame
    max_prob: np.ndarray  # [T] max_k softmax(z_t)[k] (1 with a single branch)
    features: np.ndarray | None = None  # [T, D], kept for the first `keep_features`


def collect(model: Transducer, params: Params, split, tokenizer, front: frontend.FrontendConfig,
            mesh, *, keep_features: int = 0, max_utterances: int | None = None,
            ) -> list[Utterance]:
    """Per-utterance routing of `split` (from `amnet.trainer.open_eval_split`)."""
    source, report, pipe = split
    costs = np.asarray(frame_costs(model.config).per_branch, np.float64)
    route = make_router(model, front)
    out = []
    for batch in input_pipeline.make_dataset(source, tokenizer, report, pipe):
        features, lengths, routed = route(params, train_step.global_batch(batch, mesh))
        features, lengths = np.asarray(features), np.asarray(lengths)
        for row in np.flatnonzero(batch["weights"]):
            n = int(lengths[row])
            branches = (np.zeros(n, np.int64) if routed is None
                        else np.asarray(routed[0][row, :n]))
            probs = np.ones(n) if routed is None else np.asarray(routed[1][row, :n])
            keep = len(out) < keep_features
            out.append(Utterance(str(batch["ids"][row]), branches, costs[branches], probs,
                                 features[row, :n] if keep else None))
            if max_utterances and len(out) >= max_utterances:
                return out
    return out


def make_router(model: Transducer, front: frontend.FrontendConfig):
    """Returns jitted `route(params, global_batch) -> (features [B, T, D], lengths [B],
    (branch [B, T], max_prob [B, T]) or None for a single encoder)`: inference-time routing."""

    @jax.jit
    def route(params, batch):
        features, lengths = frontend.featurize(batch["audio"], batch["audio_lengths"], front)
        trace = model.apply({"params": params}, features, lengths, method=Transducer.route)
        if trace is None:
            return features, lengths, None
        return features, lengths, (trace.gates.argmax(-1), jax.nn.softmax(trace.logits).max(-1))

    return route


def summarize(utterances: list[Utterance], *, frame_period_s: float, processor_flops: float,
              branches: int) -> dict[str, float]:
    """MFLOPs/frame, % frames per branch, share of confident frames, UPL mean/p90/max (ms)."""
    flops = np.concatenate([u.frame_flops for u in utterances])
    routed = np.concatenate([u.branches for u in utterances])
    probs = np.concatenate([u.max_prob for u in utterances])
    upl = upl_per_utterance(utterances, frame_period_s=frame_period_s,
                            processor_flops=processor_flops)
    summary = {"mflops_per_frame": flops.mean() / 1e6, "frames": int(flops.size),
               "utterances": len(utterances),
               "confident_frames": float(np.mean(probs > CONFIDENT)),
               "upl_mean_ms": 1e3 * upl.mean(), "upl_p90_ms": 1e3 * np.percentile(upl, 90),
               "upl_max_ms": 1e3 * upl.max()}
    for k in range(branches):
        summary[f"branch_{k}_frames"] = float(np.mean(routed == k))
    return summary


def upl_per_utterance(utterances: list[Utterance], *, frame_period_s: float,
                      processor_flops: float) -> np.ndarray:
    """UPL in seconds of each utterance."""
    return np.array([simulate(u.frame_flops, frame_period_s=frame_period_s,
                              processor_flops=processor_flops).latency_s for u in utterances])
