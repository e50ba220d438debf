"""`PoseSequences`, the in-memory form every loader returns, and its validation helpers."""

from __future__ import annotations

import dataclasses

import numpy as np

from aptpose_jax.datasets.skeleton import H36M_JOINTS_LEFT, H36M_JOINTS_RIGHT
from aptpose_jax.errors import DataError, DataKeyError


@dataclasses.dataclass
class PoseSequences:
    """A list of pose sequences with everything the window sampler and evaluation need.

    Attributes:
      name: dataset name ("h36m", "mpi_inf_3dhp", "wild", ...).
      keys: one key per sequence: (subject, action, cam_idx) for H36M, (subject, seq, cam) for
        3DHP training, (seq,) for 3DHP test and videos.
      poses_2d: per sequence (T, J, 2) float32 in normalised screen coordinates (§1.5).
      poses_3d: per sequence (T, J, 3) float32, root-relative with the root joint absolute
        (§1.4), or None for 2D-only data.
      cameras: (S, 9) float32 intrinsic vector per sequence (§1.3); zeros where unknown.
      groups: evaluation group per sequence (H36M action class, 3DHP sequence name).
      subjects: subject per sequence.
      valid: per sequence (T,) bool valid frames (3DHP test), or None = all frames valid.
      joints_left_2d, joints_right_2d: 2D flip lists (from the 2D file's metadata for H36M).
      joints_left_3d, joints_right_3d: 3D flip lists.
      root_joint: 0 for H36M, 14 for 3DHP.
      cam_indices: per sequence camera index (int) reported as `cam_ind` in batches
        (None = all 0).
      frame_info: optional per-frame labels, name -> per sequence (T,) array (e.g. 3DHP
        "activity" when the file has it), for evaluation breakdowns.
    """

    name: str
    keys: list[tuple]
    poses_2d: list[np.ndarray]
    poses_3d: list[np.ndarray] | None
    cameras: np.ndarray
    groups: list[str]
    subjects: list[str]
    valid: list[np.ndarray] | None = None
    joints_left_2d: tuple[int, ...] = H36M_JOINTS_LEFT
    joints_right_2d: tuple[int, ...] = H36M_JOINTS_RIGHT
    joints_left_3d: tuple[int, ...] = H36M_JOINTS_LEFT
    joints_right_3d: tuple[int, ...] = H36M_JOINTS_RIGHT
    root_joint: int = 0
    cam_indices: list[int] | None = None
    frame_info: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.poses_2d)

    @property
    def lengths(self) -> np.ndarray:
        """(S,) int64 number of frames per sequence."""
        return np.array([len(p) for p in self.poses_2d], dtype=np.int64)

    def validate(self, source: str = "") -> PoseSequences:
        """Checks internal consistency; raises ValueError naming the sequence. Returns self."""
        where = f"{source}: " if source else ""
        n = len(self.poses_2d)
        for field in ("keys", "groups", "subjects"):
            if len(getattr(self, field)) != n:
                raise DataError(
                    f"{where}PoseSequences.{field} has {len(getattr(self, field))} entries "
                    f"for {n} sequences"
                )
        for field in ("poses_3d", "valid", "cam_indices"):
            value = getattr(self, field)
            if value is not None and len(value) != n:
                raise DataError(
                    f"{where}PoseSequences.{field} has {len(value)} entries for {n} sequences"
                )
        if self.cameras.shape != (n, 9):
            raise DataError(f"{where}cameras must be ({n}, 9), got {self.cameras.shape}")
        for i, key in enumerate(self.keys):
            p2 = check_pose_array(self.poses_2d[i], 2, source, f"2D of {key}")
            if self.poses_3d is not None:
                p3 = check_pose_array(self.poses_3d[i], 3, source, f"3D of {key}")
                if len(p3) != len(p2):
                    raise DataError(
                        f"{where}sequence {key}: 2D has {len(p2)} frames but 3D has {len(p3)}"
                    )
            if self.valid is not None and self.valid[i].shape != (len(p2),):
                raise DataError(
                    f"{where}sequence {key}: valid has shape {self.valid[i].shape}, "
                    f"expected ({len(p2)},)"
                )
        return self


def check_pose_array(
    arr: np.ndarray,
    dims: int,
    source: str,
    key: str,
    n_joints: int | None = 17,
    fix: str = "",
) -> np.ndarray:
    """Validates one (T, J, dims) pose array and returns it as float32.

    Args:
      arr: the array as read from a file.
      dims: 2 or 3 (last axis size).
      source: file name for the error message.
      key: entry / sequence name for the error message.
      n_joints: required joint count, or None to accept any.
      fix: optional hint appended to the error message.

    Raises:
      ValueError: wrong rank/shape, non-numeric dtype, empty, or NaN/inf values; the message
        names the file, the key, what was found and how to fix it.
    """
    hint = f" {fix}" if fix else ""
    prefix = f"{source}: {key}" if source else key
    arr = np.asarray(arr)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"{prefix}: expected a numeric array, got dtype {arr.dtype}.{hint}")
    if arr.ndim != 3 or arr.shape[-1] != dims:
        raise DataError(
            f"{prefix}: expected shape (frames, joints, {dims}), got {arr.shape}.{hint}"
        )
    if n_joints is not None and arr.shape[1] != n_joints:
        raise DataError(
            f"{prefix}: expected {n_joints} joints, got {arr.shape[1]} (shape {arr.shape}).{hint}"
        )
    if arr.shape[0] == 0:
        raise DataError(f"{prefix}: the sequence has no frames.{hint}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr).all(axis=(1, 2)))[:, 0]
        raise DataError(
            f"{prefix}: {len(bad)} frame(s) contain NaN/inf (first: frame {bad[0]}); clean or "
            f"interpolate them before loading.{hint}"
        )
    return arr


def require_keys(entries: dict, needed: tuple[str, ...], source: str, fix: str = "") -> None:
    """Raises KeyError naming the file and the missing entries when `needed` are absent."""
    missing = [k for k in needed if k not in entries]
    if missing:
        hint = f" {fix}" if fix else ""
        raise DataKeyError(
            f"{source}: missing entr{'y' if len(missing) == 1 else 'ies'} {missing}; "
            f"found {sorted(entries)}.{hint}"
        )
