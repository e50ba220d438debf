"""Data-parallel device mesh: parameters replicated, batches sharded along a `data` axis.

One mechanism serves one CPU, one GPU, several GPUs and several hosts: `jax.jit` with
`NamedSharding`s on a 1-D mesh over every device (no pmap). When the process was launched
as one of several (JAX_COORDINATOR_ADDRESS or a cluster environment that JAX detects),
`maybe_initialize_distributed()` calls `jax.distributed.initialize()` first.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from aptpose_jax.errors import ConfigError

DATA_AXIS = "data"


def maybe_initialize_distributed() -> None:
    """Initialises multi-process JAX when the environment asks for it (idempotent)."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS") and jax.process_count() == 1:
        jax.distributed.initialize()
        logging.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())


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


def put_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Places a host batch on the mesh, split along the leading axis.

    Each process passes its own share of the global batch; with one process that is the
    whole batch.
    """
    sharding = batch_sharded(mesh)
    if jax.process_count() == 1:
        return {k: jax.device_put(v, sharding) for k, v in batch.items()}
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def put_replicated(tree, mesh: Mesh):
    """Places a pytree (parameters, optimiser state) on every device."""
    return jax.device_put(tree, replicated(mesh))
