"""Global CMVN: per-channel mean and standard deviation of the log-mels of a training split.

Raw log-mels span about -14..+9 with a mean square near 30, which saturates the first LSTM
layer's gates; `(x - mean_c) / std_c` per mel channel c puts every channel at zero mean and
unit variance. The statistics are computed once per run from the training split (a fixed,
seeded subset of `utterances` utterances), stored in the run's config (`frontend.cmvn_mean`,
`frontend.cmvn_std`: config.json and the checkpoints' metadata), and used unchanged in
evaluation, streaming and on the device. They are global, not per utterance, so a stream is
normalized from its first frame on.

    stats = compute(source, FrontendConfig(), utterances=2000, seed=0)
    front = FrontendConfig(feature_mean=stats.mean, feature_std=stats.std)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np

from amnet.rnnt import frontend

# The std is floored (a channel that never varies would divide by ~0).
MIN_STD = 1e-3
# Utterances featurized per call (padded to the longest of them).
CHUNK = 32


@dataclasses.dataclass(frozen=True)
class Stats:
    mean: tuple[float, ...]  # [num_mels]
    std: tuple[float, ...]  # [num_mels]
    frames: int  # frames the statistics were computed over
    utterances: int


def accumulate(features: np.ndarray, lengths: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(frames, sum `[D]`, sum of squares `[D]`) over the valid frames of `[B, F, D]`, float64."""
    features = np.asarray(features, np.float64)
    valid = np.arange(features.shape[1])[None, :] < np.asarray(lengths)[:, None]
    rows = features[valid]
    return int(valid.sum()), rows.sum(axis=0), np.square(rows).sum(axis=0)


def from_sums(frames: int, total: np.ndarray, squares: np.ndarray, utterances: int) -> Stats:
    if frames == 0:
        raise ValueError("CMVN over zero frames: every utterance is shorter than one window")
    mean = total / frames
    std = np.sqrt(np.maximum(squares / frames - np.square(mean), 0.0))
    return Stats(tuple(float(m) for m in mean),
                 tuple(float(s) for s in np.maximum(std, MIN_STD)), frames, utterances)


def compute(source: Sequence[dict], config: frontend.FrontendConfig, *, utterances: int,
            seed: int) -> Stats:
    """Statistics of the raw log-mels (`config` without normalization) of `utterances`
    utterances of `source` drawn without replacement by `seed` (all of them if fewer)."""
    raw = dataclasses.replace(config, feature_mean=0.0, feature_std=1.0)
    count = min(utterances, len(source))
    order = np.sort(np.random.default_rng(seed).permutation(len(source))[:count])
    log_mel = jax.jit(lambda audio, n: frontend.log_mel(audio, n, raw))
    frames, total, squares = 0, np.zeros(raw.num_mels), np.zeros(raw.num_mels)
    for start in range(0, count, CHUNK):
        speech = [np.asarray(source[int(i)]["speech"]) for i in order[start: start + CHUNK]]
        # Padded to a multiple of 16k samples: few distinct shapes, few compilations.
        width = -(-max(s.size for s in speech) // 16_000) * 16_000
        audio = np.zeros((CHUNK, width), np.int16)
        lengths = np.zeros(CHUNK, np.int32)
        for row, s in enumerate(speech):
            audio[row, : s.size] = s
            lengths[row] = s.size
        features, frame_lengths = log_mel(audio, lengths)
        n, s, q = accumulate(np.asarray(features), np.asarray(frame_lengths))
        frames, total, squares = frames + n, total + s, squares + q
    return from_sums(frames, total, squares, count)


def unit_stats(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with identity CMVN statistics (mean 0, std 1 per channel): for benchmarks and
    checks on synthetic audio, which have no training split. Same computation, no corpus."""
    config = config.copy_and_resolve_references()
    if config.frontend.get("normalization") == "cmvn" and config.frontend.cmvn_mean is None:
        config.frontend.cmvn_mean = [0.0] * config.frontend.num_mels
        config.frontend.cmvn_std = [1.0] * config.frontend.num_mels
    return config


def resolve(config: ml_collections.ConfigDict, source_fn=None, *,
            stored: Path | None = None) -> ml_collections.ConfigDict:
    """`config` with its CMVN statistics filled in when `frontend.normalization` is "cmvn".

    In order: statistics already in the config are kept; else those of the run this one starts
    from (`init.dense_run`), or of `stored` (the config.json of the run being resumed); else
    they are computed from `source_fn()` (the training split's data source).
    """
    f = config.frontend
    if f.get("normalization", "none") != "cmvn" or f.get("cmvn_mean") is not None:
        return config
    config = config.copy_and_resolve_references()
    origins = [Path(config.init.dense_run) / "config.json"] if config.get("init") and \
        config.init.get("dense_run") else []
    origins += [stored] if stored is not None and stored.exists() else []
    for origin in origins:
        previous = json.loads(origin.read_text()).get("frontend", {})
        if previous.get("cmvn_mean") is not None:
            f = config.frontend
            f.cmvn_mean, f.cmvn_std = previous["cmvn_mean"], previous["cmvn_std"]
            return config
    if source_fn is None:
        raise ValueError(f"no CMVN statistics (frontend.cmvn_mean) in {stored or 'the config'}, "
                         "and no training split to compute them from")
    front = frontend.FrontendConfig(num_mels=f.num_mels, stack=f.stack)
    stats = compute(source_fn(), front, utterances=f.cmvn_utterances, seed=config.seed)
    config.frontend.cmvn_mean = list(stats.mean)
    config.frontend.cmvn_std = list(stats.std)
    return config
