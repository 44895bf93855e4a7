"""Randomly initialized models of the project's configs, for benchmarks that need no run."""

from __future__ import annotations

import jax
import numpy as np

from amnet import build
from amnet.transducer import Transducer
from experiments.configs import amnet as amnet_config


def fresh_model(name: str, preset: str = "small") -> tuple[Transducer, dict]:
    """(model, params) of `experiments/configs/amnet.py:<preset>,<name>` (e.g. `single-dense`,
    `lowrank`), character vocabulary, seed 0."""
    config = amnet_config.get_config(f"{preset},{name}")
    model = Transducer(build.model_config(config, 29))
    frames = 10
    params = model.init(jax.random.key(0), np.zeros((1, frames, model.config.input_dim)),
                        np.array([frames]), np.ones((1, 2), np.int32), np.array([2]))["params"]
    return model, params
