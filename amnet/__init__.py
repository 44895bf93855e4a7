"""AmNet: streaming RNN-T speech recognition with amortized (fast/slow) encoders, in JAX/Flax.

Data flows corpus (amnet.data) -> frontend -> model -> loss -> train step -> evaluation.
"""
