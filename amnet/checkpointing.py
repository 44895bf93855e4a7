"""Orbax checkpoints: train state, data-iterator state and run metadata.

Two managers under the run directory:
  checkpoints/latest/<step>  the newest `keep` checkpoints (resume continues from the newest);
  checkpoints/best/<step>    the `keep_best` checkpoints with the lowest validation WER.
Each checkpoint holds `state` (params, optimizer state, step, RNG; orbax StandardSave), `data`
(the grain iterator state, JSON) and `meta` (the model config, JSON, to refuse restoring into an
incompatible model). Orbax writes to a temporary directory and renames it when complete, so a
process killed mid-save leaves the previous checkpoint usable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class IncompatibleCheckpointError(ValueError):
    """A checkpoint written by a run with another model configuration."""


class Checkpointer:
    def __init__(self, workdir: str | Path, *, keep: int = 3, keep_best: int = 1):
        root = Path(workdir).absolute() / "checkpoints"
        items = ("state", "data", "meta")
        self._latest = ocp.CheckpointManager(
            root / "latest", item_names=items,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
        self._best = ocp.CheckpointManager(
            root / "best", item_names=items,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep_best, best_fn=lambda m: m["wer"], best_mode="min",
                keep_checkpoints_without_metrics=False, create=True))

    def latest_step(self) -> int | None:
        return self._latest.latest_step()

    def save(self, step: int, state: Any, data_state: dict, meta: dict,
             wer: float | None = None) -> None:
        """Saves to `latest`, and to `best` when `wer` is given."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  data=ocp.args.JsonSave(data_state),
                                  meta=ocp.args.JsonSave(meta))
        self._latest.save(step, args=args)
        if wer is not None:
            # Two managers saving the same step at once would share orbax's multi-host
            # barrier names: let the first finish.
            self._latest.wait_until_finished()
            self._best.save(step, args=args, metrics={"wer": wer})
            self._best.wait_until_finished()

    def restore_latest(self, abstract_state: Any, meta: dict) -> tuple[Any, dict] | None:
        """(state, data_state) of the newest checkpoint, or None when there is none.

        Raises:
          IncompatibleCheckpointError: the checkpoint's `meta` differs from `meta`.
        """
        step = self._latest.latest_step()
        if step is None:
            return None
        saved_meta = self._latest.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]
        if saved_meta != meta:
            diff = sorted(k for k in set(saved_meta) | set(meta)
                          if saved_meta.get(k) != meta.get(k))
            raise IncompatibleCheckpointError(
                f"checkpoint at step {step} in {self._latest.directory} was written with another "
                f"configuration; differing keys: {diff}")
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        restored = self._latest.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
        return restored["state"], restored["data"]

    def wait(self) -> None:
        self._latest.wait_until_finished()
        self._best.wait_until_finished()

    def close(self) -> None:
        self._latest.close()
        self._best.close()


def load_params(workdir: str | Path) -> tuple[Any, dict]:
    """(params, meta) of the newest checkpoint of the run in `workdir` (for warm starts and
    evaluation; arrays come back on the default device, as saved)."""
    root = Path(workdir).absolute() / "checkpoints" / "latest"
    if not root.is_dir():
        raise FileNotFoundError(f"no checkpoints in {workdir} (looked for {root})")
    manager = ocp.CheckpointManager(root, item_names=("state", "data", "meta"))
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"no finished checkpoint in {root}")
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    manager.close()
    return restored["state"]["params"], restored["meta"]
