"""Pure train / eval step functions (jit-compiled by `train.py`).

The model travels through the steps as NNX state: `nnx.split(model)` gives a static graph
definition plus the parameters (`nnx.Param`), the BatchNorm running statistics
(`nnx.BatchStat`) and whatever else the model holds (dropout RNG streams). A step merges
them into a model, runs it and returns new states; nothing is mutated in place, so a step is
a pure function of (state, batch, key) and is reproducible bit for bit on CPU.

Randomness: masks and dropout come from the `key` argument, which the trainer derives from
(seed, global step) — a resumed run draws exactly what the uninterrupted run drew.

Inputs: a step's `batch` is either a dict of arrays (the host pipeline) or a
`pipeline.IndexBatch` (the device pipeline: the placed data and the batch's pair indices);
`pipeline.materialize` gathers the windows on the device as the step's first operation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from aptpose_jax import flip, losses, pipeline
from aptpose_jax.masking import Masks, MaskSpec, draw_masks, no_masks
from aptpose_jax.models.layers import draw_dropout_seeds
from aptpose_jax.refine import refine_centre


@flax.struct.dataclass
class TrainState:
    """Everything a training step updates."""

    params: Any  # nnx.State of nnx.Param
    batch_stats: Any  # nnx.State of nnx.BatchStat
    opt_state: Any  # optax state over params
    step: jax.Array  # () int32, global step count


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Static facts a step needs (hashable; closed over by the jitted function).

    Attributes:
      stage: "pretrain", "lifter" or "lifter_nomask".
      mask_spec: how to draw the masks.
      masks_in_eval: draw Stage II masks in evaluation too (Q2, reference default).
      loss_weights: Stage II weights of (pose_seq, pose, bones_seq, bones).
      velocity_weight: 3DHP velocity loss weight (-w_v).
      root: root joint index (0 H36M, 14 3DHP).
      bone_pairs: the bone pairs for the bone-vector targets (H36M pairs, also on 3DHP, Q22).
      joints_left / joints_right: lists used to un-flip outputs in test-time augmentation.
      input_joints_left / input_joints_right: lists used to flip the 2D input (the input
        layout's: COCO lists on Detectron input, §1.12); empty = the output lists.
      test_flip: average with the un-flipped output of the flipped input (§1.10).
      refine: apply the refine module to the centre frame (§2.8); the loss is then only the
        MPJPE of the refined centre frame and the refined pose is what is evaluated.

    The compute dtype (bf16 option) is a model property (`ModelConfig.dtype`): parameters
    stay float32 and outputs come back float32.
    """

    stage: str
    mask_spec: MaskSpec
    masks_in_eval: bool = True
    loss_weights: tuple = (1.0, 1.0, 0.5, 0.5)
    velocity_weight: float = 0.0
    root: int = 0
    bone_pairs: tuple = ()
    joints_left: tuple = ()
    joints_right: tuple = ()
    input_joints_left: tuple = ()
    input_joints_right: tuple = ()
    test_flip: bool = True
    refine: bool = False  # §2.8: the refined centre frame is trained and evaluated

    @property
    def input_lr(self) -> tuple:
        """(left, right) lists that flip the 2D input."""
        if self.input_joints_left or self.input_joints_right:
            return self.input_joints_left, self.input_joints_right
        return self.joints_left, self.joints_right


def _masks(cfg: StepConfig, key: jax.Array, batch_size: int, use: bool) -> Masks | None:
    """The masks of one batch; `use=False` means mask-free (Stage I keeps its temporal mask)."""
    spec = cfg.mask_spec
    if cfg.stage == "lifter_nomask":
        return None
    if use:
        return draw_masks(key, spec, batch_size)
    if cfg.stage == "pretrain":  # Stage I always hides frames: that is its task
        spatial_off = dict(joints_per_frame=0, bones_per_frame=0, limbs_per_frame=0,
                           half_bodies_per_frame=0, per_sample=False)  # fmt: skip
        return draw_masks(key, dataclasses.replace(spec, **spatial_off))
    return no_masks(spec.frames, spec.n_joints)


