"""A "user's video" keypoint file from the demo data, for `make demo`'s infer step.

Takes the synthetic Detectron COCO keypoints of one demo test sequence (by default S9's
"Discussion", two-arm gestures with the person turning, camera 0; a Human3.6M-like camera
view, `data_2d_h36m_detectron_pt_coco.npz`) and writes them as a VideoPose3D custom
npz `data_2d_custom_demo.npz` with the camera's frame size in its metadata, i.e. exactly
what VideoPose3D's `prepare_data_2d_custom.py` gives for a real video. Unlike a real video's
file it also carries the sequence's 3D ground truth, `positions_3d[video]` (T, 17, 3): the
Human3.6M 17 joints in that camera's frame (x right, y down, z forward), metres, absolute
(not root-relative), one row per keypoint row; `infer --with-gt` draws and scores it.

    python -m aptpose_jax.datasets.demo_video --root data/demo \
        --out data/demo/data_2d_custom_demo.npz
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from aptpose_jax.datasets.camera import camera_extrinsics, camera_resolution, world_to_camera
from aptpose_jax.datasets.demo import ensure_demo_data
from aptpose_jax.datasets.safe_npz import load_npz, save_npz_atomic
from aptpose_jax.datasets.skeleton import H36M_KEPT_JOINTS
from aptpose_jax.errors import UserError, exit_on_user_error


def write_demo_video_keypoints(
    root: str | Path,
    out: str | Path,
    *,
    subject: str = "S9",
    action: str = "Discussion",
    camera: int = 0,
    frames: int = 150,
) -> Path:
    """Writes one demo test sequence's COCO keypoints as a VideoPose3D custom npz.

    Args:
      root: the demo data folder (generated there when missing).
      out: the npz to write.
      subject: a demo test subject.
      action: an action class; the subject's first sequence of it is taken (else its first).
      camera: the camera view (0-3); its frame size goes into the metadata.
      frames: at most this many frames (a short video renders in seconds).

    Returns:
      The written path.
    """
    root = ensure_demo_data(root)
    positions = load_npz(Path(root) / "data_2d_h36m_detectron_pt_coco.npz")["positions_2d"]
    actions = sorted(positions[subject])
    action = next((a for a in actions if a.split(" ")[0] == action), actions[0])
    world = load_npz(Path(root) / "data_3d_h36m.npz")["positions_3d"][subject][action]
    # Detector files may hold a few frames more than the mocap (§1.1): keep the common ones.
    n = min(frames, len(world), len(positions[subject][action][camera]))
    kp = np.asarray(positions[subject][action][camera], np.float32)[:n]  # (T, 17, 2)
    quat, trans = camera_extrinsics(subject, camera)
    pose3d = world_to_camera(world[:n, list(H36M_KEPT_JOINTS)], quat, trans)  # (T, 17, 3) m
    w, h = camera_resolution(camera)
    name = f"{subject}_{action}_cam{camera}".replace(" ", "_")
    out = Path(out)
    if out.exists() and not _is_demo_file(out):  # never overwrite a user's file
        raise UserError(f"{out} exists and is not this demo's keypoint file; choose another --out")
    return save_npz_atomic(
        out,
        positions_2d={name: {"custom": [kp]}},
        positions_3d={name: pose3d.astype(np.float32)},
        metadata={"layout_name": "coco", "num_joints": 17,
                  "video_metadata": {name: {"w": int(w), "h": int(h)}}},
    )  # fmt: skip


def _is_demo_file(path: Path) -> bool:
    """Whether `path` is a keypoint file this module wrote (of any demo sequence or version):
    one video named SUBJECT_ACTION_camN with a 'custom' entry."""
    try:
        (name,) = load_npz(path)["positions_2d"].items()
        return bool(re.fullmatch(r"S\d+_\w+_cam\d", name[0])) and "custom" in name[1]
    except Exception:  # noqa: BLE001 - any unreadable or foreign file is "not ours"
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="data/demo", help="demo data folder")
    parser.add_argument("--out", default="data/demo/data_2d_custom_demo.npz")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--subject", default="S9", help="a demo test subject (S9, S11)")
    parser.add_argument("--action", default="Discussion", help="an action class, e.g. Walking")
    args = parser.parse_args(argv)
    path = exit_on_user_error(
        lambda: write_demo_video_keypoints(
            args.root, args.out, subject=args.subject, action=args.action, frames=args.frames
        )
    )
    print(f"demo keypoints: {path}")


if __name__ == "__main__":
    main()
