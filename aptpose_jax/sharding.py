"""Data-parallel device mesh: parameters replicated, batches sharded along a `data` axis.

One mechanism serves one CPU, one GPU, several GPUs and several hosts: `jax.jit` with
`NamedSharding`s on a 1-D mesh over every device of every process (no pmap). Starting several
processes is `process.py`'s job.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from aptpose_jax.errors import ConfigError

DATA_AXIS = "data"


def make_mesh() -> Mesh:
    """A 1-D mesh named `data` over all devices of all processes."""
    devices = np.asarray(jax.devices())
    return Mesh(devices, (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device (parameters, optimiser state)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) axis across the `data` axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "optim.batch_size") -> None:
    """Raises a clear error when the global batch cannot be split evenly over the devices."""
    n = mesh.devices.size
    if batch_size % n:
        raise ConfigError(
            f"{what}={batch_size} is not divisible by the {n} devices of the mesh; "
            f"choose a multiple of {n} (e.g. --config.{what}={max(n, batch_size // n * n)})"
        )


def describe(mesh: Mesh, batch_size: int) -> str:
    """The start-up line: processes, devices per process, device kind, global / per-device
    batch."""
    n = mesh.devices.size
    return (
        f"{jax.process_count()} process(es) x {jax.local_device_count()} device(s) "
        f"({jax.devices()[0].device_kind}, backend {jax.default_backend()}); global batch "
        f"{batch_size}, {batch_size // n} per device"
    )


def put_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Places a host batch on the mesh, split along the leading axis (one process only).

    Several processes feed through `pipeline.shard_rows`, where each process builds only its
    own devices' rows of the global batch.
    """
    if jax.process_count() != 1:
        raise RuntimeError("put_batch is for one process; use pipeline.shard_rows")
    sharding = batch_sharded(mesh)
    return {k: jax.device_put(v, sharding) for k, v in batch.items()}


def put_replicated(tree, mesh: Mesh):
    """Places a pytree (parameters, optimiser state) on every device."""
    if jax.process_count() == 1:
        return jax.device_put(tree, replicated(mesh))
    # Every process holds the same values (same seed / checkpoint): build the global arrays
    # from each process's copy.
    rep = replicated(mesh)

    def put(x):
        if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(rep, x.ndim):
            return x  # already global and replicated (e.g. restored by orbax)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, rep, lambda i: host[i])

    return jax.tree.map(put, tree)
