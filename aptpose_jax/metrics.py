"""Pose errors: MPJPE, P-MPJPE (Procrustes), N-MPJPE, MPJVE, 3DHP PCK and AUC.

Every function accepts numpy or jax arrays and returns the same kind (numpy inputs are computed
in float64; jax inputs stay in their dtype and are jit-compatible). Layout is joints-last:
poses (..., J, D), per-joint errors (..., J). Units are those of the inputs (H36M: metres,
3DHP: millimetres, §1 conventions).

Sources: APTPose / P-STMO `common/utils.py` (inherited from VideoPose3D, Pavllo et al. 2019)
for MPJPE, P-MPJPE and the velocity error (§3.1); the MPI-INF-3DHP MATLAB scripts
(`mpii_compute_3d_pck.m`, `mpii_get_pck_auc_joint_groups.m`) for PCK/AUC (§1.11).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from aptpose_jax.datasets.skeleton import MPI3DHP_PCK_JOINTS

# AUC thresholds of the official 3DHP script: 0, 5, ..., 150 mm (31 values).
AUC_THRESHOLDS_MM: tuple[float, ...] = tuple(float(t) for t in range(0, 151, 5))


def _xp(*arrays):
    """jax.numpy if any input is a jax array (or tracer), else numpy."""
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def _as_float(xp, a):
    return np.asarray(a, dtype=np.float64) if xp is np else a


def joint_errors(pred, target):
    """Per-joint Euclidean error `||pred - target||_2`: (..., J, D) -> (..., J)."""
    xp = _xp(pred, target)
    return xp.linalg.norm(_as_float(xp, pred) - _as_float(xp, target), axis=-1)


def mpjpe(pred, target):
    """MPJPE: mean over all leading axes and joints of `||pred - target||_2` (a scalar).

    This is the reference `mpjpe` (§3.1), used both as training loss and as P1.
    """
    return joint_errors(pred, target).mean()


def mpjpe_per_pose(pred, target):
    """MPJPE of each pose: (..., J, D) -> (...), the mean over joints of the joint errors."""
    return joint_errors(pred, target).mean(axis=-1)


def p_mpjpe(pred, target):
    """P-MPJPE (protocol 2): MPJPE after a per-pose similarity (Procrustes) alignment.

    For each pose (§3.1): centre prediction Y and target X on their joint means, divide each
    by its Frobenius norm, `H = X0^T Y0 = U S V^T`, `R = V U^T`; if `det(R) < 0` negate the last
    column of V and the last singular value (no reflections) and recompute R; scale
    `a = trace(S) |X0| / |Y0|`, translation `t = muX - a muY R`; aligned = `a Y R + t`;
    error = mean joint distance to X. Unlike the reference accumulation (Q14) the value is
    kept per pose, so callers can aggregate it exactly per action.

    Args:
      pred: (..., J, 3) predictions.
      target: (..., J, 3) ground truth.

    Returns:
      (...) one error per pose. A pose whose centred prediction is all zero gives NaN.
    """
    xp = _xp(pred, target)
    pred, target = _as_float(xp, pred), _as_float(xp, target)
    mu_x = target.mean(axis=-2, keepdims=True)  # (..., 1, 3)
    mu_y = pred.mean(axis=-2, keepdims=True)
    x0, y0 = target - mu_x, pred - mu_y
    norm_x = xp.sqrt((x0**2).sum(axis=(-2, -1), keepdims=True))  # (..., 1, 1)
    norm_y = xp.sqrt((y0**2).sum(axis=(-2, -1), keepdims=True))
    x0, y0 = x0 / norm_x, y0 / norm_y
    h = xp.swapaxes(x0, -1, -2) @ y0  # (..., 3, 3)
    u, s, vt = xp.linalg.svd(h)
    v = xp.swapaxes(vt, -1, -2)
    r = v @ xp.swapaxes(u, -1, -2)  # (..., 3, 3)
    # Reflection fix: flip the axis of the smallest singular value when det(R) < 0.
    sign_det = xp.where(xp.linalg.det(r) < 0, -1.0, 1.0).astype(s.dtype)  # (...,)
    fix = xp.concatenate([xp.ones_like(s[..., :-1]), sign_det[..., None]], axis=-1)  # (..., 3)
    v = v * fix[..., None, :]
    s = s * fix
    r = v @ xp.swapaxes(u, -1, -2)
    a = s.sum(axis=-1)[..., None, None] * norm_x / norm_y  # (..., 1, 1)
    t = mu_x - a * (mu_y @ r)
    aligned = a * (pred @ r) + t  # (..., J, 3)
    return xp.linalg.norm(aligned - target, axis=-1).mean(axis=-1)


def n_mpjpe(pred, target):
    """N-MPJPE (an extra; not in the reference code): MPJPE after per-pose scale alignment.

    Scale `s = sum(pred * target) / sum(pred * pred)` over the joints and coordinates of each
    pose (the least-squares scale, VideoPose3D definition), then the per-pose MPJPE of
    `s * pred`. Apply it to root-relative poses.

    Returns:
      (...) one error per pose.
    """
    xp = _xp(pred, target)
    pred, target = _as_float(xp, pred), _as_float(xp, target)
    num = (pred * target).sum(axis=(-2, -1), keepdims=True)  # (..., 1, 1)
    den = (pred * pred).sum(axis=(-2, -1), keepdims=True)
    return mpjpe_per_pose(num / den * pred, target)


def mpjve(pred, target, *, time_axis: int = -3):
    """MPJVE: mean per-joint velocity error along the TIME axis.

    `v_t = x_{t+1} - x_t` for prediction and target along `time_axis`, then the per-joint
    Euclidean error of the velocities averaged over joints. The reference
    `mean_velocity_error` differences the first axis, which is the batch axis for (B, F, J, 3)
    inputs (Q21); we difference time instead (fixed, DESIGN.md).

    Args:
      pred: (..., F, ..., J, D) with time on `time_axis` (default -3: (..., F, J, D)).
      target: same shape.
      time_axis: the frame axis; must not be one of the last two axes.

    Returns:
      Per-step errors with the J and D axes reduced and the time axis of length F-1, e.g.
      (B, F, J, 3) -> (B, F-1). Take `.mean()` for the scalar MPJVE.
    """
    xp = _xp(pred, target)
    pred, target = _as_float(xp, pred), _as_float(xp, target)
    if pred.shape != target.shape:
        raise ValueError(f"mpjve: shapes differ, pred {pred.shape} vs target {target.shape}")
    axis = time_axis % pred.ndim
    if axis >= pred.ndim - 2:
        raise ValueError(
            f"mpjve: time_axis={time_axis} points at the joint or coordinate axis of an array "
            f"of shape {pred.shape}; use the frame axis (default -3 for (..., F, J, D))"
        )
    if pred.shape[axis] < 2:
        raise ValueError(f"mpjve needs at least 2 frames on axis {axis}, got {pred.shape}")
    dv = xp.diff(pred, axis=axis) - xp.diff(target, axis=axis)
    return xp.linalg.norm(dv, axis=-1).mean(axis=-1)


def _select_joints(xp, errors, joints):
    if joints is None:
        return errors
    return errors[..., xp.asarray(list(joints))]  # (..., len(joints))


def pck(errors, threshold: float = 150.0, joints=MPI3DHP_PCK_JOINTS):
    """PCK in percent: share of (pose, joint) errors strictly below `threshold`.

    Official 3DHP definition (`mpii_compute_3d_pck.m`): `error < 150` mm over the 14 joints
    0..13 (head_top .. left_ankle; pelvis, spine and head excluded), pooled over frames and
    joints (joint-count weighted over the joint groups).

    Args:
      errors: (..., J) per-joint errors (e.g. from `joint_errors`), same unit as `threshold`.
      threshold: distance threshold (150 mm).
      joints: joint indices to score; None = all joints.

    Returns:
      Scalar percentage in [0, 100].
    """
    xp = _xp(errors)
    e = _select_joints(xp, errors, joints)
    return 100.0 * (e < threshold).mean()


def pck_curve(errors, thresholds=AUC_THRESHOLDS_MM, joints=MPI3DHP_PCK_JOINTS):
    """PCK (percent) at each threshold: (T,) for thresholds (T,)."""
    xp = _xp(errors)
    e = _select_joints(xp, errors, joints)
    t = xp.asarray(thresholds, dtype=e.dtype)
    hits = e[..., None] < t  # (..., K, T)
    return 100.0 * hits.reshape(-1, t.shape[0]).mean(axis=0)  # (N*K, T) -> (T,)


def auc(errors, thresholds=AUC_THRESHOLDS_MM, joints=MPI3DHP_PCK_JOINTS):
    """AUC in percent: mean of the PCK curve over thresholds 0, 5, ..., 150 mm (31 values).

    Official 3DHP definition (`mpii_compute_3d_pck.m`, `100 * sum(pck_curve) / numel(thresh)`).
    The threshold 0 always scores 0 (strict `<`), as in the official script.
    """
    return pck_curve(errors, thresholds, joints).mean()
