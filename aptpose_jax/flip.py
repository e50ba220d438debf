"""Horizontal flip of poses and flip test-time augmentation (§1.10).

The flip negates coordinate 0 (x / u) and swaps the left and right joint lists. It is its own
inverse, so the same function also "un-flips" outputs computed on flipped inputs. Works on
numpy and jax arrays of layout (..., J, D) (joints-last).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _swap_index(n_joints: int, joints_left: Sequence[int], joints_right: Sequence[int]):
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
      The flipped array, same type, shape and dtype as `x`.
    """
    perm = _swap_index(x.shape[-2], joints_left, joints_right)
    sign = np.ones(x.shape[-1], dtype=x.dtype)
    sign[0] = -1
    return x[..., perm, :] * sign  # (..., J, D)


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
