"""Human3.6M loader for the VideoPose3D-format npz files (§1.1-§1.7).

`load_h36m` reads `data_3d_h36m.npz` and `data_2d_h36m_<keypoints>.npz` (restricted unpickler,
`safe_npz`), keeps the 17 joints of §1.2, moves 3D poses into each camera's frame (float32),
makes joints 1..16 root-relative while the root keeps its absolute position (§1.4), normalises
the 2D per camera (§1.5), truncates 2D to the 3D length, and applies subset/downsample (§1.7).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aptpose_jax.datasets import camera as cam_lib
from aptpose_jax.datasets.safe_npz import load_npz
from aptpose_jax.datasets.sequences import PoseSequences, check_pose_array, require_keys
from aptpose_jax.datasets.skeleton import (
    COCO_JOINTS_LEFT,
    COCO_JOINTS_RIGHT,
    H36M_JOINTS_LEFT,
    H36M_JOINTS_RIGHT,
    H36M_KEPT_JOINTS,
)
from aptpose_jax.errors import DataError, DataKeyError, MissingFileError

OBTAIN_HINT = (
    "The official Human3.6M files come from VideoPose3D's DATASETS.md instructions "
    "(https://github.com/facebookresearch/VideoPose3D/blob/main/DATASETS.md; see also the "
    "APTPose/P-STMO README): data_3d_h36m.npz plus data_2d_h36m_cpn_ft_h36m_dbb.npz "
    "(or _gt / _detectron_pt_coco). Put them in the folder given as data.root "
    "(default ./data/). To run without them use the generated demo data: "
    "--config=configs/h36m_pretrain.py:demo (docs/datasets.md)."
)


def deterministic_random(min_value: int, max_value: int, data: str) -> int:
    """Seeded integer in [min_value, max_value) from SHA-256 of `data` (§1.7).

    First 4 bytes of the digest as little-endian uint32, divided by 2^32 - 1, scaled by the
    range, truncated, plus min_value.
    """
    digest = hashlib.sha256(data.encode()).digest()
    raw = int.from_bytes(digest[:4], byteorder="little", signed=False)
    return int(raw / (2**32 - 1) * (max_value - min_value)) + min_value


def split_list(value: str | Sequence[str]) -> list[str]:
    """'S1,S5' or ['S1', 'S5'] -> ['S1', 'S5'] (empty items dropped)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [s.strip() for s in items if s.strip()]


def action_class(action: str) -> str:
    """H36M evaluation class of an action name: text up to the first space (§1.6)."""
    return action.split(" ")[0]


def _action_kept(action: str, action_filter: list[str] | None) -> bool:
    return action_filter is None or any(action.startswith(a) for a in action_filter)


