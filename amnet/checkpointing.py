"""Orbax checkpoints: train state, data-iterator state and run metadata.

Two managers under the run directory:
  checkpoints/latest/<step>  the newest `keep` checkpoints (resume continues from the newest);
  checkpoints/best/<step>    the `keep_best` checkpoints with the lowest validation WER.
Each checkpoint holds `state` (params, optimizer state, step, RNG; orbax StandardSave), `data`
(the grain iterator state, JSON) and `meta` (the model config, JSON, to refuse restoring into an
incompatible model). Orbax writes to a temporary directory and renames it when complete, so a
process killed mid-save leaves the previous checkpoint usable, and `restore_latest` falls
back to an older checkpoint when the newest cannot be read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging


class IncompatibleCheckpointError(ValueError):
    """A checkpoint written by a run with another model configuration."""


class CorruptCheckpointError(RuntimeError):
    """Checkpoints exist, and none of them can be read."""


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
        """(state, data_state) of the newest checkpoint that can be read, or None when there is
        none. A checkpoint that cannot be read (truncated or missing files, undecodable
        metadata) is skipped with a warning, and the one before it is tried.

        Raises:
          IncompatibleCheckpointError: the checkpoint's `meta` differs from `meta`.
          CorruptCheckpointError: checkpoints exist but none can be read.
        """
        steps = sorted(self._latest.all_steps(), reverse=True)
        if not steps:
            return None
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        failures = []
        for step in steps:
            try:
                saved_meta = self._latest.restore(step, args=ocp.args.Composite(
                    meta=ocp.args.JsonRestore()))["meta"]
                restored = self._latest.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore())) \
                    if saved_meta == meta else None
            except Exception as e:  # orbax/tensorstore read errors have no common type
                failures.append(f"step {step}: {type(e).__name__}: {e}"[:300])
                logging.warning("checkpoint at step %d cannot be read (%s); trying the one "
                                "before", step, failures[-1])
                continue
            if restored is None:
                diff = sorted(k for k in set(saved_meta) | set(meta)
                              if saved_meta.get(k) != meta.get(k))
                raise IncompatibleCheckpointError(
                    f"checkpoint at step {step} in {self._latest.directory} was written with "
                    f"another configuration; differing keys: {diff}")
            if step != steps[0]:
                logging.warning("resuming from step %d: newer checkpoints were unreadable", step)
            return restored["state"], restored["data"]
        raise CorruptCheckpointError(f"no readable checkpoint in {self._latest.directory}: "
                                     + "; ".join(failures))

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
