"""Building blocks of the APTPose models (reference §2.1), channels-last.

Every block works on `(B, T, C)` tensors: PyTorch's channels-first Conv1d with kernel size 1
is a dense layer over the last axis, so no transposes are needed. Attribute names mirror the
PyTorch module tree (`linears`, `sublayer`, `feed_forward`, `w_1`, `bn_1`, ...) so the converter
maps state_dict keys by rule (`aptpose_jax/convert/mapping.py`).

Parameters and normalisation statistics are float32; a layer's `compute` (`kernels.Compute`)
sets the dot precision and operand dtype (bfloat16 uses AMX/tensor cores and accumulates in
float32) and which matmul, dropout and attention kernels run. The bucketed init serves every
backend: it only saves compilations while a model is built, and parameters must not depend on
the backend.

Dropout: every `Dropout` site holds a `DropoutSeed` (uint32[2]); the train step draws all of
them in one call per step (`draw_dropout_seeds`), so no site runs its own RNG.
Identical stacked layers (`Encoder`) run as one `jax.lax.scan` over their stacked parameters:
the layer is traced and compiled once, whatever the depth.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from aptpose_jax.models.attention import attention
from aptpose_jax.models.kernels import Compute, dropout_keep_mask, hash_keep_mask, matmul

F32 = jnp.float32
FP32 = Compute()  # true float32, plain kernels: the default of a layer built on its own


@functools.partial(jax.jit, static_argnums=(1, 2))
def _random_bucket(key: jax.Array, size: int, normal: bool) -> jax.Array:
    if normal:
        return jax.random.normal(key, (size,), F32)
    return jax.random.uniform(key, (size,), F32, -1.0, 1.0)


def random_init(key: jax.Array, shape: tuple, scale: float, normal: bool) -> jax.Array:
    """`scale * U(-1, 1)` (or `scale * N(0, 1)`) of `shape`.

    Draws a power-of-two sized vector and slices it, so eager construction compiles one RNG
    program per size bucket instead of one per parameter shape (model building went from ~3.5 s
    to well under 1 s on CPU). Traced (jit / eval_shape) and eager calls give the same values.
    """
    n = math.prod(shape)
    flat = _random_bucket(key, 1 << max(n - 1, 0).bit_length(), normal)
    if isinstance(flat, jax.core.Tracer):
        return (flat[:n] * np.float32(scale)).reshape(shape)
    return jnp.asarray((np.asarray(flat)[:n] * np.float32(scale)).reshape(shape))


def torch_uniform(rngs: nnx.Rngs, shape, fan_in: int) -> jax.Array:
    """PyTorch's default Linear/Conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (§2.1)."""
    return random_init(rngs.params(), shape, 1.0 / math.sqrt(fan_in), normal=False)


def normal_init(rngs: nnx.Rngs, shape) -> jax.Array:
    """N(0, 1), the init of embeddings and tokens (§2.1)."""
    return random_init(rngs.params(), shape, 1.0, normal=True)


class Linear(nnx.Module):
    """Dense layer = PyTorch Linear, or Conv1d with kernel size 1 on channels-last input."""

    def __init__(
        self, d_in: int, d_out: int, *, bias: bool = True, compute: Compute = FP32, rngs: nnx.Rngs
    ):
        self.kernel = nnx.Param(torch_uniform(rngs, (d_in, d_out), d_in))  # (in, out)
        self.bias = nnx.Param(torch_uniform(rngs, (d_out,), d_in)) if bias else None
        self.compute = compute

    def __call__(self, x: jax.Array) -> jax.Array:
        y = matmul(x, self.kernel[...], self.compute)
        return y if self.bias is None else y + self.bias[...]


class DropoutSeed(nnx.Variable):
    """uint32[2] seed of one dropout site, drawn anew each training step (`draw_dropout_seeds`)."""


def draw_dropout_seeds(model: nnx.Module, key: jax.Array) -> None:
    """Gives every `DropoutSeed` of `model` fresh bits from `key`, in ONE random call."""
    seeds = nnx.state(model, DropoutSeed)
    leaves, treedef = jax.tree.flatten(seeds)
    if leaves:
        bits = jax.random.bits(key, (len(leaves), 2), jnp.uint32)  # (sites, 2)
        nnx.update(model, jax.tree.unflatten(treedef, list(bits)))


