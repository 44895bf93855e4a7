"""Orbax checkpoints: train state, data-iterator state and run metadata.

Two managers under the run directory:
  checkpoints/latest/<step>  the newest `keep` checkpoints (resume continues from the newest);
  checkpoints/best/<step>    the `keep_best` checkpoints with the lowest validation WER.
Each checkpoint holds `state` (params, optimizer state, step, RNG; orbax StandardSave), `data`
(the grain iterator state, JSON) and `meta` (the model config, JSON, to refuse restoring into an
incompatible model). Orbax writes to a temporary directory and renames it when complete, so a
process killed mid-save leaves the previous checkpoint usable, and `restore_latest` falls
back to an older checkpoint when the newest cannot be read.

Orbax stores no checksums, so a flipped bit in an array chunk that still decodes would be
restored silently. Each step therefore gets an integrity manifest, `<step>/integrity.json`
(`{"algorithm": "sha256", "files": {relative path: hex digest}}` over every other file of the
step), written by process 0 once orbax has finished the step (temporary file, fsync, rename).
Saves stay asynchronous, so the manifest is written when the next save, `wait` or `close` finds
the step finished: only the newest step of a run killed in between has none.
Restoring verifies it first: a digest mismatch or a missing or extra file is an
`IntegrityError` naming the file (and `restore_latest` falls back to the step before); a step
without a manifest (a run killed between the data and its manifest, or written before
manifests existed) is restored with a warning that it was not verified.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging


class IncompatibleCheckpointError(ValueError):
    """A checkpoint written by a run with another model configuration."""


class CorruptCheckpointError(RuntimeError):
    """Checkpoints exist, and none of them can be read."""


class IntegrityError(CorruptCheckpointError):
    """A checkpoint's files differ from its integrity manifest."""


MANIFEST = "integrity.json"
_CHUNK = 1 << 20
# Verdicts of process 0 on a step, broadcast to the others as an integer.
_VERIFIED, _NO_MANIFEST, _DAMAGED = 1, 2, 3


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            sha.update(block)
    return sha.hexdigest()


def _step_files(step_dir: Path) -> dict[str, Path]:
    return {p.relative_to(step_dir).as_posix(): p for p in sorted(step_dir.rglob("*"))
            if p.is_file() and p.name != MANIFEST and not p.name.startswith(f"{MANIFEST}.")}


def write_manifest(step_dir: str | Path) -> Path:
    """Writes `<step_dir>/integrity.json`: the SHA-256 of every file of a finished step."""
    step_dir = Path(step_dir)
    files = {name: _digest(path) for name, path in _step_files(step_dir).items()}
    text = json.dumps({"algorithm": "sha256", "files": files}, indent=1, sort_keys=True)
    target, tmp = step_dir / MANIFEST, step_dir / f"{MANIFEST}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    directory = os.open(step_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return target


def verify_manifest(step_dir: str | Path) -> bool:
    """True when every file of the step matches its manifest; False when the step has no
    manifest (nothing to verify against).

    Raises:
      IntegrityError: a digest differs, a listed file is missing, a file is not listed, or the
        manifest itself cannot be read; the message names the file.
    """
    step_dir = Path(step_dir)
    path = step_dir / MANIFEST
    if not path.exists():
        return False
    try:
        manifest = json.loads(path.read_text())
        expected = manifest["files"]
        if manifest.get("algorithm") != "sha256" or not isinstance(expected, dict):
            raise ValueError(f"unknown algorithm {manifest.get('algorithm')!r} or no file list")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise IntegrityError(f"integrity manifest {path} cannot be read: {e}") from e
    present = _step_files(step_dir)
    if missing := sorted(set(expected) - set(present)):
        raise IntegrityError(f"{step_dir / missing[0]}: listed in {path} but missing")
    if extra := sorted(set(present) - set(expected)):
        raise IntegrityError(f"{step_dir / extra[0]}: not listed in {path}")
    if changed := [n for n, digest in sorted(expected.items())
                   if _digest(present[n]) != digest]:
        raise IntegrityError(f"{step_dir / changed[0]}: SHA-256 differs from {path} (the file "
                             "changed after the checkpoint was written)")
    return True


