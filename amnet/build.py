"""Components from a run config (`experiments/configs/*`): the transducer's and the
frontend's configs. Light on imports, so that steps and benchmarks can use it without the data
stack."""

from __future__ import annotations

import ml_collections

from amnet import frontend
from amnet.transducer import TransducerConfig


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> TransducerConfig:
    return TransducerConfig(input_dim=config.frontend.num_mels * config.frontend.stack,
                            vocab_size=vocab_size, **config.model.to_dict())


def frontend_configs(config: ml_collections.ConfigDict):
    f = config.frontend
    augment = (frontend.SpecAugmentConfig(f.num_freq_masks, f.max_freq_width, f.num_time_masks,
                                          f.max_time_ratio) if f.spec_augment else None)
    return frontend.FrontendConfig(num_mels=f.num_mels, stack=f.stack,
                                   feature_mean=f.feature_mean,
                                   feature_std=f.feature_std), augment
