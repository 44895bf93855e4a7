"""Components from a run config (`experiments/configs/*`): the transducer's and the
frontend's configs. Light on imports, so that steps and benchmarks can use it without the data
stack."""

from __future__ import annotations

import ml_collections

from amnet.rnnt import frontend
from amnet.rnnt.transducer import TransducerConfig


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> TransducerConfig:
    return TransducerConfig(input_dim=config.frontend.num_mels * config.frontend.stack,
                            vocab_size=vocab_size, **config.model.to_dict())


def loss_normalization(config: ml_collections.ConfigDict) -> str:
    """What the train step divides the summed loss by (`loss.normalization`)."""
    return config.loss.get("normalization", "utterance") if "loss" in config else "utterance"


def frontend_configs(config: ml_collections.ConfigDict):
    """(FrontendConfig, SpecAugmentConfig or None). `frontend.normalization`: "cmvn" (per-channel
    statistics stored in the config by `amnet.rnnt.cmvn.resolve`) or "global" (the scalars
    `feature_mean`, `feature_std`)."""
    f = config.frontend
    augment = (frontend.SpecAugmentConfig(f.num_freq_masks, f.max_freq_width, f.num_time_masks,
                                          f.max_time_ratio) if f.spec_augment else None)
    normalization = f.get("normalization", "global")
    if normalization == "cmvn":
        if f.get("cmvn_mean") is None:
            raise ValueError("frontend.normalization is 'cmvn' but the config holds no CMVN "
                             "statistics (frontend.cmvn_mean): amnet.rnnt.cmvn.resolve computes "
                             "them from the training split, and runs store them in config.json")
        mean, std = tuple(f.cmvn_mean), tuple(f.cmvn_std)
    elif normalization == "global":
        mean, std = f.feature_mean, f.feature_std
    else:
        raise ValueError(f"frontend.normalization must be 'cmvn' or 'global', got "
                         f"{normalization!r}")
    return frontend.FrontendConfig(num_mels=f.num_mels, stack=f.stack, feature_mean=mean,
                                   feature_std=std), augment
