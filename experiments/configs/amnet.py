"""AmNet: the baseline's transducer with a branched encoder, arbitrator and amortized loss.

    python -m experiments.train --config=experiments/configs/amnet.py:small,lowrank \
        --workdir=runs/amnet_lowrank --config.init.dense_run=runs/demo

`get_config("<preset>,<model>")`. Presets as in baseline.py (`tiny`, `small`, `full`); the
model after the comma:
  lowrank, sparse          AmNet with branches (dense, lowrank(r)) / (dense, sparse(s)), L_amr
  blocks                   (dense, sparse(s,8x64)): the sparse branch in balanced blocks of 8
                           inputs x 64 outputs, the structure the device runtime multiplies at
                           dense speed (docs/device.md); -noamr, -upl and single- as for sparse
  lowrank-noamr, ...       the same without the amortization penalty (compute cost only)
  lowrank-upl, ...         the ablation: penalize the final user-perceived latency instead
  three                    three branches: dense, sparse(s), lowrank(r)
  single-dense, single-sparse, single-lowrank
                           one encoder, no arbitrator (the paper's baselines)
The processor speed P is set so that the dense baseline needs `realtime_factor` x real time
(1.5: it cannot keep up, the paper's regime; docs/amnet.md).
"""

import ml_collections
from ml_collections import config_dict

from amnet.amortized.costs import frame_costs
from amnet.data.text import CharTokenizer
from amnet.rnnt.transducer import TransducerConfig
from experiments.configs import baseline

MODELS = ("lowrank", "sparse", "blocks", "lowrank-noamr", "sparse-noamr", "blocks-noamr",
          "lowrank-upl", "sparse-upl", "blocks-upl", "three", "single-dense", "single-sparse",
          "single-blocks", "single-lowrank")


def dense_frame_flops(c: ml_collections.ConfigDict) -> int:
    """Counted FLOPs per frame of the dense single-encoder model of config `c`."""
    model = {k: v for k, v in c.model.to_dict().items()
             if k not in ("encoder_branches", "arbitrator_hidden", "frame_period_s",
                          "processor_flops")}
    return frame_costs(TransducerConfig(
        input_dim=c.frontend.num_mels * c.frontend.stack, vocab_size=CharTokenizer().vocab_size,
        **model)).per_branch[0]


def get_config(arg: str = "small,lowrank") -> ml_collections.ConfigDict:
    preset, _, model = arg.partition(",")
    model = model or "lowrank"
    if model not in MODELS:
        raise ValueError(f"unknown AmNet model {model!r}; choose one of {', '.join(MODELS)}")
    c = baseline.get_config(preset)
    c.amnet_model = model
    sparse, blocks, lowrank = "sparse(0.9)", "sparse(0.9,8x64)", "lowrank(16)"
    if preset == "tiny":
        lowrank = "lowrank(4)"

    c.latency = ml_collections.ConfigDict()
    c.latency.frame_period_s = 0.03  # Δ: one stacked encoder frame
    c.latency.realtime_factor = 1.5  # the dense baseline needs this x real time at speed P
    c.model.frame_period_s = c.latency.frame_period_s
    c.model.processor_flops = float(dense_frame_flops(c)) / (
        c.latency.realtime_factor * c.latency.frame_period_s)
    c.model.arbitrator_hidden = 16
    kind = model.removeprefix("single-").split("-")[0]
    if model.startswith("single-"):
        c.model.encoder_branches = ({"dense": "dense", "sparse": sparse, "blocks": blocks,
                                     "lowrank": lowrank}[kind],)
    elif model == "three":
        c.model.encoder_branches = ("dense", sparse, lowrank)
    else:
        c.model.encoder_branches = ("dense", {"sparse": sparse, "blocks": blocks,
                                              "lowrank": lowrank}[kind])

    c.amnet = ml_collections.ConfigDict()
    # The routing terms are means over the utterance's frames (<= 1), added to its summed
    # RNN-T + CTC loss: the weights are in nats per utterance. 30 / 60: at 10 / 20 the recipe's
    # baseline keeps 86% of frames dense with ~1 s of backlog (docs/results.md).
    c.amnet.cost_weight = 30.0  # λ_cost
    c.amnet.amortization = ("none" if model.endswith("-noamr") else
                            "upl" if model.endswith("-upl") else "amr")
    c.amnet.amr_weight = 60.0  # λ_amr > λ_cost: without backlog the slow branch is cheaper
    c.amnet.backlog_threshold_s = 0.06  # β: two frames of backlog
    c.amnet.upl_weight = 0.5  # λ_upl per frame of final latency (the ablation)
    c.amnet.entropy_weight = 0.0  # λ_ent · mean_t H(p_t): pushes p_t towards one-hot
    c.amnet.temperature = ml_collections.ConfigDict()
    c.amnet.temperature.initial = 1.0
    c.amnet.temperature.final = 0.005  # the Gumbel-softmax sample is one-hot within 1%
    c.amnet.temperature.decay_steps = 200

    c.pruning = ml_collections.ConfigDict()
    c.pruning.start_step = 0
    c.pruning.end_step = 150
    c.pruning.every = 10

    c.init = ml_collections.ConfigDict()
    c.init.dense_run = config_dict.placeholder(str)  # run dir of a trained dense baseline

    # Fine-tuning from the dense baseline (init.dense_run); from scratch, use baseline steps.
    c.optimizer.learning_rate = 1e-3
    c.loss.pruned_warmup_steps = 0  # the dense run's simple joint is trained already
    c.optimizer.arbitrator_lr_multiplier = 10.0  # the gate learns faster than the branches
    c.optimizer.warmup_steps = 30
    c.train.steps = 300
    c.train.eval_every = 150
    c.train.checkpoint_every = 100
    if preset == "tiny":
        c.amnet.temperature.decay_steps = 8
        c.pruning.update(end_step=8, every=2)
        c.optimizer.warmup_steps = 2
        c.train.update(steps=12, eval_every=12, checkpoint_every=4, log_every=2)
        c.eval.test_decoders = ("greedy", "beam")  # what the AmNet table reads
    return c
