"""Kinematic synthesis of plausible human motion on the 32-joint Human3.6M mocap skeleton.

Used only by the synthetic demo data (`demo.py`). A motion is a set of joint-angle curves
(radians, one value per frame) plus a root trajectory; forward kinematics on the 32-joint tree
(`skeleton.H36M32_PARENTS`) turns them into world coordinates in metres with z up, the frame of
`data_3d_h36m.npz`. Bone lengths are typical Human3.6M values scaled per subject, so every bone
keeps a constant length over time. The 15 joints that the loaders drop are placed as in the real
mocap: duplicates of a neighbour (zero-length bones), except the toes, which sit in front of the
ankles.

Body frame convention: x = the subject's left, y = forward, z = up. Angles: `hip_flex`
swings the thigh forward, `knee` bends the shank backward, `lean` tilts the trunk forward,
`sh_flex` swings the upper arm forward, `sh_abd` raises it sideways, `sh_rot` turns it about its
own axis and `elbow` bends the forearm.
"""

from __future__ import annotations

import numpy as np

from aptpose_jax.datasets.skeleton import H36M32_PARENTS

# Typical Human3.6M segment lengths in metres (means over the training subjects, rounded).
BONE_LENGTHS: dict[str, float] = {
    "hip_width": 0.132,  # pelvis -> hip
    "thigh": 0.442,
    "shin": 0.454,
    "foot": 0.15,  # ankle -> toe
    "spine": 0.233,  # pelvis -> spine
    "chest": 0.257,  # spine -> thorax
    "neck": 0.121,  # thorax -> neck/nose
    "head": 0.115,  # neck/nose -> head top
    "shoulder": 0.151,  # thorax -> shoulder
    "upper_arm": 0.278,
    "forearm": 0.252,
}
ANKLE_HEIGHT = 0.08  # metres above the floor of the ankle joint when the foot is planted

ANGLE_NAMES: tuple[str, ...] = (
    "yaw", "roll", "pitch", "twist", "lean", "side", "chest_lean", "head_yaw", "head_pitch",
    "hip_flex_l", "hip_flex_r", "hip_abd_l", "hip_abd_r", "knee_l", "knee_r",
    "sh_flex_l", "sh_flex_r", "sh_abd_l", "sh_abd_r", "sh_rot_l", "sh_rot_r",
    "elbow_l", "elbow_r",
)  # fmt: skip


def sample_bone_lengths(rng: np.random.Generator, scale: float) -> dict[str, float]:
    """Per-subject bone lengths: the typical lengths times `scale`, each jittered by up to 3%."""
    return {k: v * scale * float(rng.uniform(0.97, 1.03)) for k, v in BONE_LENGTHS.items()}


def _rot(axis: int, a: np.ndarray) -> np.ndarray:
    """Rotation matrices (N, 3, 3) about the body axis `axis` (0 = x, 1 = y, 2 = z)."""
    c, s = np.cos(a), np.sin(a)
    one, zero = np.ones_like(a), np.zeros_like(a)
    if axis == 0:
        rows = [[one, zero, zero], [zero, c, -s], [zero, s, c]]
    elif axis == 1:
        rows = [[c, zero, s], [zero, one, zero], [-s, zero, c]]
    else:
        rows = [[c, -s, zero], [s, c, zero], [zero, zero, one]]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)  # (N, 3, 3)


def _chain(*mats: np.ndarray) -> np.ndarray:
    out = mats[0]
    for m in mats[1:]:
        out = out @ m
    return out


