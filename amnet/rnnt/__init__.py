"""The generic streaming RNN-T: frontend, LSTM layers, encoder stack, prediction network, joint,
losses (exact, fused, pruned; CTC), decoding and streaming, FLOP counts.

`amnet.rnnt.rnnt_loss` is the exact loss (`amnet.rnnt.loss`). It is resolved on first use, so
that importing a light module of this package (`linear`, `mel`, `lm`) does not load JAX.
"""


def __getattr__(name: str):
    if name == "rnnt_loss":
        from amnet.rnnt.loss import rnnt_loss

        return rnnt_loss
    raise AttributeError(f"module 'amnet.rnnt' has no attribute {name!r}")
