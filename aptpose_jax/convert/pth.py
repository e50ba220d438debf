"""Reading PyTorch `.pth` state_dicts of the official models into NNX models (reference §5)."""

from __future__ import annotations

import os
import re

import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from aptpose_jax.convert.mapping import flat_to_state_dict, state_dict_to_flat
from aptpose_jax.errors import MissingFileError, WeightsError
from aptpose_jax.models import ModelConfig, build_model
from aptpose_jax.models.io import STATE_FILTER, build_with_values, model_arrays, save_model


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Loads a `.pth` state_dict as numpy arrays; strips one leading `module.` (DataParallel).

    Uses `torch.load(..., weights_only=True)`, so no pickled code is executed.
    """
    import pickle

    import torch  # only needed here; keeps the rest of the package torch-free

    if not os.path.isfile(path):
        raise MissingFileError(f"{path}: .pth file not found")
    try:
        obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refuses code: not a plain state_dict
        raise WeightsError(
            f"{path}: refused to unpickle (it holds objects other than tensors: {e}); only "
            "plain state_dict files are read"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:  # truncated or not a .pth
        raise WeightsError(
            f"{path}: cannot read the file as a PyTorch .pth ({e}); it may be truncated or "
            "corrupt: download it again"
        ) from e
    if not isinstance(obj, dict) or not all(hasattr(v, "numpy") for v in obj.values()):
        raise WeightsError(f"{path}: expected a state_dict (dict of tensors), got {type(obj)}")
    return {k.removeprefix("module."): v.detach().cpu().numpy() for k, v in obj.items()}


def _count(state_dict, pattern: str) -> int:
    idx = {int(m.group(1)) for k in state_dict if (m := re.match(pattern, k))}
    return len(idx)


def infer_config(state_dict: dict[str, np.ndarray], **overrides) -> ModelConfig:
    """Infers stage and sizes from the keys and shapes of a (prefix-stripped) state_dict.

    Args:
      state_dict: torch key -> array.
      **overrides: `ModelConfig` fields to set explicitly (e.g. `temporal_ratio` for Stage I).

    Raises:
      ValueError: if the keys belong to none of the three models.
    """
    sd = state_dict
    if "Transformer.pos_embedding" not in sd or "encoder1.fc_1.weight" not in sd:
        raise WeightsError(
            "not an APTPose Stage I/II state_dict: 'Transformer.pos_embedding' or "
            "'encoder1.fc_1.weight' is missing"
        )
    if "dec_pos_embedding" in sd:
        stage = "pretrain"
    elif "spatial_mask_token" in sd:
        stage = "lifter"
    else:
        stage = "lifter_nomask"
    _, frames, channel = sd["Transformer.pos_embedding"].shape
    fields = dict(
        stage=stage,
        frames=int(frames),
        layers=_count(sd, r"Transformer\.model\.layers\.(\d+)\."),
        channel=int(channel),
        d_hid=int(sd["Transformer.model.layers.0.feed_forward.w_1.weight"].shape[0]),
        sem_layers=_count(sd, r"encoder1\.layers\.(\d+)\."),
        n_joints=int(sd["encoder1.fc_1.weight"].shape[1]) // 2,
        refine=any(k.startswith("post_refine.") for k in sd),
    )
    fields.update(overrides)
    return ModelConfig(**fields)


def apply_state_dict(model: nnx.Module, state_dict: dict[str, np.ndarray]) -> list[str]:
    """Loads a torch state_dict into `model` in place.

    Returns:
      The torch keys deliberately skipped (`mapping.SKIPPED_KEYS`).

    Raises:
      ValueError: one error listing every missing, unexpected and mis-shaped key.
    """
    state = nnx.state(model, STATE_FILTER)
    template = {tuple(p): tuple(v.shape) for p, v in nnx.to_flat_state(state)}
    flat, skipped = state_dict_to_flat(state_dict, template)
    for path, var in nnx.to_flat_state(state):
        var[...] = jnp.asarray(flat[tuple(path)])
    nnx.update(model, state)
    return skipped


def load_pth(
    path: str | os.PathLike, *, refine_pth: str | os.PathLike | None = None, **overrides
) -> tuple[nnx.Module, ModelConfig]:
    """Builds the model a `.pth` file describes and loads its weights (eval mode).

    Args:
      path: state_dict of Stage I `Model_MAE`, Stage II `Model` or the no-mask Stage II model;
        plain or `module.`-prefixed (DataParallel).
      refine_pth: optional state_dict of the refine module (`post_refine.*`, §2.8), merged in.
      **overrides: `ModelConfig` fields that cannot be inferred (`temporal_ratio`, `dropout`,
        `dtype`).

    Returns:
      (model in eval mode, its inferred ModelConfig).
    """
    sd = read_state_dict(path)
    if refine_pth is not None:
        sd.update(read_state_dict(refine_pth))
    try:
        cfg = infer_config(sd, **overrides)
        abstract = nnx.eval_shape(lambda: build_model(cfg, nnx.Rngs(params=0, dropout=0)))
        state = nnx.state(abstract, STATE_FILTER)
        template = {tuple(p): tuple(v.get_value().shape) for p, v in nnx.to_flat_state(state)}
        values, skipped = state_dict_to_flat(sd, template)
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from e
    model = build_with_values(cfg, values)
    logging.info("loaded %s as %s; skipped %d keys: %s", path, cfg, len(skipped), skipped)
    model.eval()
    return model, cfg


def export_state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """Torch-layout state_dict of `model` (without `num_batches_tracked`), for round trips."""
    return flat_to_state_dict(model_arrays(model))


def convert_pth(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    refine_pth: str | os.PathLike | None = None,
    **overrides,
) -> ModelConfig:
    """Converts a `.pth` state_dict into an orbax model directory (see `models/io.py`).

    Args:
      path: the `.pth` file (plain or `module.`-prefixed).
      out_dir: output directory, must not exist; written atomically.
      refine_pth: optional refine-module state_dict merged in (§2.8).
      **overrides: `ModelConfig` fields that cannot be inferred (e.g. `temporal_ratio`).

    Returns:
      The inferred ModelConfig (also written to `model_config.json`).
    """
    model, cfg = load_pth(path, refine_pth=refine_pth, **overrides)
    save_model(model, cfg, out_dir)
    return cfg