def stream_seed(seed: jax.Array, stream: int) -> jax.Array:
    """The seed of the `stream`-th application of one dropout site (0: the seed itself)."""
    if stream == 0:
        return seed
    return seed.at[1].add(jnp.uint32((stream * 0x9E3779B9) % 2**32))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def hash_dropout(x: jax.Array, seed: jax.Array, rate: float) -> jax.Array:
    """Dropout with the counter-hash mask, recomputed in the backward pass from the seed.

    Only the seed is saved for the backward pass: the mask is rebuilt (iota and a hash, fused
    into the consumer) where it is needed, never stored at the size of `x`.
    """
    return _apply_hash_mask(x, seed, rate)


def _apply_mask(x: jax.Array, keep: jax.Array, rate: float) -> jax.Array:
    """Kept entries scaled by 1 / (1 - rate), the others zero."""
    return jnp.where(keep, x * (1.0 / (1.0 - rate)), jnp.zeros((), x.dtype))


def _apply_hash_mask(x, seed, rate):
    return _apply_mask(x, hash_keep_mask(seed, x.shape, rate), rate)


def _hash_dropout_fwd(x, seed, rate):
    return _apply_hash_mask(x, seed, rate), seed


def _hash_dropout_bwd(rate, seed, g):
    return _apply_hash_mask(g, seed, rate), None


hash_dropout.defvjp(_hash_dropout_fwd, _hash_dropout_bwd)


class Dropout(nnx.Module):
    """PyTorch's Dropout: keeps an entry with probability `1 - rate`, scaled by `1 / (1 - rate)`.

    `.eval()` / `.train()` toggle `deterministic`. The mask comes from the site's `seed`
    (`DropoutSeed`) by `compute.dropout` ("hash" or "threefry"); a site applied more than once
    per forward pass (the SEM residual blocks) passes `stream=1, 2, ...` for fresh masks, as
    PyTorch draws anew at every call. Bit-level RNG parity with PyTorch is impossible anyway.
    """

    def __init__(self, rate: float, *, compute: Compute = FP32):
        self.rate = rate
        self.deterministic = False
        self.kind = compute.dropout
        self.seed = DropoutSeed(jnp.zeros((2,), jnp.uint32))

    @property
    def active(self) -> bool:
        return not self.deterministic and self.rate > 0.0

    def __call__(self, x: jax.Array, stream: int = 0) -> jax.Array:
        if not self.active:
            return x
        if self.rate >= 1.0:
            return jnp.zeros_like(x)
        seed = stream_seed(self.seed[...], stream)
        if self.kind == "hash":
            return hash_dropout(x, seed, self.rate)
        return _apply_mask(x, dropout_keep_mask(seed, x.shape, self.rate, self.kind), self.rate)


class LayerNorm(nnx.Module):
    """The reference LayerNorm (Q5): unbiased std, eps 1e-6 added to the std."""

    def __init__(self, features: int, eps: float = 1e-6):
        self.a_2 = nnx.Param(jnp.ones((features,), F32))
        self.b_2 = nnx.Param(jnp.zeros((features,), F32))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        mean = x.mean(-1, keepdims=True)
        xc = x - mean
        std = jnp.sqrt(jnp.sum(xc * xc, -1, keepdims=True) / (x.shape[-1] - 1))  # N-1 (Q5)
        return self.a_2[...] * xc / (std + self.eps) + self.b_2[...]


class BatchNorm(nnx.Module):
    """PyTorch BatchNorm1d on `(..., C)`: statistics over every axis but the last.

    Training normalises with the biased batch variance and updates `var` with the unbiased one,
    `running = 0.9 * running + 0.1 * batch` (PyTorch momentum 0.1), eps 1e-5 (§2.1).
    `use_running_average` is toggled by `.eval()` / `.train()`; `frozen` keeps the module in eval
    mode whatever `.train()` says (the `--freeze` option, Q27).
    """

    def __init__(self, features: int, *, momentum: float = 0.1, eps: float = 1e-5):
        self.scale = nnx.Param(jnp.ones((features,), F32))
        self.bias = nnx.Param(jnp.zeros((features,), F32))
        self.mean = nnx.BatchStat(jnp.zeros((features,), F32))
        self.var = nnx.BatchStat(jnp.ones((features,), F32))
        self.momentum = momentum
        self.eps = eps
        self.use_running_average = False
        self.frozen = False

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.use_running_average or self.frozen:
            mean, var = self.mean[...], self.var[...]
        else:
            axes = tuple(range(x.ndim - 1))
            n = x.size // x.shape[-1]
            mean = x.mean(axes)
            var = jnp.mean(jnp.square(x - mean), axes)  # biased: used to normalise
            m = self.momentum
            self.mean[...] = (1 - m) * self.mean[...] + m * jax.lax.stop_gradient(mean)
            unbiased = jax.lax.stop_gradient(var) * (n / max(n - 1, 1))
            self.var[...] = (1 - m) * self.var[...] + m * unbiased
        inv = jax.lax.rsqrt(var + self.eps) * self.scale[...]
        return (x - mean) * inv + self.bias[...]


