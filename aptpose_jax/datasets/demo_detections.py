"""Detector-like 2D keypoints for the synthetic demo data: projection, noise and COCO layout.

The demo's "CPN" and "Detectron" files imitate what a 2D detector gives on Human3.6M video:
the exact projection of the 3D skeleton plus a constant per-joint definition offset,
temporally correlated jitter (AR(1), larger on the extremities) and occasional short outlier
bursts. The COCO file adds facial keypoints (nose, eyes, ears) placed on the head from the
3D neck/nose and head-top joints, and COCO-style hips set a little above the mocap hips.
"""

from __future__ import annotations

import numpy as np

from aptpose_jax.datasets import camera as cam_lib

# Per-joint noise scale (H36M 17-joint order): extremities are harder to localise.
_H36M_JOINT_NOISE = np.array(
    [1.0, 1.0, 1.2, 1.6, 1.0, 1.2, 1.6, 1.0, 0.9, 0.9, 1.1, 1.0, 1.3, 1.7, 1.0, 1.3, 1.7]
)
# COCO order: face points are sharp, wrists/ankles are not.
_COCO_JOINT_NOISE = np.array(
    [0.7, 0.7, 0.7, 0.9, 0.9, 1.0, 1.0, 1.3, 1.3, 1.7, 1.7, 1.3, 1.3, 1.2, 1.2, 1.6, 1.6]
)


def project_world(world: np.ndarray, subject: str, cam_idx: int) -> np.ndarray:
    """Projects world points (N, J, 3) in metres into camera `cam_idx` of `subject`, in pixels.

    Same path as the loaders: world -> camera frame (float32, §1.4), then the full distortion
    model with the pixel intrinsics (§1.3). Returns (N, J, 2) float32.
    """
    quat, trans = cam_lib.camera_extrinsics(subject, cam_idx)
    x_cam = cam_lib.world_to_camera(world, quat, trans)  # (N, J, 3)
    intrinsic = cam_lib.camera_intrinsic_vector(subject, cam_idx, normalized=False)
    return cam_lib.project_to_2d(x_cam, intrinsic).astype(np.float32)


def coco_keypoints_3d(h36m17: np.ndarray) -> np.ndarray:
    """COCO 17-keypoint positions (N, 17, 3) derived from an H36M 17-joint pose (N, 17, 3).

    The face frame: up = neck/nose -> head top, lateral = right -> left shoulder, forward =
    up x lateral (the subject's facing direction).
    """
    neck, top = h36m17[:, 9], h36m17[:, 10]  # (N, 3)
    up = top - neck
    head_len = np.linalg.norm(up, axis=-1, keepdims=True)  # (N, 1)
    up = up / head_len
    lateral = h36m17[:, 11] - h36m17[:, 14]
    forward = np.cross(up, lateral)
    forward /= np.linalg.norm(forward, axis=-1, keepdims=True)
    lateral = np.cross(forward, up)  # unit, orthogonal to up and forward

    def face(along_up: float, ahead: float, side: float) -> np.ndarray:
        return neck + head_len * (along_up * up + ahead * forward + side * lateral)

    out = np.empty_like(h36m17)
    out[:, 0] = face(0.35, 0.80, 0.0)  # nose
    out[:, 1], out[:, 2] = face(0.60, 0.65, 0.28), face(0.60, 0.65, -0.28)  # eyes l, r
    out[:, 3], out[:, 4] = face(0.50, 0.0, 0.65), face(0.50, 0.0, -0.65)  # ears l, r
    h36m_for_coco = (11, 14, 12, 15, 13, 16, 4, 1, 5, 2, 6, 3)  # shoulders .. ankles, l/r
    out[:, 5:] = h36m17[:, h36m_for_coco]
    # COCO hips are annotated higher than the mocap hip joint centres.
    out[:, 11:13] += 0.25 * (h36m17[:, 7:8] - h36m17[:, 0:1])
    return out


def detector_noise(
    rng: np.random.Generator,
    kp: np.ndarray,
    layout: str,
    sigma_px: float,
    outlier_rate: float,
) -> np.ndarray:
    """Adds detector-like errors to exact keypoints (N, J, 2) in pixels; returns float32.

    Args:
      rng: random generator (one per sequence and camera).
      kp: (N, J, 2) exact pixel keypoints.
      layout: "h36m" or "coco" (selects the per-joint noise scales).
      sigma_px: stationary standard deviation of the correlated jitter for a unit joint.
      outlier_rate: expected outlier bursts per joint and frame.
    """
    n, n_joints, _ = kp.shape
    scale = (_H36M_JOINT_NOISE if layout == "h36m" else _COCO_JOINT_NOISE)[:n_joints]
    sigma = sigma_px * scale[:, None]  # (J, 1)
    bias = rng.normal(0.0, 0.6, (n_joints, 2)) * sigma  # joint-definition offset per camera
    rho = 0.85  # frame-to-frame correlation of the jitter (50 fps)
    innov = rng.normal(0.0, 1.0, (n, n_joints, 2)) * sigma * np.sqrt(1 - rho**2)
    jitter = np.empty_like(innov)
    jitter[0] = innov[0] / np.sqrt(1 - rho**2)
    for i in range(1, n):  # AR(1) along time; N is a few hundred frames
        jitter[i] = rho * jitter[i - 1] + innov[i]
    out = kp + bias + jitter
    n_bursts = rng.poisson(outlier_rate * n * n_joints)
    for _ in range(n_bursts):
        start, joint = rng.integers(0, n), rng.integers(0, n_joints)
        length = rng.integers(1, 6)
        offset = rng.normal(0.0, 1.0, 2)
        offset *= rng.uniform(15.0, 45.0) / max(np.linalg.norm(offset), 1e-6)
        out[start : start + length, joint] += offset
    return out.astype(np.float32)
