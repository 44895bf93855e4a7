"""Randomly initialized models of the project's configs, for benchmarks that need no run."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np

from amnet import build
from amnet.data.text import CharTokenizer
from amnet.rnnt import cmvn, flops, frontend
from amnet.rnnt.transducer import Transducer
from amnet.training import parallel
from experiments.configs import amnet as amnet_config
from experiments.configs import baseline, librispeech

# The LibriSpeech config's step on this machine: an 8 s bucket with 40 wordpieces of a
# 4,096-piece vocabulary, in float32 (the precision of the peak it is compared with).
LIBRISPEECH_VOCAB = librispeech.get_config().data.vocab_size  # the recipe's wordpieces
LIBRISPEECH_BUCKET = (128_000, 40)
CHARACTERS = CharTokenizer().vocab_size  # the spoken-commands presets' vocabulary


def fresh_model(name: str, preset: str = "small") -> tuple[Transducer, dict]:
    """(model, params) of `experiments/configs/amnet.py:<preset>,<name>` (e.g. `single-dense`,
    `lowrank`), character vocabulary, seed 0."""
    config = amnet_config.get_config(f"{preset},{name}")
    model = build.model(config, CHARACTERS)
    frames = 10
    params = model.init(jax.random.key(0), np.zeros((1, frames, model.config.input_dim)),
                        np.array([frames]), np.ones((1, 2), np.int32), np.array([2]))["params"]
    return model, params


def step_config(batch: int, preset: str = "small",
                loss: str = "fused") -> tuple[ml_collections.ConfigDict, int]:
    """(config, vocabulary size) of a benchmark step: `small` (the demo's model), `tiny` (the
    tests') or `librispeech` (5x1024/640, V = 4,096, `LIBRISPEECH_BUCKET`), `batch` utterances
    per step, the exact (`fused`) or the `pruned` loss."""
    if preset not in ("tiny", "small", "librispeech"):
        raise ValueError(f"unknown step preset {preset!r}; choose tiny, small or librispeech")
    config = cmvn.unit_stats(baseline.get_config(preset))
    config.train.global_batch_size = batch
    config.model.loss = loss
    if preset != "librispeech":
        return config, CHARACTERS
    config.data.buckets = (LIBRISPEECH_BUCKET,)
    config.model.dtype = "float32"
    return config, LIBRISPEECH_VOCAB


def synthetic_batch(bucket: tuple[int, int], batch: int, vocab: int = CHARACTERS,
                    labels: int | None = None, *, ragged: bool = False) -> dict:
    """A batch of the pipeline's form (`amnet.data.input_pipeline`) in a `(samples, tokens)`
    bucket, seed 0: noise audio and random transcripts, full length with `labels` tokens each
    (default: the bucket's label length), or with `ragged` random lengths and the last row a
    padding row (weight 0)."""
    rng = np.random.default_rng(0)
    samples, tokens = bucket
    audio = rng.integers(-3000, 3000, (batch, samples)).astype(np.int16)
    audio_lengths = (rng.integers(samples * 3 // 8, samples, batch) if ragged
                     else np.full(batch, samples))
    text = rng.integers(1, vocab, (batch, tokens)).astype(np.int32)
    token_lengths = (rng.integers(3, tokens, batch) if ragged
                     else np.full(batch, labels or tokens))
    weights = np.ones(batch, np.float32)
    if ragged:
        weights[-1] = 0.0
    return {"audio": audio, "audio_lengths": audio_lengths.astype(np.int32), "tokens": text,
            "token_lengths": token_lengths.astype(np.int32), "weights": weights}


class TrainStep:
    """The project's jitted train step of a `step_config` model on one synthetic batch of
    `batch` utterances of length bucket `bucket`; `run()` takes one step and waits for it."""

    def __init__(self, batch: int, bucket: int = 0, loss_frames_per_chunk: int | None = None,
                 preset: str = "small", loss: str = "fused",
                 lstm_backward: str = "hand_written"):
        from amnet.rnnt import objective
        from amnet.training import optim
        from amnet.training import step as train_step

        config, vocab = step_config(batch, preset, loss)
        if loss_frames_per_chunk:
            config.model.loss_frames_per_chunk = loss_frames_per_chunk
        config.model.lstm_backward = lstm_backward
        buckets = [tuple(b) for b in config.data.buckets]
        config.data.buckets = (buckets[bucket], *buckets[:bucket], *buckets[bucket + 1:])
        self.config = config
        self.front, augment = build.frontend_configs(config)
        self.model = build.model(config, vocab)
        optimizer = optim.make_optimizer(config.optimizer, 1000)
        mesh = parallel.make_mesh(1)
        self.state = train_step.create_train_state(self.model, optimizer, buckets[bucket],
                                                   self.front, config.seed, mesh)
        self.step = train_step.make_train_step(
            self.model, optimizer, mesh, self.front, augment,
            objective.rnnt_objective(self.model, config.loss),
            normalization=build.loss_normalization(config))
        self.batch = parallel.global_batch(synthetic_batch(buckets[bucket], batch, vocab), mesh)
        self.batch_size = batch
        self.samples, self.labels = buckets[bucket]
        self.frontend_frames = int(frontend.num_frames(self.samples, self.front))
        self.frames = self.frontend_frames // self.front.stack

    def flops(self, with_frontend: bool = True) -> flops.StepFlops:
        """The step's analytical matmul FLOPs (`amnet.rnnt.flops.train_step_flops`)."""
        return flops.train_step_flops(
            self.model.config, self.batch_size, self.frames, self.labels,
            frontend_frames=self.frontend_frames if with_frontend else 0,
            fft_bins=self.front.n_fft // 2 + 1, num_mels=self.front.num_mels)

    def hlo_flops(self) -> int:
        """Matmul FLOPs of the compiled step's HLO (`benchmarks.utilization`)."""
        from benchmarks import utilization

        return utilization.hlo_matmul_flops(
            self.step.lower(self.state, self.batch).compile().as_text())[0]

    def run(self) -> jax.Array:
        self.state, metrics = self.step(self.state, self.batch)
        return jax.block_until_ready(metrics["loss"])
