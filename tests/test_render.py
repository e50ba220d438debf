"""Rendering: frame layout, the world frame round trip, video / GIF writers, contact sheet."""

from __future__ import annotations

import numpy as np
from infer_helpers import COCO_STANDING, RES

from aptpose_jax import render, world_frame
from aptpose_jax.datasets.camera import camera_to_world


def _standing_h36m_camera() -> np.ndarray:
    """A standing H36M pose in camera coordinates (y down, z away), root-relative, metres."""
    pose = np.zeros((17, 3), np.float32)
    pose[[1, 4], 0], pose[[2, 5], 0], pose[[3, 6], 0] = 0.0, 0.0, 0.0
    pose[1:4, 0], pose[4:7, 0] = -0.13, 0.13
    pose[[2, 5], 1], pose[[3, 6], 1] = 0.45, 0.9
    pose[7:11, 1] = [-0.25, -0.5, -0.6, -0.75]
    pose[11:14, 0], pose[14:17, 0] = 0.18, -0.18
    pose[11:17, 1] = np.tile([-0.5, -0.25, 0.0], 2)
    return pose


def test_world_frame_round_trips_and_stands_on_the_ground():
    rng = np.random.default_rng(0)
    cam = _standing_h36m_camera()[None] + rng.normal(0, 0.02, (20, 17, 3)).astype(np.float32)
    world, shift = world_frame.to_world(cam)
    assert abs(world[..., 2].min()) < 1e-7
    np.testing.assert_allclose(world_frame.to_camera(world, shift), cam, atol=1e-5)
    # The reference's rendering rotation (P-STMO in_the_wild, VideoPose3D): S1 camera 0.
    np.testing.assert_allclose(
        world_frame.RENDER_ROTATION, [0.14070565, -0.15007018, -0.7552408, 0.62232804]
    )
    np.testing.assert_allclose(
        world[..., 2] + shift,
        camera_to_world(cam, world_frame.RENDER_ROTATION, np.zeros(3))[..., 2],
        atol=1e-6,
    )


def test_frame_layout_and_upright_projection():
    renderer = render.PoseRenderer(640, 320)
    world, _ = world_frame.to_world(_standing_h36m_camera()[None])
    pts = renderer._project(world[0] - [world[0, 0, 0], world[0, 0, 1], 0])
    assert pts[10, 1] < pts[0, 1] < pts[3, 1]  # head above pelvis above the ankle on screen
    kp = np.concatenate([COCO_STANDING, np.ones((17, 1), np.float32)], axis=1)
    frame = renderer.frame(kp, RES, world[0])
    assert frame.shape == (320, 640, 3) and frame.dtype == np.uint8
    left, right = frame[:, :320], frame[:, 320:]
    assert (left != render.BACKGROUND).any() and (right != render.BACKGROUND).any()
    video = np.full((*reversed(renderer.video_frame_size(RES)),), 200, np.uint8)
    over_video = renderer.frame(kp, RES, world[0], video_frame=np.stack([video] * 3, -1))
    assert over_video[:, :320].mean() > left.mean()  # the video frame is drawn under the pose


def test_video_and_gif_writers(tmp_path, monkeypatch):
    import imageio_ffmpeg

    n = 7
    kp = COCO_STANDING[None] + 10.0 * np.arange(n, dtype=np.float32)[:, None, None]  # moving
    world, _ = world_frame.to_world(np.tile(_standing_h36m_camera()[None], (n, 1, 1)))
    path, kept = render.render_result(tmp_path / "a", kp, RES, world, size=(320, 160))
    assert path.suffix == ".mp4" and len(kept) == 6
    assert imageio_ffmpeg.count_frames_and_secs(str(path))[0] == n
    sheet = render.contact_sheet(kept)
    assert sheet.size == (320, 3 * 80)
    monkeypatch.setattr(render, "has_video_encoder", lambda: False)
    gif, _ = render.render_result(tmp_path / "b", kp, RES, world, size=(320, 160))
    from PIL import Image

    assert gif.suffix == ".gif" and Image.open(gif).n_frames == n
