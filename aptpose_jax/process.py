"""Process set-up, before JAX starts a backend: several processes, deterministic GPU ops, and the
persistent compilation cache. `main.py` calls `setup(config)` first thing.

A process is one of several when launched so (README "Several processes"):

* `JAX_COORDINATOR_ADDRESS=host:port JAX_NUM_PROCESSES=n JAX_PROCESS_ID=i` (any machine);
* `APTPOSE_DISTRIBUTED=1`, or a SLURM job step with more than one task: JAX detects the
  cluster (SLURM, Cloud TPU pods, Open MPI, Kubernetes) and needs no addresses.

The compilation cache (`compile_cache` in the config) keeps XLA's compiled steps on disk, so a
second run or a resume with the same shapes compiles nothing: "auto" is
`$JAX_COMPILATION_CACHE_DIR` when set, else `~/.cache/aptpose_jax/xla` (`$XDG_CACHE_HOME`
honoured); "off" disables it; anything else is the directory to use.
"""

from __future__ import annotations

import os
import pathlib

import jax
from absl import logging

# What `deterministic=True` adds to XLA_FLAGS: deterministic GPU reductions and scatters
# (atomics-free), and no autotuned kernels that are not run-to-run deterministic.
DETERMINISTIC_XLA_FLAGS = (
    "--xla_gpu_deterministic_ops=true",
    "--xla_gpu_exclude_nondeterministic_ops=true",
)


def _distributed_requested() -> bool:
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("APTPOSE_DISTRIBUTED") == "1":
        return True
    return int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1


def maybe_initialize_distributed() -> None:
    """Initialises multi-process JAX when the environment asks for it (idempotent).

    Raises:
      ValueError: JAX_NUM_PROCESSES / JAX_PROCESS_ID are not integers.
    """
    if not _distributed_requested() or jax.distributed.is_initialized():
        return
    kwargs = {}
    for name, arg in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
        value = os.environ.get(name)
        if value is not None:
            try:
                kwargs[arg] = int(value)
            except ValueError:
                raise ValueError(f"{name}={value!r} is not an integer") from None
    jax.distributed.initialize(**kwargs)
    logging.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())


def request_deterministic_gpu_ops() -> None:
    """Adds `DETERMINISTIC_XLA_FLAGS` to XLA_FLAGS (idempotent).

    Must run before JAX starts a backend (XLA reads the flags then): `setup` runs first in
    `main.py`. CPU results are run-to-run deterministic already; on GPUs these flags make
    reductions and scatter-adds deterministic (bitwise resume), at a throughput cost (README).
    """
    flags = os.environ.get("XLA_FLAGS", "")
    missing = [f for f in DETERMINISTIC_XLA_FLAGS if f not in flags]
    if missing:
        os.environ["XLA_FLAGS"] = " ".join([flags, *missing]).strip()


def compile_cache_dir(setting: str) -> pathlib.Path | None:
    """The persistent compilation cache directory for the config's `compile_cache`, or None."""
    if setting == "off":
        return None
    if setting != "auto":
        return pathlib.Path(setting).expanduser()
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return pathlib.Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    cache_home = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(cache_home) / "aptpose_jax" / "xla"


def enable_compilation_cache(setting: str) -> pathlib.Path | None:
    """Points JAX's persistent compilation cache at `compile_cache_dir(setting)`."""
    path = compile_cache_dir(setting)
    if path is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    return path


def setup(config) -> None:
    """Everything that must happen before the first device use, as `config` asks."""
    if config.deterministic:
        request_deterministic_gpu_ops()
    enable_compilation_cache(config.compile_cache)
    maybe_initialize_distributed()