class MultiHeadedAttention(nnx.Module):
    """8-head self-attention; `linears[0..3]` = Q, K, V, output projections (§2.1)."""

    def __init__(
        self, h: int, d_model: int, dropout: float, *, compute: Compute = FP32, rngs: nnx.Rngs
    ):
        self.linears = nnx.List(
            [Linear(d_model, d_model, compute=compute, rngs=rngs) for _ in range(4)]
        )
        self.dropout = Dropout(dropout, compute=compute)
        self.h = h
        self.compute = compute

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, c = x.shape
        d_k = c // self.h
        # Q, K and V projections fused into one matmul over concatenated kernels.
        w = jnp.concatenate([lin.kernel[...] for lin in self.linears[:3]], axis=1)  # (C, 3C)
        bias = jnp.concatenate([lin.bias[...] for lin in self.linears[:3]])  # (3C,)
        qkv = (matmul(x, w, self.compute) + bias).reshape(b, t, 3, self.h, d_k)  # (B,T,3,h,dk)
        # Heads-major layout so both attention matmuls are plain batched GEMMs (4x faster on
        # CPU than contracting with the head axis in the middle).
        qkv = qkv.transpose(2, 0, 3, 1, 4)  # (3, B, h, T, dk)
        # 1/sqrt(dk) scales q (in float32, before the operand cast) rather than the scores:
        # a scalar times the (B, h, T, T) scores made XLA:CPU materialise a full-size
        # broadcast of the constant for the YNNPACK score fusion (1-3% of a training step).
        dt, drop = self.compute.operand_dtype, self.dropout
        q = (qkv[0] * np.float32(1.0 / math.sqrt(d_k))).astype(dt)
        out = attention(  # (B, h, T, dk); dropout on the probabilities inside
            q,
            qkv[1].astype(dt),
            qkv[2].astype(dt),
            dropout_rate=drop.rate if drop.active else 0.0,
            seed=drop.seed[...] if drop.active else None,
            impl=self.compute.attention,
            precision=self.compute.precision,
        )
        out = out.transpose(0, 2, 1, 3).reshape(b, t, c)  # (B, T, h*dk): heads concatenated
        return self.linears[3](out)


class PositionwiseFeedForward(nnx.Module):
    """Linear(d, H) -> ReLU -> Dropout -> Linear(H, d) (the reference calls the ReLU `gelu`)."""

    def __init__(
        self, d_model: int, d_ff: int, dropout: float, *, compute: Compute = FP32, rngs: nnx.Rngs
    ):
        self.w_1 = Linear(d_model, d_ff, compute=compute, rngs=rngs)
        self.w_2 = Linear(d_ff, d_model, compute=compute, rngs=rngs)
        self.dropout = Dropout(dropout, compute=compute)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.w_2(self.dropout(jax.nn.relu(self.w_1(x))))


class SublayerConnection(nnx.Module):
    """Holds the pre-norm of a residual sublayer: `x + Dropout(f(LN(x)))`."""

    def __init__(self, d_model: int, dropout: float, *, compute: Compute = FP32):
        self.norm = LayerNorm(d_model)
        self.dropout = Dropout(dropout, compute=compute)

    def __call__(self, x: jax.Array, fn) -> jax.Array:
        return x + self.dropout(fn(self.norm(x)))


class EncoderLayer(nnx.Module):
    """Vanilla pre-norm transformer layer: attention sublayer then FFN sublayer (§2.1)."""

    def __init__(self, d_model: int, d_ff: int, h: int, dropout: float, *, compute: Compute, rngs):
        self.self_attn = MultiHeadedAttention(h, d_model, dropout, compute=compute, rngs=rngs)
        self.feed_forward = PositionwiseFeedForward(
            d_model, d_ff, dropout, compute=compute, rngs=rngs
        )
        self.sublayer = nnx.List(
            [SublayerConnection(d_model, dropout, compute=compute) for _ in range(2)]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.sublayer[0](x, self.self_attn)
        return self.sublayer[1](x, self.feed_forward)


class Encoder(nnx.Module):
    """Stack of `n_layers` encoder layers; `norm` exists but is never applied (Q6)."""

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        d_ff: int,
        h: int,
        dropout: float,
        *,
        compute: Compute,
        rngs: nnx.Rngs,
    ):
        self.layers = nnx.List(
            [
                EncoderLayer(d_model, d_ff, h, dropout, compute=compute, rngs=rngs)
                for _ in range(n_layers)
            ]
        )
        self.norm = LayerNorm(d_model)  # unused (Q6), kept so parameter counts match §2.4

    def __call__(self, x: jax.Array) -> jax.Array:
        return scan_layers(self.layers, x)


