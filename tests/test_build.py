"""The composition root (`amnet.build`): models from configs keep the parameter paths that
checkpoints, warm starts, pruning and neural-diff selectors depend on."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from amnet import build
from experiments.configs import amnet as amnet_config
from experiments.configs import baseline
from tests.helpers import CHARACTERS

# Parameter paths and shapes of each preset as written by the code before the layered packages
# (commit 70e29eb, one flat `amnet/` package): checkpoints of that code must stay readable.
RECORDED = json.loads((Path(__file__).parent / "fixtures" / "param_paths.json").read_text())


def parameter_shapes(config, vocab_size: int) -> dict[str, list[int]]:
    model = build.model(config, vocab_size)
    frames, labels = 4, 3
    params = jax.eval_shape(lambda: model.init(
        jax.random.key(0), np.zeros((1, frames, model.config.input_dim), np.float32),
        np.full((1,), frames), np.ones((1, labels), np.int32), np.full((1,), labels))["params"])
    return {"/".join(str(getattr(k, "key", k)) for k in path): list(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def preset(name: str):
    family, arg = name.split(":")
    return (baseline.get_config(arg) if family == "baseline"
            else amnet_config.get_config(arg))


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_parameter_paths_and_shapes_are_the_recorded_ones(name):
    assert parameter_shapes(preset(name), CHARACTERS) == RECORDED[name]


def test_the_record_covers_the_encoder_paths_selectors_read():
    small = RECORDED["baseline:small"]
    assert "encoder/branch_0/layers_0/input_kernel" in small
    assert any(p.startswith("encoder/arbitrator/") for p in RECORDED["amnet:small,lowrank"])
    assert any(p.startswith("encoder/branch_1/") for p in RECORDED["amnet:small,sparse"])
