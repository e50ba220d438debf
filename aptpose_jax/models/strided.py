"""Strided transformer `Transformer_reduce` of Stage II (reference §2.1), channels-last."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from aptpose_jax.models.kernels import Compute
from aptpose_jax.models.layers import (
    FP32,
    Dropout,
    LayerNorm,
    Linear,
    MultiHeadedAttention,
    SublayerConnection,
    matmul,
    normal_init,
    torch_uniform,
)


class StridedConv(nnx.Module):
    """Conv1d(d_in, d_out, k=3, stride, padding=1) over time on `(B, T, C)` input (§2.1)."""

    def __init__(
        self, d_in: int, d_out: int, stride: int, *, compute: Compute = FP32, rngs: nnx.Rngs
    ):
        self.kernel = nnx.Param(torch_uniform(rngs, (3, d_in, d_out), 3 * d_in))  # (k, in, out)
        self.bias = nnx.Param(torch_uniform(rngs, (d_out,), 3 * d_in))
        self.stride = stride
        self.compute = compute

    def __call__(self, x: jax.Array) -> jax.Array:
        t_in, s = x.shape[1], self.stride
        t_out = (t_in - 1) // s + 1
        xp = jnp.pad(x, ((0, 0), (1, 1), (0, 0)))  # (B, T + 2, C) zero padding 1
        # Output step t sees padded steps s*t + k, k = 0, 1, 2: three strided views, one matmul.
        taps = [xp[:, k : k + s * (t_out - 1) + 1 : s] for k in range(3)]  # 3 x (B, T', C)
        cat = jnp.concatenate(taps, axis=-1)  # (B, T', 3C), channel index k*C + c
        w = self.kernel[...].reshape(-1, self.kernel.shape[-1])  # (3C, out)
        return matmul(cat, w, self.compute) + self.bias[...]


class StridedFeedForward(nnx.Module):
    """Conv1d(d, H, k=1) -> ReLU -> Dropout -> Conv1d(H, d, k=3, stride s, padding 1) (§2.1)."""

    def __init__(
        self, d_model: int, d_ff: int, stride: int, dropout: float, *, compute: Compute, rngs
    ):
        self.w_1 = Linear(d_model, d_ff, compute=compute, rngs=rngs)
        self.w_2 = StridedConv(d_ff, d_model, stride, compute=compute, rngs=rngs)
        self.dropout = Dropout(dropout, compute=compute)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.w_2(self.dropout(jax.nn.relu(self.w_1(x))))


class StridedLayer(nnx.Module):
    """Strided transformer layer: plain attention residual, then a strided FFN whose residual
    path subsamples time from frame 0 (`MaxPool1d(1, s)`, Q15)."""

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        h: int,
        stride: int,
        dropout: float,
        *,
        compute: Compute,
        rngs: nnx.Rngs,
    ):
        self.self_attn = MultiHeadedAttention(h, d_model, dropout, compute=compute, rngs=rngs)
        self.feed_forward = StridedFeedForward(
            d_model, d_ff, stride, dropout, compute=compute, rngs=rngs
        )
        self.sublayer = nnx.List(
            [SublayerConnection(d_model, dropout, compute=compute) for _ in range(2)]
        )
        self.stride = stride

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.sublayer[0](x, self.self_attn)
        sub = self.sublayer[1]
        return x[:, :: self.stride] + sub.dropout(self.feed_forward(sub.norm(x)))


class StridedEncoder(nnx.Module):
    """`Transformer_reduce.model`: three positional embeddings, strided layers, unused norm."""

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        length: int,
        strides,
        *,
        h: int = 8,
        dropout: float = 0.1,
        compute: Compute = FP32,
        rngs: nnx.Rngs,
    ):
        for i in (1, 2, 3):
            pos = normal_init(rngs, (1, length, d_model))
            setattr(self, f"pos_embedding_{i}", nnx.Param(pos))
        self.layers = nnx.List(
            [
                StridedLayer(d_model, d_ff, h, s, dropout, compute=compute, rngs=rngs)
                for s in strides
            ]
        )
        self.norm = LayerNorm(d_model)  # unused (Q6)

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, layer in enumerate(self.layers):
            if i < 3:  # only the first three layers get positional embeddings (Q16)
                pos = getattr(self, f"pos_embedding_{i + 1}")[...]
                x = x + pos[:, : x.shape[1]]
            x = layer(x)
        return x


class StridedTransformer(nnx.Module):
    """`Transformer_reduce`: wrapper whose only child is `model` (mirrors the torch tree)."""

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        length: int,
        strides,
        *,
        dropout: float = 0.1,
        compute: Compute = FP32,
        rngs: nnx.Rngs,
    ):
        self.model = StridedEncoder(
            d_model, d_ff, length, strides, dropout=dropout, compute=compute, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.model(x)
