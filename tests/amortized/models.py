"""A small three-branch AmNet (dense, sparse, low-rank) and a batch, shared by the AmNet tests."""

import jax
import jax.numpy as jnp
import numpy as np

from amnet import build
from amnet.rnnt.transducer import TransducerConfig

BRANCHES = ("dense", "sparse(0.5)", "lowrank(3)")

def amnet_model(branches=BRANCHES, processor_flops=2e5):
    config = TransducerConfig(input_dim=12, vocab_size=7, encoder_layers=2, encoder_hidden=16,
                              embed_dim=8, predictor_hidden=16, joint_dim=16,
                              encoder_branches=branches, arbitrator_hidden=8,
                              processor_flops=processor_flops)
    return build.transducer(config)

def amnet_batch(batch=3, frames=30):
    rng = np.random.default_rng(0)
    features = jnp.asarray(rng.normal(size=(batch, frames, 12)) * 3, jnp.float32)
    lengths = jnp.array([frames, frames - 11, frames - 4][:batch])
    targets = jnp.asarray(rng.integers(1, 7, size=(batch, 5)), jnp.int32)
    return features, lengths, targets, jnp.array([5, 2, 4][:batch])

def amnet_params(model, batch):
    params = model.init(jax.random.key(0), *batch)["params"]
    # A livelier arbitrator than its initialization, so that every branch gets frames.
    arbitrator = params["encoder"]["arbitrator"]
    arbitrator["w2"] = arbitrator["w2"] * 8.0
    return params