def eval_masks(cfg: StepConfig, key: jax.Array, batch_size: int) -> Masks | None:
    """The masks of one evaluation batch: drawn when `cfg.masks_in_eval` (Q2), else none."""
    return _masks(cfg, key, batch_size, use=cfg.masks_in_eval)


def _forward(model, x, masks):
    return {k: v.astype(jnp.float32) for k, v in model(x, masks).items()}


def _loss(cfg: StepConfig, out, batch, masks):
    if cfg.stage == "pretrain":
        loss = losses.pretrain_loss(out["recon"], batch["input_2d"], masks.temporal)
        return loss, {"loss": loss}
    if cfg.refine:  # §2.8: only the refined centre frame
        loss = losses.refine_loss(out["pose_refined"], batch["gt_3d"], cfg.root)
        return loss, {"loss": loss, "mpjpe": loss}
    loss, terms = losses.lifter_loss(
        out,
        batch["gt_3d"],
        root=cfg.root,
        weights=cfg.loss_weights,
        bone_pairs=cfg.bone_pairs,
        velocity_weight=cfg.velocity_weight,
    )
    # The reference logs the per-frame MPJPE with the predicted root zeroed (§3.3).
    pred = out["pose_seq"].at[:, :, cfg.root].set(0.0)
    target = batch["gt_3d"].at[:, :, cfg.root].set(0.0)
    mpjpe = jnp.mean(jnp.linalg.norm(pred - target, axis=-1))
    return loss, {"loss": loss, "mpjpe": mpjpe, **{f"loss_{k}": v for k, v in terms.items()}}


def make_train_forward(graphdef, rest, cfg: StepConfig):
    """Builds `forward(params, batch_stats, batch, key) -> (out, masks, batch_stats)`.

    The training-mode forward pass the train step differentiates: masks drawn from `key` (or
    the batch's recorded `masks`), dropout seeded from `key`, BatchNorm normalising with batch
    statistics and returning its updated running statistics. `out` holds the model's float32
    outputs (plus `pose_refined` when `cfg.refine`). Tests of dropout statistics call it
    directly, so they exercise exactly the code that trains.
    """

    def forward(params, batch_stats, batch, key):
        mask_key, dropout_key = jax.random.split(key)
        masks = batch.get("masks")  # given masks (recorded ones, test fixtures) win
        if masks is None:
            masks = _masks(cfg, mask_key, batch["input_2d"].shape[0], use=True)
        # Fresh Variables inside this trace, so that BatchNorm and the seeds may be written.
        model = nnx.merge(graphdef, *jax.tree.map(lambda v: v, (params, batch_stats, rest)))
        draw_dropout_seeds(model, dropout_key)
        out = _forward(model, batch["input_2d"], masks)
        if cfg.refine:
            out["pose_refined"] = refine_centre(model, out["pose"], batch)
        return out, masks, nnx.state(model, nnx.BatchStat)

    return forward


def make_train_step(graphdef, rest, cfg: StepConfig, tx: optax.GradientTransformation):
    """Builds `train_step(state, batch, key, lr) -> (state, metrics)` (not yet jitted).

    `batch` holds `input_2d` (and `gt_3d` for Stage II); an optional `masks` entry (a `Masks`)
    replaces the masks the step would draw from `key`.

    Args:
      graphdef: static NNX graph of the model in training mode.
      rest: the model's remaining state (dropout seeds), drawn anew from `key` every step.
      cfg: static step facts.
      tx: gradient transformation producing unit-lr updates (Adam/AMSGrad direction); the
        learning rate is applied here so that changing it per epoch needs no recompile.
    """
    forward = make_train_forward(graphdef, rest, cfg)

    def train_step(state: TrainState, batch, key, lr):
        batch = pipeline.materialize(batch)

        def loss_fn(params):
            out, masks, batch_stats = forward(params, state.batch_stats, batch, key)
            loss, metrics = _loss(cfg, out, batch, masks)
            return loss, (metrics, batch_stats)

        grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = jax.tree.map(lambda p, u: p - lr * u.astype(p.dtype), state.params, updates)
        metrics["grad_norm"] = optax.tree.norm(grads)
        new_state = state.replace(
            params=params, batch_stats=batch_stats, opt_state=opt_state, step=state.step + 1
        )
        return new_state, metrics

    return train_step


