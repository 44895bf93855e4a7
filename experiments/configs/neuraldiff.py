"""Neural-diff updates of a trained RNN-T over corpus generations g1..g5.

    python -m experiments.neuraldiff_generations --config=experiments/configs/neuraldiff.py:small \
        --config.base_run=runs/dense_small --workdir=runs/neuraldiff --data_dir=data

The model, frontend and data blocks are the baseline preset's and must match the base run
(`base_run`, the g0 model; its stored config is checked). Each update trains `train.steps`
steps on one generation's training split (new domain plus the corpus's replay share) and
as many g0 training utterances (`base_replay`).
Budgets are fractions of the fp32 model's bytes; the package, header included, must fit.
"""

import ml_collections
from ml_collections import config_dict

from experiments.configs import baseline

METHODS = ("full", "sparse", "hashed", "topk", "svd", "compressed", "zstd")


def get_config(preset: str = "small") -> ml_collections.ConfigDict:
    c = baseline.get_config(preset)
    c.base_run = config_dict.placeholder(str)  # run dir of the g0 model (orbax checkpoints)
    c.generations = 5  # updates g1..g5
    c.methods = METHODS
    c.budgets = (0.02, 0.10)  # of the fp32 model's bytes, for every budgeted method
    c.sparse_budgets = ()  # extra budgets for the learned sparse diff alone (a finer sweep)

    # `train` now describes one update's training (each generation's): 300 steps of 32 (6.4
    # epochs of a generation's 1,500 utterances) at 1e-3, the learned sparse diff's best rate
    # on the recipe's baseline (docs/neuraldiff.md: 60 steps at 1e-4, the earlier recipe, left
    # g1 where the base had it).
    c.train.update(steps=300, global_batch_size=32, log_every=10)
    # g0 training utterances added to each update's training split, as a share of its size
    # (a seeded draw per generation; 0: only the corpus's own replay share, drawn from every
    # earlier generation, so g0's part of it shrinks from 30% at g1 to 6% at g5). At 1.0 the
    # full fine-tune no longer forgets g0 over 5 updates (docs/neuraldiff.md, "Base replay").
    c.base_replay = 1.0
    c.loss.pruned_warmup_steps = 0  # the base model's simple joint is trained already
    c.optimizer.update(learning_rate=1e-3, warmup_steps=15, end_ratio=0.2, weight_decay=0.0)

    c.diff = ml_collections.ConfigDict()
    c.diff.min_ndim = 2  # which leaves carry a diff: 2 = kernels and embeddings, 1 = all
    c.diff.include = config_dict.placeholder(str)  # regex over leaf paths
    c.diff.exclude = config_dict.placeholder(str)
    c.diff.coding = "fp16"  # value coding of learned diffs and post-hoc deltas: fp32|fp16|int8

    c.sparse = ml_collections.ConfigDict()
    c.sparse.begin_step = 60  # dense diff until here
    c.sparse.end_step = 180  # the budget's density from here on, mask fixed
    c.sparse.every = 20  # pruning steps between begin and end
    c.sparse.power = 3.0  # cubic density schedule
    c.sparse.scope = "global"  # or per_tensor

    c.hashed = ml_collections.ConfigDict()
    c.hashed.seed = 0

    c.compressed = ml_collections.ConfigDict()
    c.compressed.coding = "int8"  # the whole-model baseline: pruned and quantized

    if preset == "tiny":
        c.generations = 1
        c.budgets = (0.10,)
        c.train.update(steps=6, global_batch_size=8, log_every=2)
        c.base_replay = 0.0  # (tests/data/test_datasets.py trains with it)
        c.optimizer.update(learning_rate=1e-4, warmup_steps=10)
        c.sparse.update(begin_step=1, end_step=4, every=1)
    return c
