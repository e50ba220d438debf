"""Stage II lifter (reference §2.4), its no-mask variant (§2.7) and the refine module (§2.8).

Also holds the masked-copies + SEM fusion front end that Stage I shares (§2.2).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from aptpose_jax.models.config import ModelConfig, stride_num
from aptpose_jax.models.kernels import Compute
from aptpose_jax.models.layers import (
    FP32,
    Dropout,
    FCBlock,
    Linear,
    VanillaTransformer,
    apply_head,
    make_head,
    normal_init,
)
from aptpose_jax.models.strided import StridedTransformer

# Encoder k sees the copy masked by the k-th of these `Masks` fields / tokens (§2.2).
MASK_FIELDS = ("joint", "bone", "limb", "half_body")
MASK_TOKENS = ("spatial_mask_token", "bone_mask_token", "limb_mask1_token", "limb_mask2_token")


def check_input(x: jax.Array, cfg: ModelConfig) -> None:
    """Raises ValueError unless `x` is `(B, F, J, 2)` with the configured F and J."""
    if x.ndim != 4 or x.shape[1:] != (cfg.frames, cfg.n_joints, 2):
        raise ValueError(
            f"expected 2D input of shape (B, {cfg.frames}, {cfg.n_joints}, 2) (joints-last), "
            f"got {tuple(x.shape)}"
        )


class MaskedSEMFrontEnd(nnx.Module):
    """Mask tokens, four SEM encoders and their product fusion, shared by both stages (§2.2).

    Subclasses own the attributes `encoder1..4` and (when masked) the four `*_mask_token`s.
    """

    def _init_front_end(self, cfg: ModelConfig, masked: bool, rngs: nnx.Rngs) -> None:
        self.cfg = cfg
        self.masked = masked
        if masked:
            for name in MASK_TOKENS:
                setattr(self, name, nnx.Param(normal_init(rngs, (1, 1, 2))))
        c, j = cfg.channel, cfg.n_joints
        for k in range(1, 5):
            enc = FCBlock(
                2 * j, c, 2 * c, cfg.sem_layers, cfg.dropout, compute=cfg.compute, rngs=rngs
            )
            setattr(self, f"encoder{k}", enc)

    def _fused_features(self, x: jax.Array, masks, inter: dict | None) -> jax.Array:
        """`(B, F, J, 2)` -> fused SEM features `(B, F, C)`."""
        check_input(x, self.cfg)
        b, f, j, _ = x.shape
        if self.masked and masks is None:
            raise ValueError("this model masks its input (§2.2): pass a Masks (see masking.py)")
        feats = []
        for k in range(1, 5):
            xk = x
            if self.masked:
                # Masked (frame, joint) entries take the learned 2-vector token, for every sample.
                mask = jnp.asarray(getattr(masks, MASK_FIELDS[k - 1]), bool)[..., None]
                xk = jnp.where(mask, getattr(self, MASK_TOKENS[k - 1])[...], x)  # (B, F, J, 2)
            xk = xk.reshape(b, f, 2 * j)  # (B, F, 2J), channel 2*j + c
            out = getattr(self, f"encoder{k}")(xk)  # (B, F, C)
            if inter is not None:
                inter[f"sem{k}_in"], inter[f"sem{k}_out"] = xk, out
            feats.append(out)
        fused = ((feats[3] * feats[2]) * feats[1]) * feats[0]  # reference order (Q28: tiny values)
        if inter is not None:
            inter["fused"] = fused
        return fused


class LifterModel(MaskedSEMFrontEnd):
    """Stage II `Model` (§2.4); with `masked=False` the no-mask variant of §2.7.

    Call: `model(x (B, F, J, 2), masks) -> dict` with `pose (B, 1, J, 3)`, `pose_seq (B, F, J, 3)`,
    `bones (B, 1, J-1, 3)`, `bones_seq (B, F, J-1, 3)`; the temporal mask is ignored (Q3).
    `return_intermediates=True` adds `"intermediates"`: `sem{k}_in (B, F, 2J)`,
    `sem{k}_out (B, F, C)`, `fused`, `vte_features (B, F, C)`, `strided_features (B, 1, C)`.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self._init_front_end(cfg, cfg.stage == "lifter", rngs)
        c, h, f, j, cc = cfg.channel, cfg.d_hid, cfg.frames, cfg.n_joints, cfg.compute
        self.Transformer = VanillaTransformer(
            cfg.layers, c, h, f, dropout=cfg.dropout, compute=cc, rngs=rngs
        )
        self.Transformer_reduce = StridedTransformer(
            c, h, f, stride_num(f), dropout=cfg.dropout, compute=cc, rngs=rngs
        )
        self.fcn = make_head(c, 3 * j, compute=cc, rngs=rngs)
        self.fcn_1 = make_head(c, 3 * j, compute=cc, rngs=rngs)
        self.fcn_vec = make_head(c, 3 * (j - 1), compute=cc, rngs=rngs)
        self.fcn_vec1 = make_head(c, 3 * (j - 1), compute=cc, rngs=rngs)
        self.refine = Refine(j, compute=cc, rngs=rngs) if cfg.refine else None

    def __call__(self, x: jax.Array, masks=None, *, return_intermediates: bool = False) -> dict:
        inter = {} if return_intermediates else None
        b, f, j, _ = x.shape
        h = self.Transformer(self._fused_features(x, masks, inter))  # (B, F, C)
        out = {
            "pose_seq": apply_head(self.fcn_1, h).reshape(b, f, j, 3),  # channel k = (k//3, k%3)
            "bones_seq": apply_head(self.fcn_vec1, h).reshape(b, f, j - 1, 3),
        }
        r = self.Transformer_reduce(h)  # (B, 1, C), anchored at frame 0 (Q15)
        out["pose"] = apply_head(self.fcn, r).reshape(b, 1, j, 3)
        out["bones"] = apply_head(self.fcn_vec, r).reshape(b, 1, j - 1, 3)
        if inter is not None:
            inter["vte_features"], inter["strided_features"] = h, r
            out["intermediates"] = inter
        return out

    def refine_pose(self, pose: jax.Array, pose_uvd: jax.Array) -> jax.Array:
        """Applies the §2.8 refine module (needs `refine=True`); see `Refine.__call__`."""
        if self.refine is None:
            raise ValueError("this model has no refine module; build it with refine=True")
        return self.refine(pose, pose_uvd)


