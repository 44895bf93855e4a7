"""Checkpointer: round trip of state and iterator state; incompatible configs are refused."""

import jax.numpy as jnp
import numpy as np
import pytest

from amnet.checkpointing import Checkpointer, IncompatibleCheckpointError


def _state(value):
    return {"params": {"w": jnp.full((3, 2), value)}, "step": jnp.asarray(7)}


def test_round_trip_keeps_newest_and_best(tmp_path):
    checkpointer = Checkpointer(tmp_path, keep=2, keep_best=1)
    for step, wer in ((1, 0.5), (2, 0.3), (3, 0.4)):
        checkpointer.save(step, _state(float(step)), {"next_index": step * 10}, {"m": 1}, wer=wer)
    checkpointer.wait()
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints" / "latest").iterdir()) == [2, 3]
    assert [p.name for p in (tmp_path / "checkpoints" / "best").iterdir()] == ["2"]
    state, data = checkpointer.restore_latest(_state(0.0), {"m": 1})
    np.testing.assert_array_equal(state["params"]["w"], np.full((3, 2), 3.0))
    assert data == {"next_index": 30}
    checkpointer.close()


def test_incompatible_config_is_refused(tmp_path):
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save(1, _state(1.0), {}, {"model": {"hidden": 32}})
    checkpointer.wait()
    with pytest.raises(IncompatibleCheckpointError, match=r"differing keys: \['model'\]"):
        checkpointer.restore_latest(_state(0.0), {"model": {"hidden": 64}})
    checkpointer.close()


def test_no_checkpoint_restores_nothing(tmp_path):
    checkpointer = Checkpointer(tmp_path)
    assert checkpointer.restore_latest(_state(0.0), {}) is None
    checkpointer.close()
