"""A "user's video" keypoint file from the demo data, for `make demo`'s infer step.

Takes the synthetic Detectron COCO keypoints of one demo test sequence (a Human3.6M-like
camera view, `data_2d_h36m_detectron_pt_coco.npz`) and writes them as a VideoPose3D custom
npz `data_2d_custom_demo.npz` with the camera's frame size in its metadata, i.e. exactly
what VideoPose3D's `prepare_data_2d_custom.py` gives for a real video.

    python -m aptpose_jax.datasets.demo_video --root data/demo \
        --out data/demo/data_2d_custom_demo.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from aptpose_jax.datasets.camera import camera_resolution
from aptpose_jax.datasets.demo import ensure_demo_data
from aptpose_jax.datasets.safe_npz import load_npz, save_npz_atomic
from aptpose_jax.errors import UserError, exit_on_user_error


def write_demo_video_keypoints(
    root: str | Path, out: str | Path, *, subject: str = "S9", camera: int = 0, frames: int = 150
) -> Path:
    """Writes one demo test sequence's COCO keypoints as a VideoPose3D custom npz.

    Args:
      root: the demo data folder (generated there when missing).
      out: the npz to write.
      subject: a demo test subject; its first "Walking" sequence is taken (else its first).
      camera: the camera view (0-3); its frame size goes into the metadata.
      frames: at most this many frames (a short video renders in seconds).

    Returns:
      The written path.
    """
    root = ensure_demo_data(root)
    positions = load_npz(Path(root) / "data_2d_h36m_detectron_pt_coco.npz")["positions_2d"]
    actions = sorted(positions[subject])
    action = next((a for a in actions if a.startswith("Walking")), actions[0])
    kp = np.asarray(positions[subject][action][camera], np.float32)[:frames]  # (T, 17, 2)
    w, h = camera_resolution(camera)
    name = f"{subject}_{action}_cam{camera}".replace(" ", "_")
    out = Path(out)
    if out.exists():  # never overwrite a user's file; an identical earlier output is kept
        try:
            old = load_npz(out)["positions_2d"][name]["custom"][0]
            same = np.array_equal(np.asarray(old), kp)
        except Exception:  # noqa: BLE001 - any unreadable or foreign file is "not ours"
            same = False
        if not same:
            raise UserError(
                f"{out} exists and is not this demo's keypoint file; choose another --out"
            )
        return out
    return save_npz_atomic(
        out,
        positions_2d={name: {"custom": [kp]}},
        metadata={"layout_name": "coco", "num_joints": 17,
                  "video_metadata": {name: {"w": int(w), "h": int(h)}}},
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="data/demo", help="demo data folder")
    parser.add_argument("--out", default="data/demo/data_2d_custom_demo.npz")
    parser.add_argument("--frames", type=int, default=150)
    args = parser.parse_args(argv)
    path = exit_on_user_error(
        lambda: write_demo_video_keypoints(args.root, args.out, frames=args.frames)
    )
    print(f"demo keypoints: {path}")


if __name__ == "__main__":
    main()
