"""Skeleton facts: joint orders, parents, left/right lists and bone pairs (§1.2, §1.11, §1.12).

Everything here is plain data (tuples) plus one conversion helper, `coco_to_h36m`, so any module
(masking, losses, loaders, the demo generator) can import it without pulling in numpy-heavy code.
"""

from __future__ import annotations

import numpy as np

# --- Human3.6M, 32-joint mocap skeleton (as stored in data_3d_h36m.npz) -------------------------

# Parent of each of the 32 mocap joints (-1 = root); the demo generator builds 32-joint mocap
# from it, and the loader drops the static/duplicate joints below.
H36M32_PARENTS: tuple[int, ...] = (
    -1, 0, 1, 2, 3, 4, 0, 6, 7, 8, 9, 0, 11, 12, 13, 14, 12,
    16, 17, 18, 19, 20, 19, 22, 12, 24, 25, 26, 27, 28, 27, 30,
)  # fmt: skip
H36M32_REMOVED_JOINTS: tuple[int, ...] = (4, 5, 9, 10, 11, 16, 20, 21, 22, 23, 24, 28, 29, 30, 31)
# The 17 of 32 joints kept by the loader, in output order (§1.2).
H36M_KEPT_JOINTS: tuple[int, ...] = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)

# --- Human3.6M, 17-joint model ----------------------------------------------------------------

H36M_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "spine", "thorax", "neck_nose", "head", "left_shoulder", "left_elbow", "left_wrist",
    "right_shoulder", "right_elbow", "right_wrist",
)  # fmt: skip
# After re-parenting, with the explicit fixes parent[11] = parent[14] = 8 (shoulders on thorax).
H36M_PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
H36M_JOINTS_LEFT: tuple[int, ...] = (4, 5, 6, 11, 12, 13)
H36M_JOINTS_RIGHT: tuple[int, ...] = (1, 2, 3, 14, 15, 16)
H36M_ROOT = 0
# The 16 (parent, child) bone pairs in the reference order: (8, 11) precedes (8, 14).
H36M_BONE_PAIRS: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (0, 4), (4, 5), (5, 6), (0, 7), (7, 8),
    (8, 9), (9, 10), (8, 11), (11, 12), (12, 13), (8, 14), (14, 15), (15, 16),
)  # fmt: skip

# The 15 evaluation action classes, in `define_actions` order (§1.6).
H36M_ACTIONS: tuple[str, ...] = (
    "Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing", "Purchases",
    "Sitting", "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking", "WalkTogether",
)  # fmt: skip

# --- MPI-INF-3DHP, 17 joints (official test order, §1.11) -----------------------------------------

MPI3DHP_JOINT_NAMES: tuple[str, ...] = (
    "head_top", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
    "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
    "left_knee", "left_ankle", "pelvis", "spine", "head",
)  # fmt: skip
# 0-based indices into the 28-joint 3DHP annotation that give the 17 joints above.
MPI3DHP_FROM_28: tuple[int, ...] = (7, 5, 14, 15, 16, 9, 10, 11, 23, 24, 25, 18, 19, 20, 4, 3, 6)
MPI3DHP_JOINTS_LEFT: tuple[int, ...] = (5, 6, 7, 11, 12, 13)
MPI3DHP_JOINTS_RIGHT: tuple[int, ...] = (2, 3, 4, 8, 9, 10)
MPI3DHP_ROOT = 14
# Joints scored by 3DHP PCK/AUC (head_top .. left_ankle; pelvis, spine, head excluded).
MPI3DHP_PCK_JOINTS: tuple[int, ...] = tuple(range(14))

# --- COCO 17 keypoints (Detectron / in-the-wild inputs, §1.12) ----------------------------------

COCO_JOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
COCO_JOINTS_LEFT: tuple[int, ...] = (1, 3, 5, 7, 9, 11, 13, 15)
COCO_JOINTS_RIGHT: tuple[int, ...] = (2, 4, 6, 8, 10, 12, 14, 16)

# H36M joints that are copied directly from one COCO keypoint: h36m index -> coco index.
COCO_TO_H36M_DIRECT: dict[int, int] = {
    1: 12, 2: 14, 3: 16,  # right hip, knee, ankle
    4: 11, 5: 13, 6: 15,  # left hip, knee, ankle
    9: 0,  # neck/nose <- nose
    11: 5, 12: 7, 13: 9,  # left shoulder, elbow, wrist
    14: 6, 15: 8, 16: 10,  # right shoulder, elbow, wrist
}  # fmt: skip


def coco_to_h36m(kpts: np.ndarray) -> np.ndarray:
    """Converts COCO-order keypoints to the H36M 17-joint layout.

    Convention (documented, one of several in use; the reference itself feeds COCO order
    unchanged, Q23): limbs and the nose are copied (`COCO_TO_H36M_DIRECT`); pelvis (0) is the
    mid-point of the hips, thorax (8) the mid-point of the shoulders, spine (7) the mid-point of
    pelvis and thorax, head (10) the centroid of both eyes and both ears.

    Args:
      kpts: (..., 17, C) array in COCO order (C = 2 or 3; extra channels are carried along).

    Returns:
      (..., 17, C) array in H36M order, same dtype.
    """
    kpts = np.asarray(kpts)
    if kpts.shape[-2] != 17:
        raise ValueError(
            f"coco_to_h36m expects 17 COCO keypoints on axis -2, got shape {kpts.shape}"
        )
    out = np.empty_like(kpts)
    for h, c in COCO_TO_H36M_DIRECT.items():
        out[..., h, :] = kpts[..., c, :]
    pelvis = 0.5 * (kpts[..., 11, :] + kpts[..., 12, :])
    thorax = 0.5 * (kpts[..., 5, :] + kpts[..., 6, :])
    out[..., 0, :] = pelvis
    out[..., 8, :] = thorax
    out[..., 7, :] = 0.5 * (pelvis + thorax)
    out[..., 10, :] = kpts[..., 1:5, :].mean(axis=-2)
    return out
