"""World-frame poses for display: the rotation VideoPose3D uses for in-the-wild rendering.

A video has no camera calibration, so VideoPose3D (and P-STMO's video script, §1.12) rotate the
root-relative camera-frame prediction with a fixed camera orientation — that of Human3.6M
subject S1, camera 0 — and shift the height so that the lowest joint of the whole sequence
stands on the ground (z = 0). Z is up in the result.
"""

from __future__ import annotations

import numpy as np

from aptpose_jax.datasets.camera import camera_extrinsics, camera_to_world, world_to_camera

# (w, x, y, z) quaternion of H36M S1 camera 0 = [0.1407, -0.1501, -0.7552, 0.6223] (§1.12).
RENDER_ROTATION = camera_extrinsics("S1", 0)[0]


def to_world(poses_cam: np.ndarray) -> tuple[np.ndarray, float]:
    """Camera-frame (T, J, 3) poses -> (world (T, J, 3), height shift) for rendering.

    world = camera_to_world(poses, RENDER_ROTATION, 0) with `shift` = min z subtracted from z.
    """
    world = camera_to_world(poses_cam, RENDER_ROTATION, np.zeros(3, np.float32))
    shift = float(np.min(world[..., 2]))
    world[..., 2] -= shift
    return world, shift


def to_camera(poses_world: np.ndarray, shift: float) -> np.ndarray:
    """Inverse of `to_world`: world-frame (T, J, 3) poses and their shift -> camera frame."""
    lifted = np.array(poses_world, np.float32, copy=True)
    lifted[..., 2] += shift
    return world_to_camera(lifted, RENDER_ROTATION, np.zeros(3, np.float32))
