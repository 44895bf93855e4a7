"""Randomly initialized models of the project's configs, for benchmarks that need no run."""

from __future__ import annotations

import jax
import numpy as np

from amnet import build, cmvn, frontend
from amnet.transducer import Transducer
from experiments.configs import amnet as amnet_config
from experiments.configs import baseline


def fresh_model(name: str, preset: str = "small") -> tuple[Transducer, dict]:
    """(model, params) of `experiments/configs/amnet.py:<preset>,<name>` (e.g. `single-dense`,
    `lowrank`), character vocabulary, seed 0."""
    config = amnet_config.get_config(f"{preset},{name}")
    model = Transducer(build.model_config(config, 29))
    frames = 10
    params = model.init(jax.random.key(0), np.zeros((1, frames, model.config.input_dim)),
                        np.array([frames]), np.ones((1, 2), np.int32), np.array([2]))["params"]
    return model, params


def small_config(batch: int):
    """The `small` baseline config at `batch` utterances per step."""
    config = cmvn.unit_stats(baseline.get_config("small"))
    config.train.global_batch_size = batch
    config.model.loss = "fused"  # the exact loss, as the PyTorch twin's step
    return config


def synthetic_batch(config, batch: int, vocab: int = 29) -> dict:
    """Full-length noise audio and full-length random transcripts of the first bucket."""
    rng = np.random.default_rng(0)
    samples, tokens = config.data.buckets[0]
    return {"audio": rng.integers(-3000, 3000, (batch, samples)).astype(np.int16),
            "audio_lengths": np.full(batch, samples, np.int32),
            "tokens": rng.integers(1, vocab, (batch, tokens)).astype(np.int32),
            "token_lengths": np.full(batch, tokens, np.int32),
            "weights": np.ones(batch, np.float32)}


class SmallTrainStep:
    """The project's jitted train step of the `small` dense RNN-T on one synthetic batch of
    `batch` utterances of length bucket `bucket`; `run()` takes one step and waits for it."""

    def __init__(self, batch: int, bucket: int = 0, loss_frames_per_chunk: int | None = None):
        from amnet import objective, optim, train_step

        config = small_config(batch)
        if loss_frames_per_chunk:
            config.model.loss_frames_per_chunk = loss_frames_per_chunk
        buckets = [tuple(b) for b in config.data.buckets]
        config.data.buckets = (buckets[bucket], *buckets[:bucket], *buckets[bucket + 1:])
        self.config = config
        self.front, augment = build.frontend_configs(config)
        self.model = Transducer(build.model_config(config, 29))
        optimizer = optim.make_optimizer(config.optimizer, 1000)
        mesh = train_step.make_mesh(1)
        self.state = train_step.create_train_state(self.model, optimizer, buckets[bucket],
                                                   self.front, config.seed, mesh)
        self.step = train_step.make_train_step(
            self.model, optimizer, mesh, self.front, augment,
            objective.rnnt_objective(self.model, config.loss),
            normalization=build.loss_normalization(config))
        self.batch = train_step.global_batch(synthetic_batch(config, batch), mesh)
        samples = buckets[bucket][0]
        self.frames = int(frontend.num_frames(samples, self.front)) // self.front.stack

    def run(self) -> jax.Array:
        self.state, metrics = self.step(self.state, self.batch)
        return jax.block_until_ready(metrics["loss"])
