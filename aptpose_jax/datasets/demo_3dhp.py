"""MPI-INF-3DHP-format part of the synthetic demo data (§1.11 layouts).

Training: `{'S<s> Seq<q>': [cams, fps]}` with `cams = {'0': {'data_2d', 'data_3d'}, ...}`;
test: `{'TS1'..'TS6': {'data_2d', 'data_3d', 'valid'}}`. 3D is in millimetres in each camera's
frame (like `univ_annot3`), 17 joints in the 3DHP order; 2D is the pinhole projection in
pixels for 2048 x 2048 images (TS5/TS6: 1920 x 1080). The cameras are synthetic: a ring around
the capture area looking at the subject, focal length about 1500 px.
"""

from __future__ import annotations

import zlib

import numpy as np

from aptpose_jax.datasets.choreography import synthesize_action
from aptpose_jax.datasets.motion import sample_bone_lengths
from aptpose_jax.datasets.skeleton import H36M_KEPT_JOINTS

# H36M 17-joint index for each 3DHP joint: head_top, neck (thorax), shoulders/elbows/wrists,
# hips/knees/ankles, pelvis, spine, head (the H36M neck/nose joint).
H36M_TO_3DHP: tuple[int, ...] = (10, 8, 14, 15, 16, 11, 12, 13, 1, 2, 3, 4, 5, 6, 0, 7, 9)
TRAIN_SEQUENCES: dict[str, tuple[str, int]] = {  # name -> (action class, fps)
    "S1 Seq1": ("Walking", 25),
    "S1 Seq2": ("Greeting", 25),
    "S2 Seq1": ("SittingDown", 50),
    "S2 Seq2": ("Discussion", 25),
}
TRAIN_CAMERAS: tuple[str, ...] = ("0", "2", "7")
TEST_SEQUENCES: dict[str, str] = {
    "TS1": "Waiting",
    "TS2": "Posing",
    "TS3": "Purchases",
    "TS4": "SittingDown",
    "TS5": "Walking",
    "TS6": "Directions",
}
OUTDOOR = ("TS5", "TS6")  # 1920 x 1080 images


def _rng(seed: int, *names: str) -> np.random.Generator:
    return np.random.default_rng([seed] + [zlib.crc32(n.encode()) for n in names])


def _camera(rng: np.random.Generator, azimuth: float, res: tuple[int, int]):
    """A look-at camera: rotation (3, 3) world->camera, centre (3,) m, intrinsics f, c (px)."""
    dist = rng.uniform(3.8, 4.6)
    centre = np.array([dist * np.sin(azimuth), 0.3 - dist * np.cos(azimuth), rng.uniform(0.8, 1.6)])
    target = np.array([0.0, 0.3, 0.9]) + rng.normal(0.0, 0.1, 3)
    z = (target - centre) / np.linalg.norm(target - centre)  # optical axis
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    rot = np.stack([x, np.cross(z, x), z])  # rows: camera x (right), y (down), z (forward)
    focal = rng.uniform(1450.0, 1550.0)
    principal = np.array(res, float) / 2 + rng.normal(0.0, 8.0, 2)
    return rot, centre, focal, principal


def _observe(world17: np.ndarray, cam) -> dict[str, np.ndarray]:
    """3DHP-order camera-frame mm (N, 17, 3) and pixels (N, 17, 2) of an H36M pose in metres."""
    rot, centre, focal, principal = cam
    x_cam = (world17 - centre) @ rot.T  # (N, 17, 3) metres
    x_cam = x_cam[:, list(H36M_TO_3DHP)]
    uv = focal * x_cam[..., :2] / x_cam[..., 2:3] + principal  # (N, 17, 2)
    return {"data_2d": uv.astype(np.float32), "data_3d": (1000.0 * x_cam).astype(np.float32)}


def _motion(seed: int, name: str, action: str, frames: int, fps: float) -> np.ndarray:
    rng = _rng(seed, "3dhp", name)
    bones = sample_bone_lengths(rng, float(rng.uniform(0.92, 1.08)))
    world = synthesize_action(action, frames, bones, rng, fps=fps)
    return world[:, list(H36M_KEPT_JOINTS)].astype(np.float64)  # (N, 17, 3)


def _valid_mask(rng: np.random.Generator, n: int) -> np.ndarray:
    """Per-frame 0/1 validity: a few invalid frames at the start and one invalid gap."""
    valid = np.ones(n, np.uint8)
    valid[: int(rng.integers(2, 8))] = 0
    gap = int(rng.integers(n // 3, 2 * n // 3))
    valid[gap : gap + int(rng.integers(3, 10))] = 0
    return valid


def make_3dhp(seed: int, frames: int) -> tuple[dict, dict]:
    """The `data` dicts of data_train_3dhp.npz and data_test_3dhp.npz."""
    train = {}
    for name, (action, fps) in TRAIN_SEQUENCES.items():
        world = _motion(seed, name, action, frames, fps)
        rng = _rng(seed, "3dhp-cams", name)
        cams = {}
        for cam in TRAIN_CAMERAS:
            azimuth = 2 * np.pi * int(cam) / 8 + rng.normal(0.0, 0.1)
            cams[cam] = _observe(world, _camera(rng, azimuth, (2048, 2048)))
        train[name] = [cams, fps]
    test = {}
    for name, action in TEST_SEQUENCES.items():
        world = _motion(seed, name, action, frames, 50.0 if name in OUTDOOR else 25.0)
        rng = _rng(seed, "3dhp-cams", name)
        res = (1920, 1080) if name in OUTDOOR else (2048, 2048)
        test[name] = _observe(world, _camera(rng, rng.uniform(0, 2 * np.pi), res))
        test[name]["valid"] = _valid_mask(rng, frames)
    return train, test
