"""PyTorch implementations of the single-encoder RNN-T baselines (dense, sparse, low-rank), the
RNN-T loss in plain torch, and weight conversion from and to the JAX checkpoints.

Needs the optional extra `torch` (`pip install -e '.[torch]'`; CPU torch 2.13 here).
"""
