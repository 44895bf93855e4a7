"""The composition root: every component a run is made of, from its config
(`experiments/configs/*`): tokenizer, frontend and SpecAugment, the transducer with its encoder,
the optimizer, the training objective and the sparse-branch pruner (pipelines and splits:
`amnet.data.datasets`). Every entry point, the
trainer, the update trainer, benchmarks and tests build models here, and nowhere else."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import optax

from amnet.amortized import objective as amnet_objective
from amnet.amortized import pruning
from amnet.amortized.costs import frame_costs
from amnet.amortized.encoder import Encoder as AmNetEncoder
from amnet.data.text import CharTokenizer, SentencePieceTokenizer, Tokenizer
from amnet.rnnt import flops, frontend
from amnet.rnnt import objective as rnnt_objective
from amnet.rnnt.encoder import Encoder as StackEncoder
from amnet.rnnt.transducer import Transducer, TransducerConfig
from amnet.training import optim


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> TransducerConfig:
    return TransducerConfig(input_dim=config.frontend.num_mels * config.frontend.stack,
                            vocab_size=vocab_size, **config.model.to_dict())


def encoder(config: TransducerConfig) -> nn.Module:
    """The encoder of `config`: one LSTM stack (`encoder_branches` of one spec: the dense
    baseline, or a single sparse or low-rank encoder; `amnet.rnnt.encoder`), or AmNet's K >= 2
    branches with an arbitrator trained for `processor_flops` (`amnet.amortized.encoder`)."""
    specs = tuple(flops.LinearSpec.parse(b) for b in config.encoder_branches)
    hand_written = config.lstm_backward == "hand_written"
    if len(specs) == 1:
        return StackEncoder(config.input_dim, config.encoder_hidden, config.encoder_layers,
                            config.encoder_projection, jnp.dtype(config.dtype), specs[0],
                            hand_written)
    return AmNetEncoder(
        config.input_dim, config.encoder_hidden, config.encoder_layers,
        config.encoder_projection, jnp.dtype(config.dtype),
        branches=specs,
        arbitrator_hidden=config.arbitrator_hidden,
        branch_flops=tuple(float(f) for f in frame_costs(config).per_branch),
        frame_period_s=config.frame_period_s, processor_flops=config.processor_flops,
        hand_written_backward=hand_written)


def transducer(config: TransducerConfig) -> Transducer:
    """The RNN-T of `config` with its encoder."""
    return Transducer(config, encoder(config))


def model(config: ml_collections.ConfigDict, vocab_size: int) -> Transducer:
    """The RNN-T of a run config for a tokenizer of `vocab_size` tokens."""
    return transducer(model_config(config, vocab_size))


def tokenizer(config: ml_collections.ConfigDict) -> Tokenizer:
    """`data.tokenizer`: "char" or a sentencepiece model (checked against `data.vocab_size`)."""
    if config.data.tokenizer == "char":
        return CharTokenizer()
    if not config.data.tokenizer:
        raise ValueError("config.data.tokenizer is unset: give 'char' or a sentencepiece model "
                         "(python -m experiments.build_tokenizer)")
    tokens = SentencePieceTokenizer(config.data.tokenizer)
    expected = config.data.get("vocab_size")
    if expected and tokens.vocab_size != expected:
        raise ValueError(f"{config.data.tokenizer} has {tokens.vocab_size} pieces, the config "
                         f"expects data.vocab_size={expected}")
    return tokens


def optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The run's optimizer: clipping and AdamW on the `optimizer` block's schedule over
    `train.steps` (`amnet.training.optim`)."""
    return optim.make_optimizer(config.optimizer, config.train.steps)


def loss_normalization(config: ml_collections.ConfigDict) -> str:
    """What the train step divides the summed loss by (`loss.normalization`)."""
    return config.loss.get("normalization", "utterance") if "loss" in config else "utterance"


def objective(config: ml_collections.ConfigDict, model: Transducer):
    """(objective, constrain): AmNet's loss for two or more branches, the plain RNN-T loss
    otherwise; the pruner when a branch is sparse."""
    branches = model.config.encoder_branches
    loss_config = config.get("loss")
    loss = (amnet_objective.amnet_objective(model, config.amnet, loss_config)
            if len(branches) > 1 else rnnt_objective.rnnt_objective(model, loss_config))
    constrain = pruning.make_pruner(branches, config.pruning) if "pruning" in config else None
    if constrain is None and pruning.sparse_branches(branches):
        raise ValueError("a sparse branch needs a `pruning` block in the config")
    return loss, constrain


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
