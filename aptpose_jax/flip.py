"""The horizontal mirror of poses and cameras, and flip test-time augmentation (§1.8, §1.10).

One implementation serves every user: the host window gather (`datasets/windows.py`), the
device window gather (`pipeline.py`) and the evaluation step's test-time augmentation
(`steps.tta_forward`). The mirror negates coordinate 0 (x / u) and swaps the left and right
joint lists; on a 9-vector camera [fx, fy, cx, cy, k1, k2, k3, p1, p2] it negates cx and p1.
It is its own inverse, so the same function also "un-flips" outputs computed on flipped
inputs. Every function works on numpy and jax arrays of layout (..., J, D) (joints-last) and
is bitwise the same on both (a permutation and multiplications by +-1 are exact).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Flipping the 9-vector [fx, fy, cx, cy, k1, k2, k3, p1, p2] negates cx and p1 (§1.8).
CAM_FLIP_ENTRIES = (2, 7)


def swap_permutation(n_joints: int, joints_left: Sequence[int], joints_right: Sequence[int]):
    """(J,) int index that swaps the left and right joints: `flipped[..., j] = x[..., perm[j]]`."""
    if len(joints_left) != len(joints_right):
        raise ValueError(
            f"flip: joints_left and joints_right must have equal length, got {joints_left} and "
            f"{joints_right}"
        )
    perm = np.arange(n_joints)
    perm[list(joints_left)] = list(joints_right)
    perm[list(joints_right)] = list(joints_left)
    return perm


def flip_pose(x, joints_left: Sequence[int], joints_right: Sequence[int]):
    """Mirrors poses: negates coordinate 0 and swaps the left and right joints.

    Args:
      x: (..., J, D) numpy or jax array (2D or 3D poses, or bone-free per-joint outputs).
      joints_left: left joint indices, e.g. (4, 5, 6, 11, 12, 13) for H36M.
      joints_right: matching right joint indices, e.g. (1, 2, 3, 14, 15, 16).

    Returns:
      The flipped array, same type, shape and dtype as `x` (a new array).
    """
    perm = swap_permutation(x.shape[-2], joints_left, joints_right)
    sign = np.ones(x.shape[-1], dtype=x.dtype)
    sign[0] = -1
    return x[..., perm, :] * sign  # (..., J, D)


def flip_camera(cam):
    """Mirror of (..., 9) camera vectors: cx and p1 negated (§1.8); numpy or jax, new array."""
    sign = np.ones(cam.shape[-1], dtype=cam.dtype)
    sign[list(CAM_FLIP_ENTRIES)] = -1
    return cam * sign  # (..., 9)


def tta_average(out, out_on_flipped, joints_left: Sequence[int], joints_right: Sequence[int]):
    """Flip test-time augmentation: `(out + flip_pose(out_on_flipped)) / 2` (§1.10).

    Args:
      out: (..., J, D) model output on the original input.
      out_on_flipped: (..., J, D) model output on the flipped input (same masks, Q1).
      joints_left / joints_right: the lists used to flip the input.

    Returns:
      The averaged (..., J, D) output.

    Only for joint outputs: the reference averages the two bone-vector outputs *without*
    un-flipping them (Q13), which only changes its logged test loss, never the metrics; we do
    not reproduce that average.
    """
    return (out + flip_pose(out_on_flipped, joints_left, joints_right)) / 2
