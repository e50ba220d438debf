"""Training losses: Stage I 2D reconstruction (§3.2) and Stage II pose + bone-vector loss (§3.3).

All losses are jit-compatible jax functions on joints-last arrays; units are those of the data
(H36M 3D in metres, 3DHP in millimetres, 2D in normalised screen units).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from aptpose_jax.datasets.skeleton import H36M_BONE_PAIRS
from aptpose_jax.metrics import mpjpe, mpjve


def pretrain_target(x: jax.Array, temporal: jax.Array) -> jax.Array:
    """Stage I target: the clean input re-ordered as the decoder output (Q8).

    `target = concat(x[:, ~temporal], x[:, temporal], axis=1)`: visible frames in time order,
    then masked frames in time order. A stable argsort of the boolean mask gives that order
    with a static shape, so it works under jit.

    Args:
      x: (B, F, J, 2) clean (un-masked) 2D input.
      temporal: (F,) bool, True = masked frame.

    Returns:
      (B, F, J, 2) re-ordered input.
    """
    order = jnp.argsort(jnp.asarray(temporal, dtype=jnp.int32), stable=True)  # (F,)
    return jnp.take(x, order, axis=1)  # (B, F, J, 2)


def pretrain_loss(recon: jax.Array, x: jax.Array, temporal: jax.Array) -> jax.Array:
    """Stage I loss (§3.2): `mpjpe(recon, pretrain_target(x, temporal))` over ALL F frames (Q8).

    Args:
      recon: (B, F, J, 2) decoder output, visible frames first then masked frames.
      x: (B, F, J, 2) clean input.
      temporal: (F,) bool temporal mask.

    Returns:
      Scalar mean Euclidean distance (normalised 2D units).
    """
    return mpjpe(recon, pretrain_target(x, temporal))


def bone_vectors(
    poses: jax.Array, bone_pairs: Sequence[tuple[int, int]] = H36M_BONE_PAIRS
) -> jax.Array:
    """Bone vectors `P[..., a_k, :] - P[..., b_k, :]` (parent minus child) for pairs (a_k, b_k).

    Args:
      poses: (..., J, 3) poses.
      bone_pairs: K (parent, child) pairs; the H36M pairs are also used on 3DHP joints (Q22).

    Returns:
      (..., K, 3) bone vectors.
    """
    parents = jnp.asarray([a for a, _ in bone_pairs])
    children = jnp.asarray([b for _, b in bone_pairs])
    return jnp.take(poses, parents, axis=-2) - jnp.take(poses, children, axis=-2)  # (..., K, 3)


def zero_root(poses: jax.Array, root: int = 0) -> jax.Array:
    """Sets joint `root` to 0 (the reference zeroes rather than subtracts, §3.3, §1.11)."""
    return poses.at[..., root, :].set(0.0)


def lifter_loss(
    outputs: Mapping[str, jax.Array],
    gt_3d: jax.Array,
    *,
    root: int = 0,
    weights: Sequence[float] = (1.0, 1.0, 0.5, 0.5),
    bone_pairs: Sequence[tuple[int, int]] = H36M_BONE_PAIRS,
    velocity_weight: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Stage II loss (§3.3).

    With `pad = (F - 1) // 2`, `target = gt` with joint `root` set to 0, `target_c =
    target[:, pad:pad+1]`, `bones = bone_vectors(gt)` computed from the UN-zeroed gt (so the
    bones at the root contain the absolute root position, Q12) and `bones_c = bones[:,
    pad:pad+1]`::

        loss = w0 * mpjpe(pose_seq, target) + w1 * mpjpe(pose, target_c)
             + w2 * mpjpe(bones_seq, bones) + w3 * mpjpe(bones, bones_c)
             [+ velocity_weight * MPJVE(pose_seq, target) along time]

    Predictions are NOT root-zeroed (the network learns to output 0 at the root, §3.3).
    The velocity term is the 3DHP `-w_v` option (reference default 0); we difference along
    time (Q21 fixed). Weights: `run.py` hard-codes (1, 1, 0.5, 0.5); 3DHP / in-the-wild read
    them from `-wp_m -wp_s -wb_m -wb_s` (same defaults).

    Args:
      outputs: model outputs "pose_seq" (B, F, J, 3), "pose" (B, 1, J, 3),
        "bones_seq" (B, F, K, 3), "bones" (B, 1, K, 3).
      gt_3d: (B, F, J, 3) ground truth, root joint absolute, others root-relative.
      root: root joint index (0 for H36M, 14 for 3DHP).
      weights: (w_pose_seq, w_pose, w_bones_seq, w_bones).
      bone_pairs: K (parent, child) pairs (H36M pairs also on 3DHP, Q22).
      velocity_weight: weight of the velocity term; 0 leaves it out.

    Returns:
      (loss, terms) with terms "pose_seq", "pose", "bones_seq", "bones" (unweighted) and
      "velocity" when `velocity_weight != 0`.
    """
    if len(weights) != 4:
        raise ValueError(f"lifter_loss: weights must have 4 entries, got {weights}")
    frames = gt_3d.shape[1]
    pad = (frames - 1) // 2
    target = zero_root(gt_3d, root)  # (B, F, J, 3)
    bones_gt = bone_vectors(gt_3d, bone_pairs)  # (B, F, K, 3), Q12: from the un-zeroed gt
    terms = {
        "pose_seq": mpjpe(outputs["pose_seq"], target),
        "pose": mpjpe(outputs["pose"], target[:, pad : pad + 1]),
        "bones_seq": mpjpe(outputs["bones_seq"], bones_gt),
        "bones": mpjpe(outputs["bones"], bones_gt[:, pad : pad + 1]),
    }
    loss = sum(
        w * terms[k]
        for w, k in zip(weights, ("pose_seq", "pose", "bones_seq", "bones"), strict=True)
    )
    if velocity_weight:
        terms["velocity"] = mpjve(outputs["pose_seq"], target, time_axis=1).mean()
        loss = loss + velocity_weight * terms["velocity"]
    return loss, terms


def refine_loss(refined: jax.Array, gt_3d: jax.Array, root: int = 0) -> jax.Array:
    """§2.8 refine loss: MPJPE of the refined centre frame (B, 1, J, 3) against the
    root-zeroed ground truth of the centre frame (`gt_3d` (B, F, J, 3), F odd)."""
    pad = gt_3d.shape[1] // 2
    return mpjpe(refined, zero_root(gt_3d[:, pad : pad + 1], root))
