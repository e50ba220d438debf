"""`infer --with-gt`: the 3D ground truth of a video's sequence, and the prediction's error.

Two sources (`read_ground_truth`):

* the keypoint file itself (`--with-gt` alone): a VideoPose3D custom npz that also holds
  `positions_3d[video]` (T, 17, 3), Human3.6M joint order, camera frame, metres (the demo's
  `data_2d_custom_demo.npz` does, `datasets/demo_video.py`);
* a Human3.6M sequence (`--with-gt data_3d_h36m.npz:S9/Walking/1`): the 32-joint world mocap
  of SUBJECT/ACTION, its 17 kept joints moved into camera CAMERA's frame (0-3) with the
  published extrinsics (`datasets/camera.py`), as the loader does (§1.4).

`compare` root-aligns both (joint 0 at the origin) and scores the common frames: per-frame
MPJPE, the sequence's P1 (their mean) and P2 (Procrustes-aligned, `metrics.p_mpjpe`), in mm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aptpose_jax import metrics
from aptpose_jax.datasets.camera import camera_extrinsics, world_to_camera
from aptpose_jax.datasets.safe_npz import load_npz
from aptpose_jax.datasets.skeleton import H36M_KEPT_JOINTS
from aptpose_jax.errors import UserError

FROM_KEYPOINTS = "keypoints"  # `--with-gt` without a value: the keypoint file's own 3D


def _from_keypoint_file(path: Path, entry: str | None) -> tuple[np.ndarray, str]:
    """`positions_3d[video]` of a VideoPose3D custom npz (see module docstring)."""
    no_3d = (
        f"{path}: --with-gt: the keypoint file holds no 3D ground truth ('positions_3d'); "
        "give --with-gt DATA_3D.npz:SUBJECT/ACTION/CAMERA for a Human3.6M sequence"
    )
    if path.suffix.lower() != ".npz":
        raise UserError(no_3d)
    try:
        data = load_npz(path)
    except Exception as e:  # noqa: BLE001 - a damaged file: the keypoint reader says more
        raise UserError(f"{path}: cannot read it for --with-gt ({e})") from None
    truth, videos = data.get("positions_3d"), data.get("positions_2d")
    if not isinstance(truth, dict) or not truth:
        raise UserError(no_3d)
    if entry is None and isinstance(videos, dict) and len(videos) == 1:
        entry = next(iter(videos))
    if entry not in truth:
        raise UserError(f"{path}: --with-gt: no 'positions_3d' for video {entry!r}")
    return np.asarray(truth[entry], np.float32), f"{path}: positions_3d[{entry!r}]"


def _from_h36m(spec: str) -> tuple[np.ndarray, str]:
    """FILE:SUBJECT/ACTION/CAMERA -> (N, 17, 3) camera-frame metres of that sequence."""
    file, _, seq = spec.rpartition(":")
    parts = seq.split("/")
    if not file or len(parts) != 3 or not parts[2].strip().isdigit():
        raise UserError(
            f"--with-gt {spec!r}: give DATA_3D.npz:SUBJECT/ACTION/CAMERA (camera 0-3), e.g. "
            "data/h36m/data_3d_h36m.npz:S9/Walking/1, or --with-gt alone for a keypoint file "
            "that holds 'positions_3d'"
        )
    subject, action, cam = parts[0], parts[1], int(parts[2])
    if not Path(file).is_file():
        raise UserError(f"--with-gt: {file} not found")
    try:
        world = load_npz(file)["positions_3d"][subject][action]
    except KeyError:
        raise UserError(f"--with-gt: {file} has no positions_3d[{subject!r}][{action!r}]") from None
    except Exception as e:  # noqa: BLE001
        raise UserError(f"--with-gt: cannot read {file} ({e})") from None
    world = np.asarray(world, np.float32)
    if world.ndim != 3 or world.shape[1:] != (32, 3):
        raise UserError(f"--with-gt: {file} {subject}/{action} has shape {world.shape}; "
                        "expected (N, 32, 3) world metres")  # fmt: skip
    try:
        quat, trans = camera_extrinsics(subject, cam)
    except (KeyError, ValueError) as e:
        raise UserError(f"--with-gt {spec!r}: {e.args[0] if e.args else e}") from None
    pose = world_to_camera(world[:, list(H36M_KEPT_JOINTS)], quat, trans)  # (N, 17, 3)
    return pose, f"{file}:{subject}/{action}/{cam}"


def read_ground_truth(spec: str, keypoints: str | Path, entry: str | None = None):
    """The 3D ground truth named by `--with-gt` (see module docstring).

    Returns:
      ((T, 17, 3) float32 camera-frame metres, a description of the source).

    Raises:
      UserError: the keypoint file has no 3D, or the sequence is not found.
    """
    if spec == FROM_KEYPOINTS:
        pose, source = _from_keypoint_file(Path(keypoints), entry)
    else:
        pose, source = _from_h36m(spec)
    if pose.ndim != 3 or pose.shape[1:] != (17, 3) or not np.isfinite(pose).all():
        raise UserError(f"{source}: expected finite (frames, 17, 3) 3D poses, got {pose.shape}")
    return pose, source


def compare(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, dict]:
    """Scores predictions against the ground truth on their common first frames.

    Args:
      pred: (T, 17, 3) predicted camera-frame poses, metres (root-relative or not).
      truth: (N, 17, 3) ground truth, camera frame, metres.

    Returns:
      (root-aligned truth (n, 17, 3) with n = min(T, N), the summary entry: per-frame MPJPE
      after root alignment, P1 = its mean, P2 = mean Procrustes-aligned MPJPE, all mm).
    """
    n = min(len(pred), len(truth))
    gt = truth[:n] - truth[:n, :1]  # (n, 17, 3) root at the origin
    pr = pred[:n] - pred[:n, :1]
    per_frame = np.asarray(metrics.mpjpe_per_pose(pr, gt)) * 1000.0  # (n,) mm
    p2 = np.asarray(metrics.p_mpjpe(pr, gt)) * 1000.0
    summary = {
        "frames_compared": n,
        "mpjpe_per_frame_mm": [float(e) for e in per_frame],
        "p1_mm": float(per_frame.mean()),
        "p2_mm": float(np.nanmean(p2)),
    }
    return gt.astype(np.float32), summary
