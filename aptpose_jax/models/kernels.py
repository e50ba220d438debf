"""Per-backend kernels: what runs on XLA:CPU and what runs on GPU and TPU (`kernel_choice`).

XLA:CPU gets the formulations measured faster there (experiments/README.md): the custom-VJP
matmul, the counter-hash dropout mask and flip TTA as two passes over B (`steps.tta_forward`).
GPU and TPU get the plain ones (`jnp.matmul` with autodiff, `jax.random.bernoulli`, TTA as one
pass over 2B), as nothing was measured there. `APTPOSE_KERNELS=cpu|plain` overrides the choice
(read when a step is traced). Both give the same values: the same matmul, the same keep
probability and scaling (tests/test_kernels.py, tests/test_pipeline.py).
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

F32 = jnp.float32

KERNELS = ("auto", "cpu", "plain")


def kernel_choice() -> str:
    """`APTPOSE_KERNELS` ("auto": "cpu" on the CPU backend, "plain" on GPU and TPU)."""
    choice = os.environ.get("APTPOSE_KERNELS", "auto")
    if choice not in KERNELS:
        raise ValueError(f"APTPOSE_KERNELS must be one of {KERNELS}, got {choice!r}")
    if choice == "auto":
        return "cpu" if jax.default_backend() == "cpu" else "plain"
    return choice


def plain_matmul(x: jax.Array, w: jax.Array, dtype) -> jax.Array:
    """`x @ w` over the last axis of x with operands in `dtype`, float32 result (autodiff)."""
    return jnp.matmul(x.astype(dtype), w.astype(dtype), preferred_element_type=F32)


def matmul(x: jax.Array, w: jax.Array, dtype) -> jax.Array:
    """`x @ w` with operands in `dtype`, float32 result, by the backend's kernel choice."""
    if kernel_choice() == "cpu":
        return transposed_residual_matmul(x, w, dtype)
    return plain_matmul(x, w, dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def transposed_residual_matmul(x: jax.Array, w: jax.Array, dtype) -> jax.Array:
    """`x @ w` over the last axis of x with operands in `dtype`, float32 result (CPU kernel).

    The custom VJP saves `x` already transposed to `(C_in, N)` in the forward pass, so the
    weight gradient is a plain `(C_in, N) @ (N, C_out)` GEMM. Left to itself, XLA:CPU transposes
    an operand inside the backward pass and fuses the whole elementwise chain that produces it
    (LN/BN backward, dropout masks) into that strided transpose, which dominated training steps.
    """
    return plain_matmul(x, w, dtype)


def _matmul_fwd(x, w, dtype):
    xt = x.reshape(-1, x.shape[-1]).astype(dtype).T  # (C_in, N)
    return plain_matmul(x, w, dtype), (xt, w)


def _matmul_bwd(dtype, res, g):
    xt, w = res
    g_c = g.astype(dtype)
    dw = jnp.matmul(xt, g_c.reshape(-1, g.shape[-1]), preferred_element_type=F32)  # (C_in, C_out)
    dx = jnp.matmul(g_c, w.astype(dtype).T, preferred_element_type=F32)  # (..., C_in)
    return dx, dw.astype(w.dtype)


transposed_residual_matmul.defvjp(_matmul_fwd, _matmul_bwd)


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


def hash_uniform_bits(key: jax.Array, shape: tuple) -> jax.Array:
    """Counter-based uint32 random bits: hash(hash(index ^ s0) + s1), (s0, s1) drawn from `key`.

    About 40x faster than threefry on CPU (which made dropout ~1/4 of a training step) and
    statistically ample for dropout masks; deterministic given the key.
    """
    n = math.prod(shape)
    if n >= 2**32:
        raise ValueError(f"dropout tensor of {n} elements is too large for 32-bit counters")
    seed = jax.random.bits(key, (2,), jnp.uint32)
    idx = jax.lax.iota(jnp.uint32, n).reshape(shape)
    return mix32(mix32(idx ^ seed[0]) + seed[1])


def dropout_keep_mask(key: jax.Array, shape: tuple, rate: float, kernels: str) -> jax.Array:
    """Bool mask, True with probability `1 - rate`: counter hash ("cpu", to 2^-32) or
    `jax.random.bernoulli` ("plain", to float32 resolution)."""
    if kernels == "cpu":
        return hash_uniform_bits(key, shape) >= jnp.uint32(int(rate * 2**32))
    return jax.random.bernoulli(key, 1.0 - rate, shape)
