"""Weights between the JAX checkpoints (`amnet` params) and PyTorch `state_dict`s.

JAX kernels are `[in, out]` and PyTorch weights `[out, in]`; an LSTM's one JAX bias becomes
`bias_ih` (with `bias_hh` = 0) and comes back as their sum. A sparse encoder's masks are its
kernels' zero pattern. Low-rank factors keep their `[in, r]`, `[r, out]` layout.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from amnet.rnnt.flops import LinearSpec
from amnet.rnnt.transducer import TransducerConfig
from amnet.torch_baselines.model import MaskedLSTM, TorchTransducer

Params = dict[str, Any]


def _t(x) -> torch.Tensor:
    return torch.from_numpy(np.array(x, np.float32))


def _lstm_to_torch(layer: Params, prefix: str, projection: bool) -> dict[str, torch.Tensor]:
    out = {f"{prefix}.lstm.weight_ih_l0": _t(layer["input_kernel"]).T.contiguous(),
           f"{prefix}.lstm.weight_hh_l0": _t(layer["recurrent_kernel"]).T.contiguous(),
           f"{prefix}.lstm.bias_ih_l0": _t(layer["bias"]),
           f"{prefix}.lstm.bias_hh_l0": torch.zeros(np.shape(layer["bias"]))}
    if projection:
        out[f"{prefix}.lstm.weight_hr_l0"] = _t(layer["projection_kernel"]).T.contiguous()
    return out


def _lowrank_to_torch(layer: Params, prefix: str, projection: bool) -> dict[str, torch.Tensor]:
    names = ["input", "recurrent"] + (["projection"] if projection else [])
    out = {f"{prefix}.bias": _t(layer["bias"])}
    for name in names:
        out[f"{prefix}.{name}_u"] = _t(layer[f"{name}_kernel_u"])
        out[f"{prefix}.{name}_v"] = _t(layer[f"{name}_kernel_v"])
    return out


def to_torch(params: Params, config: TransducerConfig) -> TorchTransducer:
    """A `TorchTransducer` holding the JAX `params` (single-encoder configs)."""
    model = TorchTransducer(config)
    spec = LinearSpec.parse(config.encoder_branches[0])
    projection = bool(config.encoder_projection)
    state = {}
    encoder = params["encoder"]["branch_0"]
    for i in range(config.encoder_layers):
        layer = encoder[f"layers_{i}"]
        convert = _lowrank_to_torch if spec.kind == "lowrank" else _lstm_to_torch
        state.update(convert(layer, f"encoder.{i}", projection))
    if config.predictor == "stateless":
        state.update({"predictor.0.weight": _t(params["predictor"]["layer"]["kernel"]).T
                      .contiguous(), "predictor.0.bias": _t(params["predictor"]["layer"]["bias"])})
    else:
        for i in range(config.predictor_layers):
            state.update(_lstm_to_torch(params["predictor"][f"layers_{i}"], f"predictor.{i}",
                                        False))
    state.update({
        "embed.weight": _t(params["embed"]["embedding"]),
        "encoder_to_joint.weight": _t(params["encoder_to_joint"]["kernel"]).T.contiguous(),
        "encoder_to_joint.bias": _t(params["encoder_to_joint"]["bias"]),
        "predictor_to_joint.weight": _t(params["predictor_to_joint"]["kernel"]).T.contiguous(),
        "output.weight": _t(params["output_kernel"]).T.contiguous(),
        "output.bias": _t(params["output_bias"])})
    if config.ctc_head:
        state.update({"ctc_output.weight": _t(params["ctc_output"]["kernel"]).T.contiguous(),
                      "ctc_output.bias": _t(params["ctc_output"]["bias"])})
    model.load_state_dict(state, strict=True)
    if spec.kind == "sparse":
        for layer in model.encoder:
            assert isinstance(layer, MaskedLSTM)
            layer.set_masks({name: (getattr(layer.lstm, name) != 0).float()
                             for name in ("weight_ih_l0", "weight_hh_l0", "weight_hr_l0")
                             if hasattr(layer.lstm, name)})
    return model


def _n(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float32)


def to_jax(model: TorchTransducer) -> Params:
    """The JAX params (nested dict of NumPy arrays) of a `TorchTransducer`."""
    config = model.config
    spec = LinearSpec.parse(config.encoder_branches[0])
    state = model.state_dict()

    def lstm(prefix: str, projection: bool) -> Params:
        out = {"input_kernel": _n(state[f"{prefix}.lstm.weight_ih_l0"]).T,
               "recurrent_kernel": _n(state[f"{prefix}.lstm.weight_hh_l0"]).T,
               "bias": _n(state[f"{prefix}.lstm.bias_ih_l0"] + state[f"{prefix}.lstm.bias_hh_l0"])}
        if projection:
            out["projection_kernel"] = _n(state[f"{prefix}.lstm.weight_hr_l0"]).T
        return out

    def lowrank(prefix: str, projection: bool) -> Params:
        out = {"bias": _n(state[f"{prefix}.bias"])}
        for name in ["input", "recurrent"] + (["projection"] if projection else []):
            out[f"{name}_kernel_u"] = _n(state[f"{prefix}.{name}_u"])
            out[f"{name}_kernel_v"] = _n(state[f"{prefix}.{name}_v"])
        return out

    projection = bool(config.encoder_projection)
    layer_of = lowrank if spec.kind == "lowrank" else lstm
    encoder = {f"layers_{i}": layer_of(f"encoder.{i}", projection)
               for i in range(config.encoder_layers)}
    if spec.kind == "sparse":
        for i, layer in enumerate(model.encoder):
            for name, key in (("weight_ih_l0", "input_kernel"),
                              ("weight_hh_l0", "recurrent_kernel"),
                              ("weight_hr_l0", "projection_kernel")):
                if name in layer.masks:
                    encoder[f"layers_{i}"][key] = encoder[f"layers_{i}"][key] * _n(
                        layer.masks[name]).T
    return {
        "encoder": {"branch_0": encoder},
        "predictor": ({"layer": {"kernel": _n(state["predictor.0.weight"]).T,
                                 "bias": _n(state["predictor.0.bias"])}}
                      if config.predictor == "stateless" else
                      {f"layers_{i}": lstm(f"predictor.{i}", False)
                       for i in range(config.predictor_layers)}),
        "embed": {"embedding": _n(state["embed.weight"])},
        "encoder_to_joint": {"kernel": _n(state["encoder_to_joint.weight"]).T,
                             "bias": _n(state["encoder_to_joint.bias"])},
        "predictor_to_joint": {"kernel": _n(state["predictor_to_joint.weight"]).T},
        "output_kernel": _n(state["output.weight"]).T,
        "output_bias": _n(state["output.bias"]),
        **({"ctc_output": {"kernel": _n(state["ctc_output.weight"]).T,
                           "bias": _n(state["ctc_output.bias"])}} if config.ctc_head else {}),
    }
