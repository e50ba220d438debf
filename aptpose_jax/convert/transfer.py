"""Stage I -> Stage II weight transfer (reference §2.6) and the `--freeze` option (§2.5, Q27).

Transfer copies every parameter / BatchNorm statistic whose PyTorch key exists in both models:
the four mask tokens, `encoder1..4.*` and `Transformer.*` (incl. `pos_embedding` and the unused
norm, Q6). For identical sizes that is the reference's 163 keys: 151 tensors we hold plus the
12 `num_batches_tracked` counters we do not carry (`mapping.SKIPPED_KEYS`). Unlike the reference
(which silently keeps mismatching keys at their init) any size mismatch is an error.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
from flax import nnx

from aptpose_jax.convert.mapping import torch_key
from aptpose_jax.errors import WeightsError
from aptpose_jax.models import LifterModel, PretrainModel
from aptpose_jax.models.io import STATE_FILTER, model_arrays
from aptpose_jax.models.layers import BatchNorm

_SIZE_FIELDS = ("frames", "layers", "channel", "d_hid", "sem_layers", "n_joints")

# Parameters loaded from Stage I and frozen with --freeze 1 (§2.5).
_FROZEN_KEY = re.compile(
    r"^(encoder[1-4]\.|Transformer\.|spatial_mask_token$|bone_mask_token$|limb_mask[12]_token$)"
)
# BatchNorms kept in eval mode with --freeze 1: bn_1 and block 0 only (Q27).
_FROZEN_BN = re.compile(r"^encoder[1-4]\.(bn_1|layers\.0\.batch_norm[12])$")


def transfer_pretrain_to_lifter(pretrain: nnx.Module, lifter: nnx.Module) -> list[str]:
    """Copies the shared Stage I tensors into a Stage II model in place (`--MAE_reload 1`).

    Args:
      pretrain: a `PretrainModel`.
      lifter: a `LifterModel` (masked or no-mask) with the same frames/layers/channel/d_hid/
        sem_layers/n_joints.

    Returns:
      The sorted PyTorch keys copied (151 for the masked lifter with layers=4, module docstring).

    Raises:
      ValueError: wrong model types, or sizes that differ (e.g. frames: `pos_embedding` would
        not fit, §2.6).
    """
    if not isinstance(pretrain, PretrainModel) or not isinstance(lifter, LifterModel):
        raise WeightsError(
            "transfer needs (Stage I PretrainModel, Stage II LifterModel), got "
            f"({type(pretrain).__name__}, {type(lifter).__name__})"
        )
    diff = [
        f"{f}: Stage I {getattr(pretrain.cfg, f)} vs Stage II {getattr(lifter.cfg, f)}"
        for f in _SIZE_FIELDS
        if getattr(pretrain.cfg, f) != getattr(lifter.cfg, f)
    ]
    if diff:
        raise WeightsError(
            "Stage I and Stage II sizes differ, shared weights cannot be transferred (§2.6); "
            "build Stage II with the Stage I sizes:\n  " + "\n  ".join(diff)
        )
    source = {torch_key(p): v for p, v in model_arrays(pretrain).items()}
    state = nnx.state(lifter, STATE_FILTER)
    copied = []
    for path, var in nnx.to_flat_state(state):
        key = torch_key(path)
        if key in source:
            var[...] = jnp.asarray(source[key])
            copied.append(key)
    nnx.update(lifter, state)
    return sorted(copied)


def is_frozen_key(key: str) -> bool:
    """True for PyTorch keys frozen by `--freeze 1`: encoders 1-4, `Transformer.*`, tokens."""
    return bool(_FROZEN_KEY.match(key))


def frozen_filter(path, value) -> bool:
    """NNX filter: the parameters frozen with `--freeze 1` (§2.5).

    Use as `nnx.state(model, nnx.All(nnx.Param, frozen_filter))`.
    """
    return isinstance(value, nnx.Param) and is_frozen_key(torch_key(tuple(path)))


def freeze_labels(model: nnx.Module) -> nnx.State:
    """Labels "frozen" / "trainable" for every parameter, for `optax.multi_transform`.

    The result has the structure of `nnx.state(model, nnx.Param)`.
    """

    def label(keypath, _):
        path = tuple(k.key for k in keypath if isinstance(k, jax.tree_util.DictKey))
        return "frozen" if is_frozen_key(torch_key(path)) else "trainable"

    return jax.tree_util.tree_map_with_path(label, nnx.state(model, nnx.Param))


def freeze_batchnorms(model: nnx.Module) -> list[str]:
    """Keeps the frozen encoders' BatchNorms in eval mode through `.train()` (Q27).

    Only `bn_1` and `layers[0].batch_norm1/2` of each FCBlock, as the reference; further
    residual blocks (sem_layers > 1) keep training their statistics.

    Returns:
      The PyTorch prefixes of the BatchNorms frozen.
    """
    frozen = []
    for path, node in nnx.iter_graph(model):
        if isinstance(node, BatchNorm):
            name = ".".join(str(p) for p in path)
            if _FROZEN_BN.match(name):
                node.frozen = True
                frozen.append(name)
    return sorted(frozen)