def _local_frames(ang: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    """Local rotation (N, 3, 3) of each 32-skeleton joint that rotates its children."""
    leg = {}
    for side, sign, hip, knee, ankle in (("r", 1.0, 1, 2, 3), ("l", -1.0, 6, 7, 8)):
        # Abduction moves the right leg to -x and the left leg to +x.
        leg[hip] = _rot(0, ang[f"hip_flex_{side}"]) @ _rot(1, sign * ang[f"hip_abd_{side}"])
        leg[knee] = _rot(0, -ang[f"knee_{side}"])
        # Undo the leg pitch so the foot stays roughly level with the floor.
        leg[ankle] = _rot(0, ang[f"knee_{side}"] - ang[f"hip_flex_{side}"] + ang["pitch"])
    arm = {}
    for side, sign, shoulder, elbow in (("l", -1.0, 17, 18), ("r", 1.0, 25, 26)):
        arm[shoulder] = _chain(
            _rot(0, ang[f"sh_flex_{side}"]),
            _rot(1, sign * ang[f"sh_abd_{side}"]),
            _rot(2, -sign * ang[f"sh_rot_{side}"]),
        )
        arm[elbow] = _rot(0, ang[f"elbow_{side}"])
    return {
        0: _chain(_rot(2, ang["yaw"]), _rot(1, ang["roll"]), _rot(0, -ang["pitch"])),
        11: _chain(_rot(2, ang["twist"]), _rot(0, -ang["lean"]), _rot(1, ang["side"])),
        12: _rot(0, -ang["chest_lean"]),
        13: _rot(2, ang["head_yaw"]) @ _rot(0, -ang["head_pitch"]),
        **leg,
        **arm,
    }


def _offsets(b: dict[str, float]) -> np.ndarray:
    """Offset (32, 3) of each joint from its parent, in the parent's frame (metres)."""
    off = np.zeros((32, 3))
    for hip, knee, ankle, toe, sx in ((1, 2, 3, 4, -1.0), (6, 7, 8, 9, 1.0)):
        off[hip] = (sx * b["hip_width"], 0.0, 0.0)
        off[knee] = (0.0, 0.0, -b["thigh"])
        off[ankle] = (0.0, 0.0, -b["shin"])
        off[toe] = (0.0, 0.95 * b["foot"], -0.3 * b["foot"])  # 5 and 10 duplicate the toes
    off[12] = (0.0, 0.0, b["spine"])  # 11 duplicates the pelvis
    off[13] = (0.0, 0.0, b["chest"])
    off[14] = (0.0, 0.45 * b["neck"], 0.89 * b["neck"])  # the "nose" joint sits forward
    off[15] = (0.0, -0.15 * b["head"], 0.99 * b["head"])
    for clav, shoulder, elbow, wrist, sx in ((16, 17, 18, 19, 1.0), (24, 25, 26, 27, -1.0)):
        off[clav] = (0.0, 0.0, b["chest"])  # duplicates the thorax
        off[shoulder] = (sx * 0.99 * b["shoulder"], 0.0, -0.14 * b["shoulder"])
        off[elbow] = (0.0, 0.0, -b["upper_arm"])
        off[wrist] = (0.0, 0.0, -b["forearm"])  # 20-23 / 28-31 duplicate the wrist
    return off


def forward_kinematics(
    ang: dict[str, np.ndarray], root_xy: np.ndarray, bones: dict[str, float]
) -> np.ndarray:
    """World positions (N, 32, 3) of the mocap joints, float64, feet on the floor (z = 0).

    Args:
      ang: joint-angle curves (radians), each (N,), keyed by `ANGLE_NAMES`.
      root_xy: (N, 2) pelvis position on the floor plane (metres).
      bones: segment lengths from `sample_bone_lengths`.
    """
    n = root_xy.shape[0]
    local = _local_frames(ang)
    off = _offsets(bones)
    eye = np.broadcast_to(np.eye(3), (n, 3, 3))
    glob_rot = [eye] * 32
    pos = np.zeros((n, 32, 3))
    for j, parent in enumerate(H36M32_PARENTS):
        parent_rot = eye if parent < 0 else glob_rot[parent]
        if parent >= 0:
            pos[:, j] = pos[:, parent] + parent_rot @ off[j]  # (N, 3)
        glob_rot[j] = parent_rot @ local[j] if j in local else parent_rot
    # The pelvis height follows from the legs: the lower ankle touches ANKLE_HEIGHT.
    lowest = np.minimum(pos[:, 3, 2], pos[:, 8, 2])  # (N,)
    pos[..., 2] += (ANKLE_HEIGHT - lowest)[:, None]
    pos[..., :2] += root_xy[:, None, :]
    return pos


def smooth_noise(rng: np.random.Generator, t: np.ndarray, max_hz: float, n: int = 4) -> np.ndarray:
    """A smooth random curve in about [-1, 1]: a sum of `n` sinusoids below `max_hz`."""
    freqs = rng.uniform(0.05, max_hz, n)
    phases = rng.uniform(0, 2 * np.pi, n)
    amps = rng.uniform(0.5, 1.0, n)
    curve = (amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0)
    return curve / amps.sum()


def smooth_pulses(rng: np.random.Generator, t: np.ndarray, period: float, duty: float):
    """Smooth 0..1 bumps recurring every ~`period` seconds, each up for ~`duty` of the period."""
    dist = np.abs((t / period + rng.uniform()) % 1.0 - 0.5) * 2  # 0 at a bump's centre
    up = np.clip((duty - dist) / (0.5 * duty), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * up)
