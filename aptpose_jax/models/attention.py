"""Scaled dot-product attention with the reference's probability dropout, per implementation.

`attention(q, k, v, ...)` computes `dropout(softmax(q k^T)) @ v` over `(B, H, T, D)` inputs whose
q is already scaled by 1/sqrt(D) (the model does it), with dropout on the probabilities at rate
r and kept entries scaled by 1/(1 - r), as the official PyTorch code does. Implementations:

* "xla": plain jnp (einsum, float32 softmax, the mask from iota); the reference formulation and
  the CPU path. It materialises `(B, H, T, T)` scores, probabilities and mask.
* "pallas": fused Pallas kernels (forward, dQ, dK/dV under `jax.custom_vjp`) that never write a
  `(B, H, T, T)` array: each program holds a block of rows against all T <= 256 (padded) columns
  of one (b, h), does the exact row softmax and draws the dropout mask from the counter hash
  inside the kernel (recomputed in the backward pass, never stored). Triton on NVIDIA GPUs,
  interpreted on CPU (tests).
* "cudnn": `jax.nn.dot_product_attention(implementation="cudnn")`, evaluation only (no dropout,
  bfloat16/float16 inputs).

The dropout keep mask is one function of the seed and the global flat index
`((b + batch_offset) * H + h) * T * T + i * T + j` (`keep_from_index`), so every implementation,
and a batch split over devices, draws the same mask.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.sharding import PartitionSpec

from aptpose_jax.models.kernels import batched_matmul, mix32
from aptpose_jax.sharding import DATA_AXIS

F32 = jnp.float32
IMPLS = ("xla", "pallas", "cudnn")
_MASKED = -1e30  # finite "minus infinity" for padded keys: exp() gives 0, never NaN
_INT32_MIN = np.int32(-(2**31))


def available_impls(backend: str) -> tuple[str, ...]:
    """The implementations that run on `backend` ("cpu", "gpu"/"cuda", "tpu", ...).

    "pallas" runs interpreted on CPU (correct but slow: for tests), as Triton on NVIDIA GPUs.
    """
    if backend in ("gpu", "cuda"):
        return IMPLS
    if backend == "cpu":
        return ("xla", "pallas")
    return ("xla",)


def keep_from_index(index: jax.Array, seed: jax.Array, rate: float) -> jax.Array:
    """The dropout keep mask of the elements with int32 flat indices `index` (wrapping).

    bits = mix32(mix32(index ^ s0) + s1) as in `kernels.counter_bits`; keep when
    bits >= uint32(int(rate * 2**32)), compared in int32 with the sign bit flipped.

    Args:
      index: int32 array of global flat element indices (mod 2**32).
      seed: int32[2] (the bits of the uint32 seed words), or two int32 scalars as a tuple.
      rate: the dropout rate in [0, 1).
    """
    bits = mix32(mix32(index ^ seed[0]) + seed[1])
    threshold = np.int32(int(rate * 2**32) - 2**31)
    return (bits ^ _INT32_MIN) >= threshold


def _flat_index(b, h, i, j, n_heads: int, t: int) -> jax.Array:
    """int32 `((b * H + h) * T + i) * T + j`, wrapping mod 2**32 like the uint32 counter."""
    return (b * n_heads + h) * (t * t) + i * t + j


def _seed_words(seed: jax.Array) -> jax.Array:
    """uint32[2] (or int32[2]) seed -> int32[2] with the same bits."""
    seed = jnp.asarray(seed)
    if seed.shape != (2,):
        raise ValueError(f"seed must have shape (2,) (uint32 words), got {seed.shape}")
    if seed.dtype == jnp.int32:
        return seed
    return lax.bitcast_convert_type(seed.astype(jnp.uint32), jnp.int32)


def keep_mask(seed: jax.Array, shape: tuple, rate: float, batch_offset=0) -> jax.Array:
    """The (B, H, T, T) bool dropout keep mask of the attention probabilities.

    Args:
      seed: uint32[2] (or int32[2] with the same bits).
      shape: (B, H, T, T).
      rate: dropout rate in [0, 1).
      batch_offset: int32 scalar added to the batch index (a shard's place in the batch).
    """
    b, n_heads, t, _ = shape
    bi, hi, ii, ji = (lax.broadcasted_iota(jnp.int32, shape, d) for d in range(4))
    index = _flat_index(bi + batch_offset, hi, ii, ji, n_heads, t)  # (B, H, T, T)
    return keep_from_index(index, _seed_words(seed), rate)


def xla_attention(q, k, v, seed, rate: float, batch_offset, precision) -> jax.Array:
    """The reference formulation in plain jnp; `seed` int32[2] (ignored when rate is 0)."""
    b, n_heads, t, _ = q.shape
    # batched_matmul: the backward dots take bf16 cotangents too (no float32 GEMM in bf16).
    s = batched_matmul(q, jnp.swapaxes(k, -1, -2), q.dtype, precision)  # (B, H, T, T)
    p = jax.nn.softmax(s, axis=-1)  # (B, H, T, T) float32
    if rate > 0.0:
        keep = keep_mask(seed, (b, n_heads, t, t), rate, batch_offset)  # (B, H, T, T)
        p = jnp.where(keep, p * np.float32(1.0 / (1.0 - rate)), np.float32(0.0))
    return batched_matmul(p, v, v.dtype, precision)  # (B, H, T, D)


class _Cfg(NamedTuple):
    """Static configuration of the Pallas kernels (hashable: a custom_vjp nondiff argument)."""

    b: int  # batch (local)
    h: int  # heads
    t: int  # true sequence length
    tp: int  # padded sequence length (power of 2, >= 16: Triton block shapes)
    block: int  # rows (queries, or keys in dK/dV) per program
    rate: float
    scale: float  # 1 / (1 - rate)
    precision: Any
    interpret: bool
    num_warps: int


def _dot(a, b, contract, precision):
    """2-D dot_general with float32 accumulation; `contract` = ((a_dim,), (b_dim,)).

    On Triton, Precision.HIGHEST on float32 operands lowers to IEEE fp32 dots, DEFAULT to TF32;
    bfloat16 operands use bfloat16 MMA whatever the precision.
    """
    return lax.dot_general(
        a, b, (contract, ((), ())), precision=precision, preferred_element_type=F32
    )


def _keep_block(meta_ref, rows, cols, cfg: _Cfg):
    """Keep mask of queries `rows` x keys `cols` (broadcastable int32 index arrays) of this
    program's (b, h); meta = [s0, s1, batch_offset, 0] (int32)."""
    b = pl.program_id(0) + meta_ref[2]
    index = _flat_index(b, pl.program_id(1), rows, cols, cfg.h, cfg.t)
    return keep_from_index(index, (meta_ref[0], meta_ref[1]), cfg.rate)


def _scores(a, b, cfg: _Cfg):
    """(rows, Tp) float32 a b^T with columns >= T (padding) set to -1e30, and the column iota."""
    s = _dot(a, b, ((1,), (1,)), cfg.precision)  # (BQ, Tp)
    col = lax.broadcasted_iota(jnp.int32, s.shape, 1)
    return jnp.where(col < cfg.t, s, np.float32(_MASKED)), col


def _fwd_kernel(meta_ref, q_ref, k_ref, v_ref, o_ref, lse_ref, *, cfg: _Cfg):
    """o = dropout(softmax(q k^T)) v for a block of queries; lse = logsumexp of the scores."""
    s, col = _scores(q_ref[...], k_ref[...], cfg)  # (BQ, Tp)
    m = jnp.max(s, axis=1)  # (BQ,)
    e = jnp.exp(s - m[:, None])
    den = jnp.sum(e, axis=1)  # (BQ,)
    p = e / den[:, None]
    if cfg.rate > 0.0:
        rows = pl.program_id(2) * cfg.block + lax.broadcasted_iota(jnp.int32, s.shape, 0)
        keep = _keep_block(meta_ref, rows, col, cfg)
        p = jnp.where(keep, p * np.float32(cfg.scale), np.float32(0.0))
    v = v_ref[...]
    o_ref[...] = _dot(p.astype(v.dtype), v, ((1,), (0,)), cfg.precision)  # (BQ, Dp)
    lse_ref[...] = m + jnp.log(den)


def _dq_kernel(meta_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dq_ref, *, cfg: _Cfg):
    """dQ = dS k with dS = p * (dP - delta), dP = keep * (dO v^T) / (1 - r), for a query block."""
    k = k_ref[...]
    s, col = _scores(q_ref[...], k, cfg)  # (BQ, Tp)
    p = jnp.exp(s - lse_ref[...][:, None])
    dp = _dot(do_ref[...], v_ref[...], ((1,), (1,)), cfg.precision)  # (BQ, Tp) = dO v^T
    if cfg.rate > 0.0:
        rows = pl.program_id(2) * cfg.block + lax.broadcasted_iota(jnp.int32, s.shape, 0)
        keep = _keep_block(meta_ref, rows, col, cfg)
        dp = jnp.where(keep, dp * np.float32(cfg.scale), np.float32(0.0))
    ds = p * (dp - delta_ref[...][:, None])  # (BQ, Tp)
    dq_ref[...] = _dot(ds.astype(k.dtype), k, ((1,), (0,)), cfg.precision)  # (BQ, Dp)


def _dkv_kernel(
    meta_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, *, cfg: _Cfg
):
    """dV = dropout(p)^T dO, dK = dS^T q for a block of keys (rows) against all queries."""
    q, do = q_ref[...], do_ref[...]
    st = _dot(k_ref[...], q, ((1,), (1,)), cfg.precision)  # (BK, Tp) = s^T
    qcol = lax.broadcasted_iota(jnp.int32, st.shape, 1)
    pt = jnp.where(qcol < cfg.t, jnp.exp(st - lse_ref[...][None, :]), np.float32(0.0))
    dpt = _dot(v_ref[...], do, ((1,), (1,)), cfg.precision)  # (BK, Tp) = (dO v^T)^T
    pdt = pt
    if cfg.rate > 0.0:
        keys = pl.program_id(2) * cfg.block + lax.broadcasted_iota(jnp.int32, st.shape, 0)
        keep = _keep_block(meta_ref, qcol, keys, cfg)  # element (query i, key j) transposed
        scale = np.float32(cfg.scale)
        pdt = jnp.where(keep, pt * scale, np.float32(0.0))
        dpt = jnp.where(keep, dpt * scale, np.float32(0.0))
    dv_ref[...] = _dot(pdt.astype(do.dtype), do, ((1,), (0,)), cfg.precision)  # (BK, Dp)
    dst = pt * (dpt - delta_ref[...][None, :])  # (BK, Tp) = dS^T
    dk_ref[...] = _dot(dst.astype(q.dtype), q, ((1,), (0,)), cfg.precision)  # (BK, Dp)


def _compiler_params(num_warps: int):
    """Triton compiler params by whichever name this jax has (`TritonCompilerParams` < 0.7)."""
    from jax.experimental.pallas import triton as plgpu  # GPU-only module: import when used

    cls = getattr(plgpu, "CompilerParams", None) or plgpu.TritonCompilerParams
    return cls(num_warps=num_warps, num_stages=1)


def _spec(shape, kind: str, cfg: _Cfg):
    """BlockSpec over grid (b, h, r): "meta" whole; "rows" block r of rows; "all" every row."""
    if kind == "meta":
        return pl.BlockSpec((4,), lambda b, h, r: (0,))
    n = cfg.block if kind == "rows" else cfg.tp
    if kind == "rows":
        if len(shape) == 3:  # (B, H, Tp) row statistics
            return pl.BlockSpec((None, None, n), lambda b, h, r: (b, h, r))
        return pl.BlockSpec((None, None, n, shape[-1]), lambda b, h, r: (b, h, r, 0))
    if len(shape) == 3:
        return pl.BlockSpec((None, None, n), lambda b, h, r: (b, h, 0))
    return pl.BlockSpec((None, None, n, shape[-1]), lambda b, h, r: (b, h, 0, 0))


def _call(kernel, cfg: _Cfg, ins, outs, name: str):
    """pallas_call on grid (B, H, Tp / block); `ins`/`outs`: (array or ShapeDtypeStruct, kind)."""
    return pl.pallas_call(
        functools.partial(kernel, cfg=cfg),
        grid=(cfg.b, cfg.h, cfg.tp // cfg.block),
        in_specs=[_spec(x.shape, kind, cfg) for x, kind in ins],
        out_specs=[_spec(x.shape, kind, cfg) for x, kind in outs],
        out_shape=[x for x, _ in outs],
        interpret=cfg.interpret,
        compiler_params=None if cfg.interpret else _compiler_params(cfg.num_warps),
        name=name,
    )(*[x for x, _ in ins])


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _fused(q, k, v, meta, cfg: _Cfg):
    """(B, H, Tp, Dp) padded inputs -> (B, H, Tp, Dp) float32 output (custom VJP below)."""
    return _fused_fwd(q, k, v, meta, cfg)[0]


def _fused_fwd(q, k, v, meta, cfg: _Cfg):
    o_shape = jax.ShapeDtypeStruct(q.shape, F32)  # (B, H, Tp, Dp)
    lse_shape = jax.ShapeDtypeStruct(q.shape[:3], F32)  # (B, H, Tp)
    ins = [(meta, "meta"), (q, "rows"), (k, "all"), (v, "all")]
    o, lse = _call(_fwd_kernel, cfg, ins, [(o_shape, "rows"), (lse_shape, "rows")], "attn_fwd")
    return o, (q, k, v, meta, o, lse)


def _fused_bwd(cfg: _Cfg, res, do):
    q, k, v, meta, o, lse = res
    delta = jnp.sum(do * o, axis=-1)  # (B, H, Tp): rowsum(dO * O) = sum_j p_ij dP_ij
    do_c = do.astype(q.dtype)  # bfloat16 operands for the MMAs when computing in bfloat16
    f32 = functools.partial(jax.ShapeDtypeStruct, dtype=F32)
    stats = [(do_c, "rows"), (lse, "rows"), (delta, "rows")]
    ins = [(meta, "meta"), (q, "rows"), (k, "all"), (v, "all"), *stats]
    (dq,) = _call(_dq_kernel, cfg, ins, [(f32(q.shape), "rows")], "attn_bwd_dq")
    # dK/dV: blocks of keys are the rows; every query is a column.
    stats = [(do_c, "all"), (lse, "all"), (delta, "all")]
    ins = [(meta, "meta"), (q, "all"), (k, "rows"), (v, "rows"), *stats]
    outs = [(f32(k.shape), "rows"), (f32(v.shape), "rows")]
    dk, dv = _call(_dkv_kernel, cfg, ins, outs, "attn_bwd_dkv")
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


_fused.defvjp(_fused_fwd, _fused_bwd)


def pallas_attention(
    q, k, v, seed, rate: float, batch_offset, precision, block=None, interpret=None
):
    """Fused attention on one device's (B, H, T, D) batch; `seed` int32[2]. See module doc."""
    b, n_heads, t, d = q.shape
    if t > 256:
        raise ValueError(f"impl='pallas' holds all keys of a row in one program: T={t} > 256")
    tp, dp = max(16, pl.next_power_of_2(t)), max(16, pl.next_power_of_2(d))
    block = min(block or 32, tp)
    if block < 16 or block & (block - 1):
        raise ValueError(f"attention block must be a power of 2 >= 16, got {block}")
    if interpret is None:
        interpret = jax.default_backend() == "cpu"
    cfg = _Cfg(b, n_heads, t, tp, block, float(rate), 1.0 / (1.0 - rate), precision, interpret,
               8 if block * tp >= 8192 else 4)  # fmt: skip
    pad = ((0, 0), (0, 0), (0, tp - t), (0, dp - d))
    qp, kp, vp = (jnp.pad(x, pad) for x in (q, k, v))  # (B, H, Tp, Dp), zeros
    meta = jnp.stack([seed[0], seed[1], jnp.asarray(batch_offset, jnp.int32), jnp.int32(0)])
    return _fused(qp, kp, vp, meta, cfg)[:, :, :t, :d]  # (B, H, T, D)


def cudnn_attention(q, k, v, rate: float) -> jax.Array:
    """cuDNN fused attention (GPU, evaluation): no dropout, bfloat16/float16 inputs."""
    if rate > 0.0:
        raise ValueError(
            "impl='cudnn' is for evaluation only (no attention dropout here): use impl='pallas' "
            "or 'xla' for training, or dropout_rate=0 / seed=None"
        )
    if q.dtype not in (jnp.bfloat16, jnp.float16):
        raise ValueError(
            f"impl='cudnn' needs bfloat16 or float16 inputs, got {q.dtype}: compute in bfloat16 "
            "or use impl='pallas' / 'xla' for float32"
        )
    qt, kt, vt = (x.transpose(0, 2, 1, 3) for x in (q, k, v))  # (B, T, H, D)
    out = jax.nn.dot_product_attention(qt, kt, vt, scale=1.0, implementation="cudnn")
    return out.transpose(0, 2, 1, 3).astype(F32)  # (B, H, T, D)


def _local(q, k, v, seed, batch_offset, *, rate, impl, precision, block, interpret):
    if impl == "xla":
        return xla_attention(q, k, v, seed, rate, batch_offset, precision)
    if impl == "pallas":
        return pallas_attention(q, k, v, seed, rate, batch_offset, precision, block, interpret)
    return cudnn_attention(q, k, v, rate)


def attention(
    q,
    k,
    v,
    *,
    dropout_rate: float = 0.0,
    seed=None,
    impl: str = "xla",
    precision=None,
    batch_offset=0,
    mesh=None,
    block: int | None = None,
    interpret: bool | None = None,
) -> jax.Array:
    """`dropout(softmax(q k^T)) @ v` per head, q already scaled by 1/sqrt(D).

    Args:
      q, k, v: (B, H, T, D) in the compute dtype (float32 or bfloat16), all the same.
      dropout_rate: rate r of the dropout on the probabilities (kept entries scaled 1/(1-r)).
      seed: uint32[2] dropout seed; None (or rate 0) means no dropout.
      impl: "xla", "pallas" or "cudnn" (`available_impls`).
      precision: `lax.Precision` of the float32 dots (HIGHEST = true fp32; DEFAULT lets the
        backend choose, TF32 on GPUs). bfloat16 inputs always use bfloat16 operands.
      batch_offset: int32 scalar added to the batch index in the dropout counter.
      mesh: a mesh with a "data" axis over which the batch is sharded: the call runs under
        `jax.shard_map` per device, with batch_offset + axis_index * local batch, so the mask is
        the one of the unsharded call.
      block: rows per Pallas program (power of 2 >= 16; default 32).
      interpret: run the Pallas kernels interpreted (default: when the backend is CPU); False
        on CPU still lowers to Triton, for exporting to GPUs.

    Returns:
      (B, H, T, D) float32.

    Raises:
      ValueError: unknown impl, mismatched inputs, rate outside [0, 1), a dropout tensor of
        2**32 elements or more (32-bit counter), or what `cudnn_attention` refuses.
    """
    if impl not in IMPLS:
        raise ValueError(f"attention impl must be one of {IMPLS}, got {impl!r}")
    if q.ndim != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"q, k, v must share one (B, H, T, D) shape: {q.shape} {k.shape} {v.shape}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype: {q.dtype} {k.dtype} {v.dtype}")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
    rate = float(dropout_rate) if seed is not None else 0.0
    b, n_heads, t, _ = q.shape
    offset = batch_offset if isinstance(batch_offset, int) else 0  # a traced offset: unchecked
    if rate > 0.0 and (b + offset) * n_heads * t * t >= 2**32:
        raise ValueError(
            f"attention dropout over {(b + offset) * n_heads * t * t} elements reaches 2**32, "
            "the limit of the 32-bit counter hash: use a smaller batch"
        )
    seed_words = _seed_words(seed) if rate > 0.0 else jnp.zeros((2,), jnp.int32)
    offset_arr = jnp.asarray(batch_offset, jnp.int32)
    fn = functools.partial(
        _local, rate=rate, impl=impl, precision=precision, block=block, interpret=interpret
    )
    if mesh is None or mesh.shape.get(DATA_AXIS, 1) == 1:
        return fn(q, k, v, seed_words, offset_arr)
    return _sharded(fn, mesh, q, k, v, seed_words, offset_arr)


def _sharded(fn, mesh, q, k, v, seed_words, batch_offset):
    """`fn` per device under `jax.shard_map`, batch split over the mesh's "data" axis."""
    n = mesh.shape[DATA_AXIS]
    if q.shape[0] % n:
        raise ValueError(f"batch {q.shape[0]} is not divisible by the {n} devices of the mesh")
    local = q.shape[0] // n

    def body(q, k, v, seed_words, batch_offset):
        offset = batch_offset + lax.axis_index(DATA_AXIS).astype(jnp.int32) * local
        return fn(q, k, v, seed_words, offset)

    rows, rep = PartitionSpec(DATA_AXIS), PartitionSpec()
    mapped = jax.shard_map(
        body, mesh=mesh, in_specs=(rows, rows, rows, rep, rep), out_specs=rows, check_vma=False
    )
    return mapped(q, k, v, seed_words, batch_offset)
