"""Checkpointer: round trip of state and iterator state; incompatible configs are refused;
integrity manifests catch changed, missing and extra files."""

import json
import re

import jax.numpy as jnp
import numpy as np
import pytest
from absl import logging

from amnet.training import checkpointing, rundir
from amnet.training.checkpointing import Checkpointer, IncompatibleCheckpointError, IntegrityError


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


def _saved(tmp_path, steps=(1, 2)):
    checkpointer = Checkpointer(tmp_path, keep=3, keep_best=1)
    for step in steps:
        checkpointer.save(step, _state(float(step)), {"next_index": step}, {"m": 1}, wer=0.5)
    checkpointer.wait()
    return checkpointer


def _largest_file(step_dir):
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.name != checkpointing.MANIFEST]
    return max(files, key=lambda p: p.stat().st_size)


def _array_file(step_dir):
    """The largest array data file of a step's state (orbax OCDBT: `.../d/<hash>`)."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files, sorted(step_dir.rglob("*"))
    return max(files, key=lambda p: p.stat().st_size)


def _warnings(monkeypatch):
    logged = []
    monkeypatch.setattr(logging, "warning",
                        lambda msg, *args, **_: logged.append(msg % args if args else msg))
    return logged


def test_every_step_gets_a_manifest_of_all_its_files(tmp_path):
    _saved(tmp_path).close()
    for kind, steps in (("latest", ["1", "2"]), ("best", ["2"])):
        for step in steps:
            step_dir = tmp_path / "checkpoints" / kind / step
            manifest = json.loads((step_dir / checkpointing.MANIFEST).read_text())
            files = sorted(p.relative_to(step_dir).as_posix() for p in step_dir.rglob("*")
                           if p.is_file() and p.name != checkpointing.MANIFEST)
            assert manifest["algorithm"] == "sha256" and sorted(manifest["files"]) == files
            assert any(f.startswith("state/") for f in files)
            assert checkpointing.verify_manifest(step_dir)


def test_saves_stay_asynchronous_and_the_next_save_seals_the_step_before(tmp_path):
    checkpointer = Checkpointer(tmp_path, keep=3)
    latest = tmp_path / "checkpoints" / "latest"
    checkpointer.save(1, _state(1.0), {"next_index": 1}, {"m": 1})
    assert not (latest / "1" / checkpointing.MANIFEST).exists()  # save returned; not sealed
    checkpointer.save(2, _state(2.0), {"next_index": 2}, {"m": 1})
    assert checkpointing.verify_manifest(latest / "1")
    assert not (latest / "2" / checkpointing.MANIFEST).exists()
    checkpointer.wait()
    assert checkpointing.verify_manifest(latest / "2")
    checkpointer.close()


def test_a_flipped_bit_is_named_and_the_previous_step_is_restored(tmp_path, monkeypatch):
    checkpointer = _saved(tmp_path)
    newest = tmp_path / "checkpoints" / "latest" / "2"
    victim = _array_file(newest)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x10
    victim.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=f"{re.escape(str(victim))}: SHA-256 differs"):
        checkpointing.verify_manifest(newest)
    with pytest.raises(IntegrityError, match=re.escape(str(victim))):
        checkpointing.load_params(tmp_path)
    warnings = _warnings(monkeypatch)
    state, data_state = checkpointer.restore_latest(_state(0.0), {"m": 1})
    np.testing.assert_array_equal(state["params"]["w"], np.full((3, 2), 1.0))
    assert data_state == {"next_index": 1}
    assert any("step 2 cannot be read" in w and str(victim) in w for w in warnings), warnings
    # The damaged step is gone, so the resumed run writes step 2 anew, with its own manifest
    # (orbax skips a step it still holds, which would have sealed the damaged files).
    assert not newest.exists()
    checkpointer.save(2, _state(5.0), {"next_index": 2}, {"m": 1})
    checkpointer.wait()
    assert checkpointing.verify_manifest(newest)
    state, _ = checkpointer.restore_latest(_state(0.0), {"m": 1})
    np.testing.assert_array_equal(state["params"]["w"], np.full((3, 2), 5.0))
    checkpointer.close()


def test_a_step_orbax_skips_keeps_its_manifest(tmp_path):
    checkpointer = _saved(tmp_path, steps=(1,))
    manifest = tmp_path / "checkpoints" / "latest" / "1" / checkpointing.MANIFEST
    before = manifest.read_bytes()
    victim = _array_file(manifest.parent)
    victim.write_bytes(victim.read_bytes()[::-1])
    checkpointer.save(1, _state(1.0), {"next_index": 1}, {"m": 1})  # already held: skipped
    checkpointer.wait()
    assert manifest.read_bytes() == before
    with pytest.raises(IntegrityError, match=re.escape(str(victim))):
        checkpointing.verify_manifest(manifest.parent)
    checkpointer.close()


def test_missing_extra_and_unreadable_manifest_entries_are_named(tmp_path, monkeypatch):
    _saved(tmp_path, steps=(1,)).close()
    step_dir = tmp_path / "checkpoints" / "latest" / "1"
    manifest = step_dir / checkpointing.MANIFEST
    extra = step_dir / "state" / "stray.bin"
    extra.write_bytes(b"x")
    with pytest.raises(IntegrityError, match=f"{re.escape(str(extra))}: not listed"):
        checkpointing.verify_manifest(step_dir)
    extra.unlink()
    victim = _largest_file(step_dir)
    victim.rename(victim.with_name("moved"))
    with pytest.raises(IntegrityError, match=f"{re.escape(str(victim))}: listed in .* but missing"):
        checkpointing.verify_manifest(step_dir)
    victim.with_name("moved").rename(victim)
    assert checkpointing.verify_manifest(step_dir)
    manifest.write_text(manifest.read_text()[:20])
    with pytest.raises(IntegrityError,
                       match=f"integrity manifest {re.escape(str(manifest))} cannot be read"):
        checkpointing.verify_manifest(step_dir)
    # Without a manifest (a run killed between its data and the manifest) there is nothing to
    # check against: the step is restored, with a warning.
    manifest.unlink()
    assert not checkpointing.verify_manifest(step_dir)
    warnings = _warnings(monkeypatch)
    params, meta = checkpointing.load_params(tmp_path)
    np.testing.assert_array_equal(params["w"], np.full((3, 2), 1.0))
    assert meta == {"m": 1}
    assert any("restored without verifying" in w and str(step_dir) in w for w in warnings)


def test_runs_written_before_an_option_existed_still_resume():
    """A stored config (or checkpoint meta) without an option added later compares equal when
    the option is at the value that keeps the old behaviour, and differs otherwise."""
    from experiments.configs import baseline

    current = json.loads(baseline.get_config("tiny").to_json())
    old = json.loads(json.dumps(current))
    for block, options in rundir.ADDED_OPTIONS.items():
        for name in options:
            del old[block][name]
    assert rundir.config_differences(old, current) == []
    current["model"]["loss"] = "pruned"
    current["data"]["speed_factors"] = [0.9, 1.0, 1.1]
    assert rundir.config_differences(old, current) == ["data", "model"]
    assert "loss" not in rundir.identity_block("model", old["model"] | {"loss": "fused"})
