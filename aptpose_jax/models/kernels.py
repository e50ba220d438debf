"""Per-backend kernels and the compute precision: one `Compute` per model, chosen when it is built.

A model's `Compute` says how its matmuls, dropout masks and attention run; `resolve` picks it
from the configuration (`compute_dtype`, `kernels.*`, see defaults.py) and the backend:

* dtype: "float32" is true float32 on every backend (dots at `Precision.HIGHEST`: no TF32 on
  GPUs, no bf16 passes on TPUs); "tf32" lets the backend choose its fast float32 dot (TF32
  tensor cores on NVIDIA GPUs); "bfloat16" runs every dot in bf16 (backward dots too: the
  cotangent is rounded to bf16 before them) with float32 accumulation, parameters, normalisation
  and softmax statistics.
* matmul: "transposed" (XLA:CPU: the custom VJP saves its input transposed, measured faster
  there) or "plain".
* dropout: "hash" (a counter hash of the element index, computed where it is used: nothing of
  the mask's size is stored between the forward and the backward pass) or "threefry"
  (`jax.random.bernoulli`). Both keep an entry with probability 1 - rate and scale by
  1 / (1 - rate).
* attention: "xla", "pallas" or "cudnn" (`models/attention.py`).
* tta_two_passes: flip TTA as two forward passes over B (XLA:CPU) or one over 2B
  (`steps.tta_forward`).

`APTPOSE_KERNELS=cpu|plain`, when set, overrides `kernels.set` (the start-up summary names it).
Every choice computes the same function (tests/test_kernels.py, tests/test_attention.py).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

F32 = jnp.float32
HIGHEST = jax.lax.Precision.HIGHEST

DTYPES = ("float32", "tf32", "bfloat16")
KERNEL_SETS = ("auto", "cpu", "plain")
DROPOUTS = ("auto", "hash", "threefry")
ATTENTIONS = ("auto", "xla", "pallas", "cudnn")
KERNELS_ENV = "APTPOSE_KERNELS"

# What "auto" means per backend. GPU: measured on one H200 (experiments/README.md, "GPU run").
_AUTO = {
    "cpu": {"dropout": "hash", "attention": "xla"},
    "gpu": {"dropout": "hash", "attention": "xla"},
    "tpu": {"dropout": "threefry", "attention": "xla"},
}


@dataclasses.dataclass(frozen=True)
class Compute:
    """How a model computes (hashable: a static attribute of every layer)."""

    dtype: str = "float32"
    matmul: str = "plain"
    dropout: str = "hash"
    attention: str = "xla"
    tta_two_passes: bool = False

    @property
    def operand_dtype(self):
        """dtype of dot operands (float32 also for "tf32")."""
        return jnp.bfloat16 if self.dtype == "bfloat16" else F32

    @property
    def precision(self):
        """`Precision.HIGHEST` for true float32 dots, else the backend default."""
        return HIGHEST if self.dtype == "float32" else None


def kernel_set_override() -> str | None:
    """`APTPOSE_KERNELS` when set (checked), else None."""
    choice = os.environ.get(KERNELS_ENV) or None
    if choice is not None and choice not in KERNEL_SETS:
        raise ValueError(f"{KERNELS_ENV} must be one of {KERNEL_SETS}, got {choice!r}")
    return choice


def resolve(
    dtype: str = "float32",
    kernel_set: str = "auto",
    dropout: str = "auto",
    attention: str = "auto",
    backend: str | None = None,
) -> Compute:
    """The concrete `Compute` for a configuration on `backend` (default: JAX's default).

    Raises:
      ValueError: an unknown value (the message names the allowed ones).
    """
    for name, value, allowed in (
        ("compute_dtype", dtype, DTYPES),
        ("kernels.set", kernel_set, KERNEL_SETS),
        ("kernels.dropout", dropout, DROPOUTS),
        ("kernels.attention", attention, ATTENTIONS),
    ):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    backend = backend or jax.default_backend()
    auto = _AUTO.get(backend, _AUTO["gpu"])
    kernel_set = kernel_set_override() or kernel_set
    cpu_set = kernel_set == "cpu" or (kernel_set == "auto" and backend == "cpu")
    return Compute(
        dtype=dtype,
        matmul="transposed" if cpu_set else "plain",
        dropout=auto["dropout"] if dropout == "auto" else dropout,
        attention=auto["attention"] if attention == "auto" else attention,
        tta_two_passes=cpu_set,
    )


def _dot(a: jax.Array, b: jax.Array, precision) -> jax.Array:
    return jnp.matmul(a, b, preferred_element_type=F32, precision=precision)


def plain_matmul(x: jax.Array, w: jax.Array, dtype, precision=None) -> jax.Array:
    """`x @ w` over the last axis of x with operands in `dtype`, float32 result (autodiff)."""
    return _dot(x.astype(dtype), w.astype(dtype), precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def cast_matmul(x: jax.Array, w: jax.Array, dtype, precision=None) -> jax.Array:
    """`x @ w` with operands in `dtype`; the backward dots take the cotangent in `dtype` too.

    Autodiff of `plain_matmul` would multiply the float32 cotangent with a bf16 operand, which
    promotes that backward dot to float32 (two of the three GEMMs of a bf16 step). Here every
    dot of a bf16 step is a bf16 GEMM with float32 accumulation, and the saved input is bf16.
    In float32 it is the plain matmul and its exact gradients.
    """
    return plain_matmul(x, w, dtype, precision)


def _cast_fwd(x, w, dtype, precision):
    xc, wc = x.astype(dtype), w.astype(dtype)
    # Zero-size arrays carry the primal dtypes (residuals must be arrays).
    dtypes = (jnp.zeros((0,), x.dtype), jnp.zeros((0,), w.dtype))
    return _dot(xc, wc, precision), (xc, wc, dtypes)


def _cast_bwd(dtype, precision, res, g):
    xc, wc, (x_dtype, w_dtype) = res
    g_c = g.astype(dtype)
    dx = _dot(g_c, wc.T, precision)  # (..., C_in)
    dw = _dot(xc.reshape(-1, xc.shape[-1]).T, g_c.reshape(-1, g.shape[-1]), precision)
    return dx.astype(x_dtype.dtype), dw.astype(w_dtype.dtype)


cast_matmul.defvjp(_cast_fwd, _cast_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def transposed_residual_matmul(x: jax.Array, w: jax.Array, dtype, precision=None) -> jax.Array:
    """`x @ w` over the last axis of x with operands in `dtype`, float32 result (CPU kernel).

    The custom VJP saves `x` already transposed to `(C_in, N)` in the forward pass, so the
    weight gradient is a plain `(C_in, N) @ (N, C_out)` GEMM. Left to itself, XLA:CPU transposes
    an operand inside the backward pass and fuses the whole elementwise chain that produces it
    (LN/BN backward, dropout masks) into that strided transpose, which dominated training steps.
    """
    return plain_matmul(x, w, dtype, precision)


def _transposed_fwd(x, w, dtype, precision):
    xt = x.reshape(-1, x.shape[-1]).astype(dtype).T  # (C_in, N)
    return plain_matmul(x, w, dtype, precision), (xt, w)


def _transposed_bwd(dtype, precision, res, g):
    xt, w = res
    g_c = g.astype(dtype)
    dw = _dot(xt, g_c.reshape(-1, g.shape[-1]), precision)  # (C_in, C_out)
    dx = _dot(g_c, w.astype(dtype).T, precision)  # (..., C_in)
    return dx, dw.astype(w.dtype)


transposed_residual_matmul.defvjp(_transposed_fwd, _transposed_bwd)


def matmul(x: jax.Array, w: jax.Array, compute: Compute) -> jax.Array:
    """`x @ w` over the last axis of x, float32 result, as `compute` says."""
    fn = transposed_residual_matmul if compute.matmul == "transposed" else cast_matmul
    return fn(x, w, compute.operand_dtype, compute.precision)


def mix32(x: jax.Array) -> jax.Array:
    """`lowbias32` integer hash (Wellons): a well-mixed bijection on 32-bit words.

    Takes uint32 or int32 and gives the same bits for both (logical shifts, wrapping products),
    so a kernel whose compiler only handles small signed constants (Triton) can hash in int32.
    This is the one definition of the hash; the attention dropout mask uses it too.
    """
    sixteen, fifteen = jnp.asarray(16, x.dtype), jnp.asarray(15, x.dtype)
    x = x ^ jax.lax.shift_right_logical(x, sixteen)
    x = x * np.uint32(0x7FEB352D).view(x.dtype)
    x = x ^ jax.lax.shift_right_logical(x, fifteen)
    x = x * np.uint32(0x846CA68B).view(x.dtype)
    return x ^ jax.lax.shift_right_logical(x, sixteen)


def counter_bits(seed: jax.Array, index: jax.Array) -> jax.Array:
    """Random uint32 bits of element `index` (uint32) under `seed` (uint32[2]): the one
    definition of the counter hash, used by every hash dropout (attention kernels included)."""
    return mix32(mix32(index ^ seed[0]) + seed[1])


def keep_threshold(rate: float) -> jax.Array:
    """uint32 threshold: `bits >= threshold` keeps an entry with probability 1 - rate."""
    return jnp.uint32(int(rate * 2**32))


def hash_keep_mask(seed: jax.Array, shape: tuple, rate: float) -> jax.Array:
    """Bool mask of `shape` over the flat element index (to 2^-32 in probability)."""
    n = math.prod(shape)
    if n >= 2**32:
        raise ValueError(f"dropout tensor of {n} elements is too large for 32-bit counters")
    idx = jax.lax.iota(jnp.uint32, n).reshape(shape)
    return counter_bits(seed, idx) >= keep_threshold(rate)


def dropout_keep_mask(seed: jax.Array, shape: tuple, rate: float, kind: str) -> jax.Array:
    """Bool mask, True with probability `1 - rate`, from a uint32[2] `seed`: the counter hash
    ("hash") or `jax.random.bernoulli` with the seed as a threefry key ("threefry")."""
    if kind == "hash":
        return hash_keep_mask(seed, shape, rate)
    key = jax.random.wrap_key_data(seed, impl="threefry2x32")
    return jax.random.bernoulli(key, 1.0 - rate, shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def batched_matmul(a: jax.Array, b: jax.Array, dtype, precision=None) -> jax.Array:
    """`a @ b` over the last two axes (same leading axes), operands in `dtype`, float32 result;
    like `cast_matmul`, its backward dots take the cotangent in `dtype` (all-bf16 attention)."""
    return _dot(a.astype(dtype), b.astype(dtype), precision)


def _bmm_fwd(a, b, dtype, precision):
    ac, bc = a.astype(dtype), b.astype(dtype)
    dtypes = (jnp.zeros((0,), a.dtype), jnp.zeros((0,), b.dtype))
    return _dot(ac, bc, precision), (ac, bc, dtypes)


def _bmm_bwd(dtype, precision, res, g):
    ac, bc, (a_dtype, b_dtype) = res
    g_c = g.astype(dtype)
    da = _dot(g_c, jnp.swapaxes(bc, -1, -2), precision)  # (..., M, K)
    db = _dot(jnp.swapaxes(ac, -1, -2), g_c, precision)  # (..., K, N)
    return da.astype(a_dtype.dtype), db.astype(b_dtype.dtype)


batched_matmul.defvjp(_bmm_fwd, _bmm_bwd)
