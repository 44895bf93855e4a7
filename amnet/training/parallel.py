"""Data parallelism over a `('data',)` device mesh, one or several processes: the mesh, global
batches from process-local rows and back, replicated values, and agreement between processes
(a flag any process raised, a barrier, sums over processes)."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DEVICE_KEYS = ("audio", "audio_lengths", "tokens", "token_lengths", "weights")


def make_mesh(num_devices: int = -1) -> Mesh:
    """A 1-D `('data',)` mesh over the first `num_devices` devices (-1: all, every process)."""
    devices = jax.devices()
    count = len(devices) if num_devices == -1 else num_devices
    if not 0 < count <= len(devices):
        raise ValueError(f"asked for {num_devices} devices, {len(devices)} exist")
    # Auto axis: outside shard_map (decoding, evaluation) XLA's partitioner shards the batch.
    return jax.make_mesh((count,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices[:count])


def global_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Process-local rows -> global arrays sharded along `data` (device fields only)."""
    sharding = NamedSharding(mesh, P("data"))
    return {k: jax.make_array_from_process_local_data(sharding, batch[k]) for k in DEVICE_KEYS}


def local_rows(array: jax.Array) -> np.ndarray:
    """This process's rows of a `data`-sharded global array, in batch order."""
    shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
    return np.concatenate([np.asarray(s.data) for s in shards])


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding of a value held whole by every device of `mesh`."""
    return NamedSharding(mesh, P())


def replicated(mesh: Mesh, value):
    """`value` (a pytree) placed whole on every device of `mesh`."""
    return jax.device_put(value, replicated_sharding(mesh))

def agreed(flag: bool) -> bool:
    """True when `flag` is set in any process (all processes must stop at the same step)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))


def sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def pooled_sums(values: np.ndarray) -> np.ndarray:
    """`values` summed over all processes."""
    if jax.process_count() == 1:
        return values
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(values)).sum(axis=0)