def scan_layers(layers: nnx.List, x: jax.Array) -> jax.Array:
    """Applies identical `layers` in order as one `jax.lax.scan` over their stacked state.

    The layer is traced (and compiled) once, whatever the depth. Parameters stay per layer in
    the model (the converter's key map and checkpoints see no change); the stacking here is a
    copy of a few MB per step, and its gradient is the un-stacking. Layers must not write
    state (no BatchNorm inside): the scan returns none.
    """
    if len(layers) < 2:
        for layer in layers:
            x = layer(x)
        return x
    graphdef, first = nnx.split(layers[0])
    states = [first, *(nnx.state(layer) for layer in layers[1:])]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)  # leading axis: layer

    def body(h, state):
        return nnx.merge(graphdef, state)(h), None

    return jax.lax.scan(body, x, stacked)[0]


class VanillaTransformer(nnx.Module):
    """Learned positional embedding + `Encoder` (the reference `Transformer`, §2.1).

    With `pos_length=None` there is no embedding (the Stage I decoder, `Transformer_dec`).
    """

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        d_ff: int,
        pos_length: int | None,
        *,
        h: int = 8,
        dropout: float = 0.1,
        compute: Compute = FP32,
        rngs: nnx.Rngs,
    ):
        if pos_length is not None:
            self.pos_embedding = nnx.Param(normal_init(rngs, (1, pos_length, d_model)))
        self.model = Encoder(n_layers, d_model, d_ff, h, dropout, compute=compute, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.model(x + self.pos_embedding[...])  # functional form of the in-place add (Q7)


class ResidualBlock(nnx.Module):
    """`FCBlock.layers[i]`: two (conv k=1, BN, LeakyReLU 0.2, Dropout) + residual (§2.1)."""

    def __init__(self, size: int, dropout: float, *, compute: Compute, rngs: nnx.Rngs):
        self.w1 = Linear(size, size, compute=compute, rngs=rngs)
        self.batch_norm1 = BatchNorm(size)
        self.w2 = Linear(size, size, compute=compute, rngs=rngs)
        self.batch_norm2 = BatchNorm(size)
        self.dropout = Dropout(dropout, compute=compute)

    def __call__(self, x: jax.Array) -> jax.Array:
        # One Dropout module applied twice: two independent masks (streams 0 and 1), as
        # PyTorch draws anew at each call.
        y = self.dropout(jax.nn.leaky_relu(self.batch_norm1(self.w1(x)), 0.2))
        y = self.dropout(jax.nn.leaky_relu(self.batch_norm2(self.w2(y)), 0.2), stream=1)
        return x + y


class FCBlock(nnx.Module):
    """Spatial encoding MLP (SEM): `(B, F, 2J) -> (B, F, C)` (§2.1)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        linear_size: int,
        block_num: int,
        dropout: float = 0.1,
        *,
        compute: Compute = FP32,
        rngs: nnx.Rngs,
    ):
        self.fc_1 = Linear(c_in, linear_size, compute=compute, rngs=rngs)
        self.bn_1 = BatchNorm(linear_size)
        self.layers = nnx.List(
            [
                ResidualBlock(linear_size, dropout, compute=compute, rngs=rngs)
                for _ in range(block_num)
            ]
        )
        self.fc_2 = Linear(linear_size, c_out, compute=compute, rngs=rngs)
        self.dropout = Dropout(dropout, compute=compute)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.dropout(jax.nn.leaky_relu(self.bn_1(self.fc_1(x)), 0.2))
        for block in self.layers:
            x = block(x)
        return self.fc_2(x)


def make_head(c_in: int, c_out: int, *, compute: Compute, rngs: nnx.Rngs) -> nnx.List:
    """Output head `Sequential(BatchNorm1d(c_in), Conv1d(c_in, c_out, 1))` as `[bn, linear]`."""
    return nnx.List([BatchNorm(c_in), Linear(c_in, c_out, compute=compute, rngs=rngs)])


def apply_head(head: nnx.List, x: jax.Array) -> jax.Array:
    """`(B, T, C) -> (B, T, K)`; channel k of the result is (joint k // D, coordinate k % D)."""
    return head[1](head[0](x))
