"""Stage I masked pre-training model `Model_MAE` (reference §2.3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from aptpose_jax.models.config import ModelConfig
from aptpose_jax.models.layers import (
    LayerNorm,
    Linear,
    VanillaTransformer,
    apply_head,
    make_head,
    normal_init,
)
from aptpose_jax.models.lifter import MaskedSEMFrontEnd


def visible_first_order(temporal: jax.Array) -> jax.Array:
    """Frame indices with visible frames first, then masked ones, each in time order (Q8).

    A stable argsort of the boolean mask (False = visible sorts first) does exactly that with a
    static output length, so it works under jit.
    """
    return jnp.argsort(temporal.astype(jnp.int32), stable=True)  # (F,)


class PretrainModel(MaskedSEMFrontEnd):
    """Stage I: masked SEM fusion, encoder on the visible frames, decoder on all frames (§2.3).

    The number of visible frames is static: `n_visible = F - int(F * cfg.temporal_ratio)`; it is
    a plain attribute, so `model.n_visible = ...` (before jit) switches to another ratio. The
    `masks.temporal` passed in must hide exactly `F - n_visible` frames (checked when concrete).

    Call: `model(x (B, F, J, 2), masks) -> {"recon": (B, F, J, 2)}` with frames in visible-then-
    masked order, never un-shuffled (Q8). `return_intermediates=True` adds `"intermediates"`:
    `sem{k}_in`, `sem{k}_out`, `fused`, `enc_out (B, V, C)`, `enc_ln`, `enc_to_dec (B, V, C/2)`,
    `dec_in (B, F, C/2)`, `dec_out`.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self._init_front_end(cfg, True, rngs)
        c, h, f, j, cc = cfg.channel, cfg.d_hid, cfg.frames, cfg.n_joints, cfg.compute
        self.dec_pos_embedding = nnx.Param(normal_init(rngs, (1, f, c // 2)))
        self.mask_token = nnx.Param(normal_init(rngs, (1, 1, c // 2)))
        self.Transformer = VanillaTransformer(
            cfg.layers, c, h, f, dropout=cfg.dropout, compute=cc, rngs=rngs
        )
        # Decoder: layers - 1 layers at half width, no positional embedding of its own (Q8).
        self.Transformer_dec = VanillaTransformer(
            cfg.layers - 1, c // 2, h // 2, None, dropout=cfg.dropout, compute=cc, rngs=rngs
        )
        self.encoder_to_decoder = Linear(c, c // 2, bias=False, compute=cc, rngs=rngs)
        self.encoder_LN = LayerNorm(c)
        self.fcn_dec = make_head(c // 2, 2 * j, compute=cc, rngs=rngs)
        self.n_visible = cfg.n_visible

    def _check_temporal(self, temporal) -> jax.Array:
        f = self.cfg.frames
        temporal = jnp.asarray(temporal, bool)
        if temporal.shape != (f,):
            raise ValueError(f"Stage I needs a temporal mask of shape ({f},), got {temporal.shape}")
        if not isinstance(temporal, jax.core.Tracer):
            n_masked = int(np.asarray(temporal).sum())
            if n_masked != f - self.n_visible:
                raise ValueError(
                    f"temporal mask hides {n_masked} frames but the model was built for "
                    f"{f - self.n_visible} (temporal_ratio); set model.n_visible = {f - n_masked}"
                )
        return temporal

    def __call__(self, x: jax.Array, masks, *, return_intermediates: bool = False) -> dict:
        inter = {} if return_intermediates else None
        b, f, j, _ = x.shape
        fused = self._fused_features(x, masks, inter)  # (B, F, C)
        order = visible_first_order(self._check_temporal(masks.temporal))  # (F,)
        v = self.n_visible
        tokens = (fused + self.Transformer.pos_embedding[...])[:, order[:v]]  # (B, V, C)
        enc_out = self.Transformer.model(tokens)
        enc_ln = self.encoder_LN(enc_out)
        enc_to_dec = self.encoder_to_decoder(enc_ln)  # (B, V, C/2)
        mask_tokens = jnp.broadcast_to(self.mask_token[...], (b, f - v, enc_to_dec.shape[-1]))
        dec_pos = self.dec_pos_embedding[...][:, order]  # (1, F, C/2), visible then masked
        dec_in = jnp.concatenate([enc_to_dec, mask_tokens], axis=1) + dec_pos  # (B, F, C/2)
        dec_out = self.Transformer_dec.model(dec_in)
        recon = apply_head(self.fcn_dec, dec_out).reshape(b, f, j, 2)  # channel k = (k//2, k%2)
        out = {"recon": recon}
        if inter is not None:
            inter.update(
                enc_out=enc_out,
                enc_ln=enc_ln,
                enc_to_dec=enc_to_dec,
                dec_in=dec_in,
                dec_out=dec_out,
            )
            out["intermediates"] = inter
        return out
