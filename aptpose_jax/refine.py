"""The refine step of P-STMO (§2.8): back-project the centre-frame 2D input, then blend.

`uvd_to_xyz` is the reference's `get_uvd2xyz`: the centre-frame 2D keypoints (u, v) in
normalised screen coordinates, the predicted per-joint depth and the ground-truth root depth
are back-projected through the pinhole camera of the 9-vector `cam` = [fx, fy, cx, cy, k1, k2,
k3, p1, p2] (normalised, §1.3; distortion is ignored, as in the reference), then made
root-relative. `refine_centre` feeds that and the prediction to the model's refine module.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def uvd_to_xyz(uv: jax.Array, depth: jax.Array, root_depth: jax.Array, cam: jax.Array):
    """Back-projects (u, v, depth) to root-relative camera coordinates (reference §2.8).

    z_0 = root_depth and z_j = depth_j + root_depth for j > 0 (the predicted depth of joint 0
    is replaced by the ground-truth root depth); (x, y)_j = (uv_j - c) * z_j / f; the result
    minus joint 0.

    Args:
      uv: (B, J, 2) normalised 2D keypoints of the centre frame.
      depth: (B, J) predicted depths (the z output of the lifter, root-relative).
      root_depth: (B,) ground-truth absolute depth of joint 0 (metres, camera frame).
      cam: (B, 9) normalised intrinsics; only f = cam[:, :2] and c = cam[:, 2:4] are used.

    Returns:
      (B, J, 3) root-relative camera coordinates; joint 0 is exactly zero.
    """
    z = depth.at[:, 0].set(0.0) + root_depth[:, None]  # (B, J)
    f, c = cam[:, None, :2], cam[:, None, 2:4]  # (B, 1, 2)
    xy = (uv - c) * z[..., None] / f  # (B, J, 2)
    xyz = jnp.concatenate([xy, z[..., None]], axis=-1)  # (B, J, 3)
    return xyz - xyz[:, :1]


def refine_centre(model, pose: jax.Array, batch: dict) -> jax.Array:
    """The refined centre-frame pose (B, 1, J, 3) of a Stage II prediction `pose` (B, 1, J, 3).

    Uses the centre frame of `batch["input_2d"]` (B, F, J, 2) (the un-flipped input, also in
    test-time augmentation), the root depth of `batch["gt_3d"]` (B, F or 1, J, 3; joint 0
    holds the absolute root, §1.4) and `batch["cam"]` (B, 9). Joint 0 is the root here, as in
    the reference (refine is a Human3.6M option).
    """
    x = batch["input_2d"]
    gt = batch["gt_3d"]
    uv = x[:, x.shape[1] // 2]  # (B, J, 2)
    root_depth = gt[:, gt.shape[1] // 2, 0, 2]  # (B,)
    xyz = uvd_to_xyz(uv, pose[:, 0, :, 2], root_depth, batch["cam"])
    return model.refine_pose(pose, xyz[:, None].astype(pose.dtype))  # (B, 1, J, 3)
