"""Measurement helpers shared by the benchmarks (`bench_train.py`, `scaling.py`).

One place for what every figure needs beside its timing: the run's provenance (commit, load
average, CPU model), XLA's own accounting of a compiled step (FLOPs, bytes, memory,
collectives), the backend's peak memory, and the two reference measurements a step is compared
with in the same run: the matmul ceiling and the gradient all-reduce.
"""

from __future__ import annotations

import os
import pathlib
import platform
import re
import statistics
import subprocess
import time

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from aptpose_jax import sharding

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Training windows of one Human3.6M epoch, flips included (F=243, tds 2): the epoch projection.
H36M_EPOCH_WINDOWS = 2_928_800


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def git_commit() -> str:
    """Short commit of the repository, with "+dirty" when tracked files differ from it.

    `APTPOSE_COMMIT` in the environment wins (a copy of the tree without .git, e.g. on a
    device machine, says which commit it is).
    """
    if os.environ.get("APTPOSE_COMMIT"):
        return os.environ["APTPOSE_COMMIT"]

    def git(*argv: str) -> str:
        out = subprocess.run(["git", *argv], cwd=REPO_ROOT, capture_output=True, text=True)
        return out.stdout.strip()

    try:
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return (git("rev-parse", "--short", "HEAD") or "unknown") + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def cpu_model() -> str:
    """The host CPU's model name (/proc/cpuinfo), or what `platform` knows."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def default_matmul_n() -> int:
    """Side of the reference matmul: 2048 on CPU (seconds), 8192 on accelerators."""
    return 2048 if jax.default_backend() == "cpu" else 8192


def xla_cost(compiled, n_devices: int) -> tuple[float | None, float | None]:
    """(FLOPs, bytes accessed) of one call of `compiled`, summed over `n_devices`.

    XLA's cost analysis of an SPMD program reports one device's share, hence the factor. jax
    returns a dict (0.4.3x and later) or a list of one dict per program (older versions); some
    backends return None or omit a key.
    """
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis:
        return None, None
    flops, nbytes = analysis.get("flops"), analysis.get("bytes accessed")
    return (None if flops is None else float(flops) * n_devices,
            None if nbytes is None else float(nbytes) * n_devices)  # fmt: skip


def xla_memory_bytes(compiled) -> int | None:
    """Per-device bytes XLA assigned to a step: arguments + outputs + temporaries - aliased."""
    try:
        m = compiled.memory_analysis()
    except (NotImplementedError, AttributeError, RuntimeError):
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)  # fmt: skip


_OPERAND = re.compile(r"\b(bf16|f16|f32|f64|s8|f8e4m3fn|f8e5m2)\[")


def gemm_operand_dtypes(compiled) -> dict | None:
    """Matrix products in the optimised HLO of a step, counted by operand dtypes.

    {"bf16xbf16": n, "f32xf32": m, ...}: XLA `dot` instructions (CPU, or dots left to XLA's
    own emitters) and cuBLAS/cuBLASLt GEMM custom calls (GPU). A bf16 step should show no f32
    pair: an "f32xf32" GEMM on a GPU is a TF32 or fp32 kernel.
    """
    try:
        text = compiled.as_text()
    except Exception:  # noqa: BLE001 - not every backend gives its HLO text
        return None
    counts: dict[str, int] = {}
    for line in text.splitlines():
        is_dot = " dot(" in line
        is_gemm = "custom-call(" in line and ("cublas" in line or "gemm" in line.lower())
        if not (is_dot or is_gemm):
            continue
        args = line.split("dot(" if is_dot else "custom-call(", 1)[1]
        dtypes = _OPERAND.findall(args)[:2]
        if len(dtypes) == 2:
            key = "x".join(dtypes)
            counts[key] = counts.get(key, 0) + 1
    return counts


def collectives(compiled) -> dict | None:
    """Cross-device collectives in the optimised HLO of a step: {"all-reduce": count, ...}."""
    try:
        text = compiled.as_text()
    except Exception:  # noqa: BLE001 - some backends cannot print their executable
        return None
    ops = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
    return {op: len(re.findall(rf"= [^=]*\b{op}(?:-start)?\(", text)) for op in ops}


def peak_device_memory(devices) -> int | None:
    """Largest `peak_bytes_in_use` over `devices`, or None where the backend has no stats."""
    peaks = []
    for d in devices:
        stats = d.memory_stats() if hasattr(d, "memory_stats") else None
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(int(stats["peak_bytes_in_use"]))
    return max(peaks) if peaks else None


def matmul_flops(mesh: Mesh, dtype: str, n: int, reps: int = 5) -> float:
    """FLOP/s of an (n, n) @ (n, n) matmul on every device of `mesh`, best of `reps` calls.

    Each device multiplies its own pair (a leading device axis, sharded), so the figure is the
    ceiling of a data-parallel step on the same devices. Inputs in `dtype`, float32
    accumulation, as the model's layers compute (XLA:CPU then runs bf16 on AMX/oneDNN where the
    CPU has it; a bf16-output matmul has no such path). Best rather than median: it is the
    ceiling a step is compared with. dtype "float32" is true float32 (`Precision.HIGHEST`, as
    the model runs it), "tf32" float32 operands at the backend's default precision.
    """
    k = mesh.devices.size
    shard = sharding.batch_sharded(mesh)
    precision = jax.lax.Precision.HIGHEST if dtype == "float32" else None
    dtype = "float32" if dtype == "tf32" else dtype
    a = jax.device_put(jax.random.uniform(jax.random.key(0), (k, n, n), dtype), shard)  # (D,n,n)
    b = jax.device_put(jax.random.uniform(jax.random.key(1), (k, n, n), dtype), shard)
    mm = jax.jit(
        lambda x, y: jnp.einsum(
            "dij,djk->dik", x, y, preferred_element_type=jnp.float32, precision=precision
        )
    )
    jax.block_until_ready(mm(a, b))
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(mm(a, b))
        best = min(best, time.perf_counter() - t0)
    return 2.0 * k * n**3 / best


def allreduce_ms(mesh: Mesh, n_values: int, reps: int = 3) -> float:
    """Median time of an all-reduce (sum over the devices of `mesh`) of `n_values` float32."""
    k = mesh.devices.size
    x = jax.device_put(jnp.ones((k, n_values), jnp.float32), sharding.batch_sharded(mesh))
    reduce = jax.jit(lambda v: v.sum(axis=0), out_shardings=sharding.replicated(mesh))  # (P,)
    jax.block_until_ready(reduce(x))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(reduce(x))
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)
