"""In-the-wild 2D keypoints: VideoPose3D custom npz files and plain `.npy` arrays (§1.12).

Both give a 2D-only `PoseSequences` (poses_3d None) of COCO-order keypoints, normalised with
`normalize_screen_coordinates` (§1.5). `to_h36m=True` converts them to the H36M 17-joint layout
with `skeleton.coco_to_h36m` (and the flip lists follow); the reference feeds COCO order
unchanged (Q23), which is the default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aptpose_jax.datasets.camera import normalize_screen_coordinates
from aptpose_jax.datasets.safe_npz import load_npz
from aptpose_jax.datasets.sequences import PoseSequences, check_pose_array, require_keys
from aptpose_jax.datasets.skeleton import (
    COCO_JOINTS_LEFT,
    COCO_JOINTS_RIGHT,
    H36M_JOINTS_LEFT,
    H36M_JOINTS_RIGHT,
    coco_to_h36m,
)
from aptpose_jax.errors import DataKeyError, MissingFileError

# Frame size the P-STMO video script normalises with (§1.12).
VIDEO_WIDTH = 1000
VIDEO_HEIGHT = 1002


def _wild_sequences(names: list[str], poses: list[np.ndarray], to_h36m: bool) -> PoseSequences:
    if to_h36m:
        poses = [coco_to_h36m(p) for p in poses]
        left, right = H36M_JOINTS_LEFT, H36M_JOINTS_RIGHT
    else:
        left, right = COCO_JOINTS_LEFT, COCO_JOINTS_RIGHT
    return PoseSequences(
        name="wild", keys=[(n,) for n in names], poses_2d=poses, poses_3d=None,
        cameras=np.zeros((len(names), 9), np.float32), groups=list(names),
        subjects=list(names), joints_left_2d=left, joints_right_2d=right,
        cam_indices=[0] * len(names),
    )  # fmt: skip


def load_keypoints_npy(
    path: str | Path,
    *,
    width: float = VIDEO_WIDTH,
    height: float = VIDEO_HEIGHT,
    to_h36m: bool = False,
) -> PoseSequences:
    """Loads a plain (T, 17, 2) COCO-order pixel keypoint array (`.npy`, no pickles).

    Args:
      path: the `.npy` file ((T, 17, C), C >= 2; only the first two channels are used).
      width, height: frame size in pixels (defaults: the P-STMO video script's 1000 x 1002).
      to_h36m: convert COCO order to the H36M layout.

    Returns:
      A one-sequence 2D-only PoseSequences named after the file stem.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: keypoint file not found")
    arr = np.load(path, allow_pickle=False)
    if arr.ndim == 3 and arr.shape[-1] > 2:
        arr = arr[..., :2]  # drop confidence scores
    kp = check_pose_array(
        arr, 2, str(path), "array", fix="Expected (frames, 17, 2) COCO-order pixel keypoints."
    )
    kp = normalize_screen_coordinates(kp, width, height)
    return _wild_sequences([path.stem], [kp], to_h36m).validate(str(path))


def load_custom_npz(
    path: str | Path, *, videos: list[str] | None = None, to_h36m: bool = False
) -> PoseSequences:
    """Loads a VideoPose3D custom-dataset file `data_2d_custom_<name>.npz`.

    Layout: `positions_2d[video]['custom'][0]` (T, 17, 2) COCO-order pixels and
    `metadata['video_metadata'][video]` = {'w': ..., 'h': ...} used for the normalisation.

    Args:
      path: the npz file.
      videos: subset of video names to load (default all, in file order).
      to_h36m: convert COCO order to the H36M layout.

    Returns:
      2D-only PoseSequences, one sequence per video, keys (video,).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"{path}: file not found (VideoPose3D's prepare_data_2d_custom.py writes "
            "data_2d_custom_<name>.npz)"
        )
    entries = load_npz(path)
    require_keys(entries, ("positions_2d", "metadata"), str(path))
    positions, meta = entries["positions_2d"], entries["metadata"]
    video_meta = meta.get("video_metadata", {}) if isinstance(meta, dict) else {}
    names = list(positions) if videos is None else list(videos)
    poses = []
    for name in names:
        if name not in positions:
            raise DataKeyError(f"{path}: no video {name!r}; has {sorted(positions)}")
        if name not in video_meta or not {"w", "h"} <= set(video_meta[name]):
            raise DataKeyError(f"{path}: metadata['video_metadata'][{name!r}] needs 'w' and 'h'")
        arr = np.asarray(positions[name]["custom"][0])
        if arr.ndim == 3 and arr.shape[-1] > 2:
            arr = arr[..., :2]
        kp = check_pose_array(arr, 2, str(path), f"positions_2d[{name!r}]['custom'][0]")
        size = video_meta[name]
        poses.append(normalize_screen_coordinates(kp, size["w"], size["h"]))
    return _wild_sequences(names, poses, to_h36m).validate(str(path))