class Refine(nnx.Module):
    """Refine module (§2.8): blends the predicted u, v with the back-projected ones.

    `post_refine[0]` = Linear(6J, 1024), `post_refine[1]` = Linear(1024, 2J); torch names them
    `post_refine.0` / `post_refine.3` (ReLU and Dropout sit between); the converter maps them.
    """

    def __init__(
        self, n_joints: int = 17, hidden: int = 1024, *, compute: Compute = FP32, rngs: nnx.Rngs
    ):
        self.post_refine = nnx.List(
            [
                Linear(6 * n_joints, hidden, compute=compute, rngs=rngs),
                Linear(hidden, 2 * n_joints, compute=compute, rngs=rngs),
            ]
        )
        self.dropout = Dropout(0.5, compute=compute)

    def __call__(self, pose: jax.Array, pose_uvd: jax.Array) -> jax.Array:
        """Refines a centre-frame pose.

        Args:
          pose: `(B, 1, J, 3)` Stage II prediction.
          pose_uvd: `(B, 1, J, 3)` back-projection of the centre-frame 2D input (get_uvd2xyz).

        Returns:
          `(B, 1, J, 3)`: pose with its first two coordinates replaced by
          `w * pose[..., :2] + (1 - w) * pose_uvd[..., :2]`, w = sigmoid(MLP(cat(pose, pose_uvd))).
        """
        b, _, j, _ = pose.shape
        z = jnp.concatenate([pose, pose_uvd], axis=-1).reshape(b, 6 * j)  # (B, 6J): joint-major
        hid = self.dropout(jax.nn.relu(self.post_refine[0](z)))
        w = jax.nn.sigmoid(self.post_refine[1](hid)).reshape(b, 1, j, 2)  # (B, 1, J, 2)
        uv = w * pose[..., :2] + (1 - w) * pose_uvd[..., :2]
        return jnp.concatenate([uv, pose[..., 2:]], axis=-1)