def _verified(step_dir: Path) -> None:
    """Verifies a step before it is restored; with several processes, process 0 reads the files
    and every process gets its verdict (so that all restore the same step).

    Raises:
      IntegrityError: the step's files differ from its manifest.
    """
    verdict, message = _VERIFIED, ""
    if jax.process_index() == 0:
        try:
            verdict = _VERIFIED if verify_manifest(step_dir) else _NO_MANIFEST
        except IntegrityError as e:
            verdict, message = _DAMAGED, str(e)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        verdict = int(multihost_utils.broadcast_one_to_all(np.int32(verdict)))
    if verdict == _DAMAGED:
        raise IntegrityError(message or f"{step_dir}: files differ from its {MANIFEST} "
                             "(verified on process 0)")
    if verdict == _NO_MANIFEST:
        logging.warning("checkpoint %s has no %s: restored without verifying its files",
                        step_dir, MANIFEST)


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
        self._unsealed: dict[int, int] = {}  # id(manager) -> step saved, manifest not written

    def latest_step(self) -> int | None:
        return self._latest.latest_step()

    def save(self, step: int, state: Any, data_state: dict, meta: dict,
             wer: float | None = None) -> None:
        """Saves to `latest`, and to `best` when `wer` is given. Saves are asynchronous: the
        call returns once the arrays are copied, and a step's manifest is written when the
        next save, `wait` or `close` finds the step finished."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  data=ocp.args.JsonSave(data_state),
                                  meta=ocp.args.JsonSave(meta))
        self._start(self._latest, step, args)
        if wer is not None:
            # Two managers saving the same step at once would share orbax's multi-host
            # barrier names: `latest` finishes first (only at evaluation steps).
            self._finish(self._latest)
            self._start(self._best, step, args, metrics={"wer": wer})

    def _start(self, manager: ocp.CheckpointManager, step: int, args: Any, **kw: Any) -> None:
        # Orbax waits for the manager's previous save before starting one: seal that step
        # first. Orbax skips a step it already holds; such a step keeps the manifest it had.
        self._finish(manager)
        if manager.save(step, args=args, **kw):
            self._unsealed[id(manager)] = step

    def _finish(self, manager: ocp.CheckpointManager) -> None:
        """Waits for the manager's save in flight, then writes that step's manifest."""
        manager.wait_until_finished()
        step = self._unsealed.pop(id(manager), None)
        step_dir = Path(manager.directory) / str(step)
        # `best` drops a step at once when it is not among the best: nothing to seal.
        if step is not None and jax.process_index() == 0 and step_dir.is_dir():
            write_manifest(step_dir)

    def restore_latest(self, abstract_state: Any, meta: dict) -> tuple[Any, dict] | None:
        """(state, data_state) of the newest checkpoint that can be read, or None when there is
        none. A checkpoint that cannot be read (truncated or missing files, undecodable
        metadata, files that differ from its integrity manifest) is skipped with a warning, and
        the one before it is tried; one whose files differ from its manifest is deleted, so that
        the resumed run writes that step anew.

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
                _verified(Path(self._latest.directory) / str(step))
                saved_meta = self._latest.restore(step, args=ocp.args.Composite(
                    meta=ocp.args.JsonRestore()))["meta"]
                restored = self._latest.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore())) \
                    if saved_meta == meta else None
            except Exception as e:  # orbax/tensorstore read errors have no common type
                failures.append(f"step {step}: {type(e).__name__}: {e}"[:500])
                logging.warning("checkpoint at step %d cannot be read (%s); trying the one "
                                "before", step, failures[-1])
                if isinstance(e, IntegrityError):
                    self._latest.delete(step)
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
        """Waits for the saves in flight and writes their manifests."""
        self._finish(self._latest)
        self._finish(self._best)

    def close(self) -> None:
        self.wait()
        self._latest.close()
        self._best.close()


def load_params(workdir: str | Path) -> tuple[Any, dict]:
    """(params, meta) of the newest checkpoint of the run in `workdir` (for warm starts and
    evaluation; arrays come back on the default device, as saved), verified against its
    integrity manifest.

    Raises:
      IntegrityError: the checkpoint's files differ from its manifest (named in the message).
    """
    root = Path(workdir).absolute() / "checkpoints" / "latest"
    if not root.is_dir():
        raise FileNotFoundError(f"no checkpoints in {workdir} (looked for {root})")
    manager = ocp.CheckpointManager(root, item_names=("state", "data", "meta"))
    try:
        step = manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"no finished checkpoint in {root}")
        _verified(root / str(step))
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    finally:
        manager.close()
    return restored["state"]["params"], restored["meta"]
