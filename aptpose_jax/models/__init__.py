"""APTPose models in Flax NNX: Stage I (`PretrainModel`), Stage II (`LifterModel`), refine."""

from __future__ import annotations

from flax import nnx

from aptpose_jax.models.cloning import apply_cloned_init
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
      `PretrainModel` for "pretrain", else `LifterModel` (masked unless "lifter_nomask"),
      with the reference's cloned layers (Q9) unless `cfg.cloned_init` is False.
    """
    cls = PretrainModel if cfg.stage == "pretrain" else LifterModel
    model = cls(cfg, rngs=rngs)
    return apply_cloned_init(model) if cfg.cloned_init else model