def _output_name(cfg: StepConfig) -> str:
    return "recon" if cfg.stage == "pretrain" else "pose"


def tta_forward(model, x: jax.Array, masks: Masks | None, cfg: StepConfig) -> jax.Array:
    """The model's joint output on `x`, after flip test-time augmentation when `cfg.test_flip`.

    The one inference core: the eval step, `Predictor` and the serving export all call it.

    The flipped input is computed here from `x`, with the same masks as the input (§1.10).
    How the two inputs run is a per-backend choice (`model.cfg.compute.tta_two_passes`):

    * "plain" (GPU, TPU): ONE forward pass over 2B samples, interleaved (sample i at row 2i,
      its mirror at 2i+1, so a batch sharded over devices stays local; per-sample masks
      repeated). This equals two passes over B wherever samples do not interact: BatchNorm in
      eval mode (running statistics) and masks shared by the pair, which is what evaluation
      uses.
    * "cpu" (XLA:CPU): two passes over B, measured faster there (experiments/README.md: the
      2B pass's larger activations cost about 20% of the evaluation throughput on 2 cores).

    Both give the same values to float32 rounding (tests/test_pipeline.py).

    Args:
      model: an NNX model in eval mode.
      x: (B, F, J, 2) input windows.
      masks: the batch's masks, or None (mask-free lifter).
      cfg: the step facts (stage, flip lists, test_flip).

    Returns:
      Stage II "pose" (B, F', J, 3), Stage I "recon" (B, F, J, 2), float32.
    """
    name = _output_name(cfg)
    if not cfg.test_flip:
        return _forward(model, x, masks)[name]
    x_flip = flip.flip_pose(x, *cfg.input_lr)
    if model.cfg.compute.tta_two_passes:
        out, out_flip = _forward(model, x, masks)[name], _forward(model, x_flip, masks)[name]
        return flip.tta_average(out, out_flip, cfg.joints_left, cfg.joints_right)
    b = x.shape[0]
    both = jnp.stack([x, x_flip], axis=1).reshape((2 * b, *x.shape[1:]))  # (2B, F, J, 2)
    if masks is not None:  # per-sample (B, F, J) masks: each pair shares its sample's mask
        masks = jax.tree.map(lambda m: jnp.repeat(m, 2, axis=0) if m.ndim == 3 else m, masks)
    out = _forward(model, both, masks)[name]
    out = out.reshape((b, 2, *out.shape[1:]))  # (B, 2, ...)
    return flip.tta_average(out[:, 0], out[:, 1], cfg.joints_left, cfg.joints_right)


def make_eval_step(graphdef, rest, cfg: StepConfig):
    """Builds `eval_step(params, batch_stats, batch, key) -> predictions` (not yet jitted).

    Returns per sample, for Stage II: `pose` (B, J, 3) centre-frame prediction after flip TTA
    with the root zeroed, `target` (B, J, 3) root-zeroed; for Stage I: `error` (B,), the mean
    2D distance between the reconstruction and the re-ordered input (Q8). The same masks serve
    both TTA passes (§1.10); `tta_forward` runs them as one forward over 2B or as two over B,
    by backend.
    """

    def eval_step(params, batch_stats, batch, key):
        batch = pipeline.materialize(batch)
        model = nnx.merge(graphdef, params, batch_stats, rest)
        x = batch["input_2d"]
        masks = eval_masks(cfg, key, x.shape[0])
        pred = tta_forward(model, x, masks, cfg)
        if cfg.refine:  # §2.8: the refined centre frame (after TTA) is what is evaluated
            pred = refine_centre(model, pred, batch)
        if cfg.stage == "pretrain":  # per-sample mean 2D error over all frames (§3.2)
            target = losses.pretrain_target(x, masks.temporal)  # (B, F, J, 2)
            return {"error": jnp.linalg.norm(pred - target, axis=-1).mean(axis=(1, 2))}
        pose = pred[:, 0].at[:, cfg.root].set(0.0)  # (B, J, 3)
        target = batch["gt_3d"][:, 0].at[:, cfg.root].set(0.0)  # (B, J, 3)
        return {"pose": pose, "target": target}

    return eval_step
