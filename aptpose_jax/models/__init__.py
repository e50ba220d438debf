"""APTPose models in Flax NNX: Stage I (`PretrainModel`), Stage II (`LifterModel`), refine."""

from __future__ import annotations

from flax import nnx

from aptpose_jax.models.config import STAGES, ModelConfig, stride_num
from aptpose_jax.models.lifter import LifterModel, Refine
from aptpose_jax.models.pretrain import PretrainModel

__all__ = [
    "STAGES",
    "LifterModel",
    "ModelConfig",
    "PretrainModel",
    "Refine",
    "build_model",
    "stride_num",
]


def build_model(cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
    """Builds the model of `cfg.stage` in training mode (call `.eval()` for inference).

    Args:
      cfg: sizes and stage ("pretrain", "lifter" or "lifter_nomask").
      rngs: `nnx.Rngs` with streams `params` (initialisation, PyTorch defaults) and `dropout`.

    Returns:
      `PretrainModel` for "pretrain", else `LifterModel` (masked unless "lifter_nomask").
    """
    if cfg.stage == "pretrain":
        return PretrainModel(cfg, rngs=rngs)
    return LifterModel(cfg, rngs=rngs)
