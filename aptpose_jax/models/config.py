"""Model configuration shared by both APTPose stages (reference §2.1, §2.3, §2.4, §2.7)."""

from __future__ import annotations

import dataclasses

from aptpose_jax.models import kernels

STAGES = ("pretrain", "lifter", "lifter_nomask")

# Frame count -> strides of the strided transformer (reference §2.1, fixed by `common/opt.py`).
_STRIDE_NUM = {
    9: (1, 3, 3),
    27: (3, 3, 3),
    81: (3, 3, 3, 3),
    243: (3, 3, 3, 3, 3),
    351: (3, 9, 13),
}


def stride_num(frames: int) -> tuple[int, ...]:
    """Strides of the Stage II strided transformer for a window of `frames` frames.

    Args:
      frames: window length F; the reference supports 9, 27, 81, 243 and 351 only.

    Returns:
      One stride per strided layer; their product reduces F to a single token.

    Raises:
      ValueError: for any other frame count (the reference exits with "no stride_num").
    """
    try:
        return _STRIDE_NUM[frames]
    except KeyError:
        raise ValueError(
            f"no stride_num for frames={frames}; the reference supports "
            f"{sorted(_STRIDE_NUM)} (choose one of these window lengths)"
        ) from None


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of an APTPose model.

    Attributes:
      stage: "pretrain" (Stage I), "lifter" (Stage II), "lifter_nomask" (§2.7).
      frames: window length F (9, 27, 81, 243 or 351).
      layers: vanilla transformer depth (Stage I decoder depth is layers - 1, Q8).
      channel: width C (Stage I decoder C / 2).
      d_hid: FFN width H (Stage I decoder H / 2).
      sem_layers: residual blocks per FCBlock (SEM).
      n_joints: J.
      refine: build the §2.8 refine module (lifter only).
      dropout: dropout rate of the transformer/SEM blocks (0.1 in the reference).
      temporal_ratio: Stage I only; `int(frames * temporal_ratio)` frames are masked, so the
        encoder sees a static number of visible frames `frames - int(frames * ratio)`
        (must match the `Masks.temporal` passed in; see `PretrainModel.n_visible`).
      dtype: compute precision of the dots: "float32" (true float32 on every backend),
        "tf32" (the backend's fast float32 dot: TF32 on NVIDIA GPUs) or "bfloat16"; parameters,
        normalisations, softmax and outputs stay float32 (`kernels.Compute`).
      kernels, dropout_rng, attention: the kernel choices ("auto" = the backend's default;
        see `kernels.resolve` and the config group `kernels`).
      cloned_init: start fresh models as the reference does (Q9): identical vanilla transformer
        layers, identical Q/K/V/O projections, identical strided attention modules. False draws
        every layer and projection independently. Irrelevant when weights are loaded.
    """

    stage: str
    frames: int
    layers: int = 4
    channel: int = 256
    d_hid: int = 512
    sem_layers: int = 1
    n_joints: int = 17
    refine: bool = False
    dropout: float = 0.1
    temporal_ratio: float = 0.0
    dtype: str = "float32"
    cloned_init: bool = True
    kernels: str = "auto"
    dropout_rng: str = "auto"
    attention: str = "auto"

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.stage != "pretrain":
            stride_num(self.frames)  # validates the frame count
        if self.channel % 8 or (self.stage == "pretrain" and (self.channel // 2) % 8):
            raise ValueError(f"channel={self.channel} must be divisible by the 8 heads")
        if self.stage == "pretrain" and self.layers < 2:
            raise ValueError("Stage I needs layers >= 2 (its decoder has layers - 1, Q8)")
        if self.refine and self.stage == "pretrain":
            raise ValueError("refine=True is a Stage II option (§2.8)")
        if not 0.0 <= self.temporal_ratio < 1.0:
            raise ValueError(f"temporal_ratio must be in [0, 1), got {self.temporal_ratio}")
        _ = self.compute  # validates dtype and the kernel choices

    @property
    def n_visible(self) -> int:
        """Static number of frames the Stage I encoder sees (reference §2.2, §2.3)."""
        return self.frames - int(self.frames * self.temporal_ratio)

    @property
    def compute(self) -> kernels.Compute:
        """How the model computes on the current backend (`kernels.resolve`)."""
        return kernels.resolve(self.dtype, self.kernels, self.dropout_rng, self.attention)
