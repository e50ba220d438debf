"""Save / restore a model's state (parameters + BatchNorm statistics) with orbax.

Layout of a model directory: `state/` (orbax StandardCheckpointer, the pure dict of the
`nnx.Param` and `nnx.BatchStat` variables) and `model_config.json` (`ModelConfig` fields).
Writes are atomic: everything goes to a temporary sibling directory that is renamed at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx, traverse_util

from aptpose_jax.errors import MissingFileError, UnsafeDirectoryError, WeightsError
from aptpose_jax.models import ModelConfig, build_model
from aptpose_jax.models.layers import DropoutSeed

STATE_FILTER = nnx.Any(nnx.Param, nnx.BatchStat)
CONFIG_FILE = "model_config.json"


def model_arrays(model: nnx.Module) -> dict[tuple, np.ndarray]:
    """Flat NNX path -> numpy array of every parameter and BatchNorm statistic."""
    flat = nnx.to_flat_state(nnx.state(model, STATE_FILTER))
    return {tuple(path): np.asarray(var[...]) for path, var in flat}


def build_with_values(cfg: ModelConfig, values: dict[tuple, np.ndarray]) -> nnx.Module:
    """Builds a model whose parameters / statistics come from `values` (no random init).

    Skipping the initialisers avoids compiling one RNG program per parameter shape, which
    dominates model construction time on CPU. Dropout seeds start at zero (every train step
    draws them anew).

    Args:
      cfg: model configuration.
      values: NNX path -> array for every `nnx.Param` and `nnx.BatchStat` of the model.

    Raises:
      ValueError: if a parameter or statistic has no value or a wrong shape.
    """
    abstract = nnx.eval_shape(lambda: build_model(cfg, nnx.Rngs(params=0, dropout=0)))
    graphdef, state = nnx.split(abstract)
    problems = []
    for path, var in nnx.to_flat_state(state):
        path = tuple(path)
        if isinstance(var, DropoutSeed):  # drawn anew by every train step
            var.set_value(jnp.zeros((2,), jnp.uint32))
        elif path not in values:
            problems.append(f"missing value for {'.'.join(map(str, path))}")
        elif tuple(np.shape(values[path])) != tuple(var.get_value().shape):
            problems.append(f"{path}: got {np.shape(values[path])}, want {var.get_value().shape}")
        else:
            var.set_value(jnp.asarray(values[path], jnp.float32))
    if problems:
        raise WeightsError(
            "cannot build the model from the given values:\n  " + "\n  ".join(problems)
        )
    return nnx.merge(graphdef, state)


def save_model(model: nnx.Module, cfg: ModelConfig, directory: str | os.PathLike) -> pathlib.Path:
    """Writes `model`'s state and `cfg` to `directory` (must not exist yet), atomically.

    Args:
      model: the NNX model to save.
      cfg: its configuration (written to `model_config.json`).
      directory: output directory; made absolute (orbax needs absolute paths).

    Returns:
      The absolute output path.

    Raises:
      FileExistsError: if `directory` exists (remove it or choose another path).
    """
    out = pathlib.Path(directory).expanduser().resolve()
    if out.exists():
        raise UnsafeDirectoryError(f"{out} already exists; remove it or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp creates 0700; the final directory should be readable
        state = nnx.to_pure_dict(nnx.state(model, STATE_FILTER))
        ckptr = ocp.StandardCheckpointer()
        ckptr.save(tmp / "state", state)
        ckptr.wait_until_finished()
        (tmp / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_config(directory: str | os.PathLike) -> ModelConfig:
    """Reads `model_config.json` of a model directory."""
    path = pathlib.Path(directory).expanduser().resolve() / CONFIG_FILE
    if not path.is_file():
        raise MissingFileError(f"{path} not found: not a model directory written by save_model")
    return ModelConfig(**json.loads(path.read_text()))


def restore_model_state(model: nnx.Module, directory: str | os.PathLike) -> nnx.Module:
    """Restores parameters and BatchNorm statistics saved by `save_model` into `model` in place."""
    path = pathlib.Path(directory).expanduser().resolve() / "state"
    state = nnx.state(model, STATE_FILTER)
    target = jax.tree.map(np.asarray, nnx.to_pure_dict(state))
    restored = ocp.StandardCheckpointer().restore(path, target)
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)
    return model


def load_model(directory: str | os.PathLike) -> tuple[nnx.Module, ModelConfig]:
    """Builds the model described by `model_config.json` and restores its state (eval mode)."""
    cfg = read_config(directory)
    abstract = nnx.eval_shape(lambda: build_model(cfg, nnx.Rngs(params=0, dropout=0)))
    target = nnx.to_pure_dict(nnx.state(abstract, STATE_FILTER))
    path = pathlib.Path(directory).expanduser().resolve() / "state"
    restored = ocp.StandardCheckpointer().restore(path, target)
    values = {tuple(p): v for p, v in traverse_util.flatten_dict(restored).items()}
    model = build_with_values(cfg, values)
    model.eval()
    return model, cfg
