"""What a trained model does per frame on an evaluation split: routing, counted FLOPs, latency,
and where the cheap frames go.

`collect` runs the model's inference-time routing (argmax) over every utterance of a split and
keeps, per utterance, the branch of each frame, its counted FLOPs, the arbitrator's logits, an
energy-based silence label (`silence_frames`) and the number of symbols greedy decoding emitted
at the frame; `summarize` turns that into the paper's columns, with the user-perceived latency
of each utterance scored as `amnet.evaluation.scoring` scores every run (`cost_columns`).
Branch 0 is the slow (dense) branch of every AmNet config; "fast" is any other branch.
Single process.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from amnet.amortized.costs import frame_costs
from amnet.amortized.objective import CONFIDENT
from amnet.evaluation import evaluator, scoring
from amnet.rnnt import decoding, frontend
from amnet.rnnt.transducer import Transducer

Params = Any
# Energy-based silence label (`silence_frames`): the utterance's noise floor is this percentile
# of its frame energies (every utterance of the corpus has 50-350 ms of padding before and after
# the speech), and a frame is silence when it is less than SILENCE_MARGIN_DB above that floor.
FLOOR_PERCENTILE = 5.0
SILENCE_MARGIN_DB = 6.0


@dataclasses.dataclass
class Utterance:
    id: str
    branches: np.ndarray  # [T] branch per frame
    frame_flops: np.ndarray  # [T] counted FLOPs per frame
    logits: np.ndarray  # [T, K] arbitrator logits z_t ([T, 1] zeros with a single branch)
    silence: np.ndarray  # [T] bool, `silence_frames` of the utterance's audio
    emitted: np.ndarray  # [T] symbols emitted by greedy decoding at each frame
    features: np.ndarray | None = None  # [T, D], kept for the first `keep_features`

    @property
    def max_prob(self) -> np.ndarray:
        """[T] max_k softmax(z_t)[k] (1 with a single branch)."""
        return routing_probability(self.logits, 1.0)


def routing_probability(logits: np.ndarray, temperature: float) -> np.ndarray:
    """max_k softmax(z/τ)[k] of logits `[..., K]` -> `[...]`."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    return 1.0 / np.exp(z).sum(-1)


def silence_frames(audio: np.ndarray, frame_samples: int, frames: int, *,
                   floor_percentile: float = FLOOR_PERCENTILE,
                   margin_db: float = SILENCE_MARGIN_DB) -> np.ndarray:
    """Energy-based silence label of encoder frames: audio `[S]` -> `[frames]` bool.

    Frame t covers samples [t·frame_samples, (t+1)·frame_samples) (the frontend's hop times its
    stacking); its energy is the mean square there, in dB. Silence: within `margin_db` of the
    utterance's floor, the `floor_percentile` percentile of its frame energies."""
    audio = np.asarray(audio, np.float64)
    padded = np.zeros(frames * frame_samples)
    used = min(audio.size, padded.size)
    padded[:used] = audio[:used]
    power = np.mean(padded.reshape(frames, frame_samples) ** 2, axis=1)
    energy_db = 10.0 * np.log10(power + 1e-10)
    return energy_db < np.percentile(energy_db, floor_percentile) + margin_db


def collect(model: Transducer, params: Params, split, tokenizer, front: frontend.FrontendConfig,
            mesh, *, keep_features: int = 0, max_utterances: int | None = None,
            max_length: int = 160) -> list[Utterance]:
    """Per-utterance routing of `split` (from `amnet.data.datasets.open_eval_split`)."""
    costs = np.asarray(frame_costs(model.config).per_branch, np.float64)
    route = make_router(model, front)

    @jax.jit
    def emissions(params, batch):
        features, lengths = frontend.featurize(batch["audio"], batch["audio_lengths"], front)
        return decoding.greedy_alignment(model, params, features, lengths,
                                         max_length=max_length)[2]

    frame_samples = front.hop_length * front.stack
    out = []
    for batch, device_batch in evaluator.batches(split, tokenizer, mesh):
        features, lengths, routed = route(params, device_batch)
        features, lengths = np.asarray(features), np.asarray(lengths)
        emitted = np.asarray(emissions(params, device_batch))
        for row in np.flatnonzero(batch["weights"]):
            n = int(lengths[row])
            branches = (np.zeros(n, np.int64) if routed is None
                        else np.asarray(routed[0][row, :n]))
            logits = np.zeros((n, 1)) if routed is None else np.asarray(routed[1][row, :n])
            audio = batch["audio"][row, : batch["audio_lengths"][row]]
            keep = len(out) < keep_features
            out.append(Utterance(str(batch["ids"][row]), branches, costs[branches], logits,
                                 silence_frames(audio, frame_samples, n), emitted[row, :n],
                                 features[row, :n] if keep else None))
            if max_utterances and len(out) >= max_utterances:
                return out
    return out


def make_router(model: Transducer, front: frontend.FrontendConfig):
    """Returns jitted `route(params, global_batch) -> (features [B, T, D], lengths [B],
    (branch [B, T], logits [B, T, K]) or None for a single encoder)`: inference-time routing."""

    @jax.jit
    def route(params, batch):
        features, lengths = frontend.featurize(batch["audio"], batch["audio_lengths"], front)
        trace = model.apply({"params": params}, features, lengths, method=Transducer.route)
        if trace is None:
            return features, lengths, None
        return features, lengths, (trace.gates.argmax(-1), trace.logits)

    return route


def summarize(utterances: list[Utterance], *, frame_period_s: float, processor_flops: float,
              branches: int, final_temperature: float = 1.0) -> dict[str, float]:
    """MFLOPs/frame, % frames per branch, binary routing, where the fast frames go, UPL
    mean/p90/max (ms).

    `binary_final` is the share of frames with max_k softmax(z_t/τ)[k] > 0.99 at the final
    training temperature τ, `binary_tau1` the same at τ = 1 (p_t itself, what inference
    samples from in training); `fast_on_*` the share of fast-branch frames among silence /
    speech frames and among frames where greedy decoding emits a symbol / only blank (None
    for a single encoder)."""
    routed = np.concatenate([u.branches for u in utterances])
    logits = np.concatenate([u.logits for u in utterances])
    silence = np.concatenate([u.silence for u in utterances])
    emits = np.concatenate([u.emitted for u in utterances]) > 0
    fast = routed > 0
    def share(mask: np.ndarray) -> float | None:  # None: no such frames, or a single encoder
        return float(fast[mask].mean()) if mask.any() and branches > 1 else None

    latency = scoring.LatencyModel(frame_period_s, processor_flops)
    summary = {**scoring.cost_columns([u.frame_flops for u in utterances], latency),
               "frames": int(routed.size), "utterances": len(utterances),
               "binary_final": float(np.mean(
                   routing_probability(logits, final_temperature) > CONFIDENT)),
               "binary_tau1": float(np.mean(routing_probability(logits, 1.0) > CONFIDENT)),
               "silence_frames": float(silence.mean()), "emit_frames": float(emits.mean()),
               "fast_on_silence": share(silence), "fast_on_speech": share(~silence),
               "fast_on_emit": share(emits), "fast_on_blank": share(~emits)}
    for k in range(branches):
        summary[f"branch_{k}_frames"] = float(np.mean(routed == k))
    return summary
