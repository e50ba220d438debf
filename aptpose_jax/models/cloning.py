"""The reference's cloned initialisation of stacked layers (Q9).

The official code builds one attention module (whose four projections are `clones()`, that is
deep copies, of one `nn.Linear`) and one feed-forward, and deep-copies them into every layer. So
a fresh official model starts with

* all layers of a vanilla transformer identical (Stage I encoder and decoder, Stage II
  `Transformer`): attention, feed-forward and norms alike;
* the Q, K, V and output projections of every attention module identical;
* the attention modules of all strided layers identical, while each strided layer's feed-forward
  is built on its own (independent values).

Everything else (the four SEM encoders, the heads, embeddings and tokens) is built separately.
`apply_cloned_init` copies values to reproduce that structure; each copy is a separate array
(the train step donates its state, and one buffer cannot be donated twice).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from aptpose_jax.models.layers import Encoder, MultiHeadedAttention
from aptpose_jax.models.strided import StridedEncoder


def _copy_params(src: nnx.Module, dst: nnx.Module) -> None:
    """Sets every parameter of `dst` to a copy of the same parameter of `src` (same structure)."""
    nnx.update(dst, jax.tree.map(jnp.copy, nnx.state(src, nnx.Param)))


def _tie_projections(attn: MultiHeadedAttention) -> None:
    """Q, K, V and output projections all start as the first one (Q9)."""
    for lin in attn.linears[1:]:
        _copy_params(attn.linears[0], lin)


def apply_cloned_init(model: nnx.Module) -> nnx.Module:
    """Gives a freshly initialised model the reference's cloned structure (Q9), in place.

    Args:
      model: any APTPose model; its `Encoder`s (vanilla transformers) and `StridedEncoder`
        are found by type.

    Returns:
      `model`, for chaining.
    """
    for _, node in nnx.iter_graph(model):
        if isinstance(node, Encoder):  # one layer deep-copied N times
            first = node.layers[0]
            _tie_projections(first.self_attn)
            for layer in node.layers[1:]:
                _copy_params(first, layer)
        elif isinstance(node, StridedEncoder):  # one attention copied into each layer
            first = node.layers[0].self_attn
            _tie_projections(first)
            for layer in node.layers[1:]:
                _copy_params(first, layer.self_attn)
    return model