def select_frames(n_frames: int, downsample: int, subset: float) -> slice:
    """Frame selection of §1.7 for a sequence of `n_frames` frames, as a slice."""
    if subset < 1:
        n = int(round(n_frames // downsample * subset) * downsample)
        start = deterministic_random(0, n_frames - n + 1, str(n_frames))
        return slice(start, start + n, downsample)
    return slice(None, None, downsample)


def _missing(path: Path) -> FileNotFoundError:
    return MissingFileError(f"Human3.6M file not found: {path}. {OBTAIN_HINT}")


def _camera_frame_3d(world32: np.ndarray, subject: str, cam_idx: int, src: str) -> np.ndarray:
    """(N, 32, 3) world metres -> (N, 17, 3) camera frame, root-relative with absolute root."""
    if world32.ndim != 3 or world32.shape[1:] != (32, 3):
        raise DataError(
            f"{src}: positions_3d[{subject!r}] has shape {world32.shape}; expected (N, 32, 3) "
            "world coordinates of the 32 mocap joints (VideoPose3D layout)."
        )
    world = check_pose_array(world32[:, list(H36M_KEPT_JOINTS)], 3, src, f"3D of {subject}")
    quat, trans = cam_lib.camera_extrinsics(subject, cam_idx)
    pos = cam_lib.world_to_camera(world, quat, trans)  # (N, 17, 3)
    pos[:, 1:] -= pos[:, :1]  # root-relative; joint 0 keeps its absolute position (§1.4)
    return pos


def _read_2d(root: Path, keypoints: str) -> tuple[dict, tuple, tuple, Path]:
    if keypoints.startswith("sh"):
        raise DataError(
            f"keypoints {keypoints!r}: 16-joint stacked-hourglass detections are not supported; "
            "use cpn_ft_h36m_dbb, gt or detectron_pt_coco."
        )
    path = root / f"data_2d_h36m_{keypoints}.npz"
    if not path.is_file():
        raise _missing(path)
    entries = load_npz(path)
    require_keys(entries, ("positions_2d",), str(path), "Is this a VideoPose3D 2D file?")
    meta = entries.get("metadata") or {}
    coco = keypoints == "detectron_pt_coco"
    default = (
        (COCO_JOINTS_LEFT, COCO_JOINTS_RIGHT) if coco else (H36M_JOINTS_LEFT, H36M_JOINTS_RIGHT)
    )
    sym = meta.get("keypoints_symmetry", default) if isinstance(meta, dict) else default
    left, right = (tuple(int(j) for j in side) for side in sym)
    return entries["positions_2d"], left, right, path


def load_h36m(
    root: str | Path,
    *,
    keypoints: str = "cpn_ft_h36m_dbb",
    subjects: str | Sequence[str] = ("S1", "S5", "S6", "S7", "S8"),
    actions: str | Sequence[str] = "*",
    downsample: int = 1,
    subset: float = 1.0,
    need_3d: bool = True,
) -> PoseSequences:
    """Loads Human3.6M sequences of the given subjects, one per (subject, action, camera).

    Args:
      root: folder holding `data_3d_h36m.npz` and `data_2d_h36m_<keypoints>.npz`.
      keypoints: 2D source: "cpn_ft_h36m_dbb", "gt" or "detectron_pt_coco" (COCO order; only
        [..., :2] kept, 2D flip lists from the file's metadata).
      subjects: comma string or list; sequences come in this subject order, then in the 2D
        file's action order, then camera order.
      actions: "*" or comma list; an action is kept when its name starts with an entry.
      downsample: keep every d-th frame.
      subset: fraction of each sequence kept (deterministic start, §1.7).
      need_3d: read the 3D file (False: 2D only, e.g. Stage I; `poses_3d` is None).

    Returns:
      PoseSequences with groups = action class, float32 arrays.

    Raises:
      FileNotFoundError: a file is missing (the message says where to get it).
      ValueError / KeyError: malformed content (the message names file and entry).
    """
    root = Path(root)
    subject_list = split_list(subjects)
    action_filter = None if actions == "*" else split_list(actions)
    if downsample < 1 or not 0 < subset <= 1:
        raise DataError(f"need downsample >= 1 and 0 < subset <= 1, got {downsample}, {subset}")
    kp2d, left2d, right2d, path2d = _read_2d(root, keypoints)
    data3d, path3d = None, root / "data_3d_h36m.npz"
    if need_3d:
        if not path3d.is_file():
            raise _missing(path3d)
        entries = load_npz(path3d)
        require_keys(entries, ("positions_3d",), str(path3d), "Is this data_3d_h36m.npz?")
        data3d = entries["positions_3d"]

    seqs = PoseSequences(
        name="h36m", keys=[], poses_2d=[], poses_3d=[] if need_3d else None,
        cameras=np.zeros((0, 9), np.float32), groups=[], subjects=[], cam_indices=[],
        joints_left_2d=left2d, joints_right_2d=right2d,
    )  # fmt: skip
    cams = []
    for subject in subject_list:
        if subject not in kp2d:
            raise DataKeyError(f"{path2d}: subject {subject!r} not in the file; has {sorted(kp2d)}")
        if need_3d and subject not in data3d:
            raise DataKeyError(
                f"{path3d}: subject {subject!r} not in the file; has {sorted(data3d)}"
            )
        for action, per_cam in kp2d[subject].items():
            if not _action_kept(action, action_filter):
                continue
            _add_action(seqs, cams, subject, action, per_cam, data3d, keypoints, path2d, path3d)
    if not seqs.keys:
        raise DataError(
            f"{path2d}: no sequence matches subjects={subject_list} actions={actions!r}"
        )
    seqs.cameras = np.stack(cams).astype(np.float32)  # (S, 9)
    for i in range(len(seqs.keys)):
        sel = select_frames(len(seqs.poses_2d[i]), downsample, subset)
        seqs.poses_2d[i] = seqs.poses_2d[i][sel]
        if need_3d:
            seqs.poses_3d[i] = seqs.poses_3d[i][sel]
    return seqs.validate(str(path2d))


def _add_action(seqs, cams, subject, action, per_cam, data3d, keypoints, path2d, path3d):
    """Appends the per-camera sequences of one (subject, action) to `seqs`/`cams`."""
    n_cams = len(cam_lib.H36M_INTRINSICS)
    if len(per_cam) != n_cams:
        raise DataError(
            f"{path2d}: positions_2d[{subject!r}][{action!r}] has {len(per_cam)} cameras, "
            f"expected {n_cams} (order {cam_lib.H36M_CAMERA_IDS})"
        )
    world = None
    if data3d is not None:
        if action not in data3d[subject]:
            raise DataKeyError(
                f"{path3d}: positions_3d[{subject!r}] has no action {action!r} that the 2D file "
                f"{path2d.name} lists; the two files do not belong together."
            )
        world = np.asarray(data3d[subject][action])
    for cam_idx, kp in enumerate(per_cam):
        name = f"positions_2d[{subject!r}][{action!r}][{cam_idx}]"
        kp = np.asarray(kp)
        if keypoints == "detectron_pt_coco" and kp.ndim == 3:
            kp = kp[..., :2]  # Detectron files carry a score channel (§1.1)
        kp = check_pose_array(kp, 2, str(path2d), name)
        res_w, res_h = cam_lib.camera_resolution(cam_idx)
        kp = cam_lib.normalize_screen_coordinates(kp, res_w, res_h)
        if world is not None:
            pos3d = _camera_frame_3d(world, subject, cam_idx, str(path3d))
            if len(kp) < len(pos3d):
                raise DataError(
                    f"{path2d}: {name} has {len(kp)} frames but the 3D sequence has "
                    f"{len(pos3d)}; 2D must be at least as long (it is truncated to 3D)."
                )
            kp = kp[: len(pos3d)]
            seqs.poses_3d.append(pos3d)
        seqs.keys.append((subject, action, cam_idx))
        seqs.poses_2d.append(kp)
        seqs.groups.append(action_class(action))
        seqs.subjects.append(subject)
        seqs.cam_indices.append(cam_idx)
        cams.append(cam_lib.camera_intrinsic_vector(subject, cam_idx))
