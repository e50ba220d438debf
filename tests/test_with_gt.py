"""`infer --with-gt`: the demo keypoint file's 3D, the H36M sequence source, scores, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from infer_helpers import save_converted, walking_person

from aptpose_jax import infer, render
from aptpose_jax.datasets import camera as cam_lib
from aptpose_jax.datasets.demo_video import write_demo_video_keypoints
from aptpose_jax.datasets.safe_npz import load_npz
from aptpose_jax.datasets.skeleton import H36M_KEPT_JOINTS
from aptpose_jax.errors import UserError
from aptpose_jax.ground_truth import compare

FRAMES = 24


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_converted(tmp_path_factory.mktemp("weights") / "converted")


@pytest.fixture(scope="module")
def demo_keypoints(demo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("kp") / "data_2d_custom_demo.npz"
    return write_demo_video_keypoints(demo_root, out, frames=FRAMES)


def _infer(tmp_path, keypoints, weights, *extra, out="out"):
    args = ["--keypoints", str(keypoints), "--weights", str(weights)]
    infer.main([*args, "--out", str(tmp_path / out), "--batch-size", "16", *extra])
    return tmp_path / out


def test_demo_video_file_carries_the_camera_frame_3d(demo_root, demo_keypoints):
    data = load_npz(demo_keypoints)
    (name,) = data["positions_2d"]
    kp = data["positions_2d"][name]["custom"][0]
    pose3d = data["positions_3d"][name]
    assert pose3d.shape == (len(kp), 17, 3) == (FRAMES, 17, 3) and pose3d.dtype == np.float32
    subject, action = "S9", name.split("_cam")[0][len("S9_") :].replace("_", " ")
    world = load_npz(demo_root / "data_3d_h36m.npz")["positions_3d"][subject][action]
    quat, trans = cam_lib.camera_extrinsics(subject, 0)
    want = cam_lib.world_to_camera(world[:FRAMES, list(H36M_KEPT_JOINTS)], quat, trans)
    np.testing.assert_allclose(pose3d, want, atol=1e-6)
    assert 2.0 < pose3d[:, 0, 2].mean() < 9.0  # metres in front of the camera


def test_with_gt_draws_the_truth_and_scores_every_frame(tmp_path, demo_root, demo_keypoints,
                                                        weights):  # fmt: skip
    out = _infer(tmp_path, demo_keypoints, weights, "--with-gt")
    summary = json.loads((out / "summary.json").read_text())
    gt = summary["ground_truth"]
    errors = np.asarray(gt["mpjpe_per_frame_mm"])
    assert errors.shape == (FRAMES,) and gt["frames_compared"] == FRAMES
    assert gt["p1_mm"] == pytest.approx(errors.mean(), rel=1e-9) and gt["p2_mm"] <= gt["p1_mm"]
    res = np.load(out / "poses_3d.npz")
    np.testing.assert_array_equal(res["poses_3d_gt"][:, 0], 0.0)  # root-aligned
    mine = np.linalg.norm(res["poses_3d"] - res["poses_3d_gt"], axis=-1).mean(-1) * 1000
    np.testing.assert_allclose(mine, errors, rtol=1e-4)
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(out / "pose3d.mp4"))
    meta = next(reader)
    reader.close()
    assert tuple(meta["size"]) == (1920, 640)  # three panels
    # The same sequence named as a Human3.6M 3D file + subject/action/camera scores the same.
    name = next(iter(load_npz(demo_keypoints)["positions_2d"]))
    action = name.split("_cam")[0][len("S9_") :].replace("_", " ")
    spec = f"{demo_root / 'data_3d_h36m.npz'}:S9/{action}/0"
    out2 = _infer(tmp_path, demo_keypoints, weights, "--with-gt", spec, "--no-render", out="o2")
    gt2 = json.loads((out2 / "summary.json").read_text())["ground_truth"]
    np.testing.assert_allclose(gt2["mpjpe_per_frame_mm"], errors, rtol=1e-5)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("npy", "no 3D ground truth"),
        ("npz_without_3d", "no 3D ground truth"),
        ("bad_spec", "SUBJECT/ACTION/CAMERA"),
        ("unknown_action", "has no positions_3d"),
    ],
)
def test_with_gt_without_3d_is_one_line(tmp_path, demo_root, weights, capsys, case, expected):
    np.save(tmp_path / "kp.npy", walking_person(30))
    path, extra = tmp_path / "kp.npy", ["--resolution", "640x480", "--with-gt"]
    if case == "npz_without_3d":
        path = tmp_path / "kp.npz"
        np.savez(path, keypoints=walking_person(30))
    elif case == "bad_spec":
        extra.append("S9/Walking")
    elif case == "unknown_action":
        extra.append(f"{demo_root / 'data_3d_h36m.npz'}:S9/Jumping/0")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        _infer(tmp_path, path, weights, *extra)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert not (tmp_path / "out").exists()


def test_compare_aligns_roots_and_uses_the_common_frames():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(10, 17, 3)).astype(np.float32)
    pred = truth[:8] + np.array([1.0, 2.0, 3.0], np.float32)  # shifted, two frames shorter
    pred[3, 5] += [0.017, 0, 0]  # 17 mm on one joint of frame 3
    aligned, scores = compare(pred, truth)
    assert aligned.shape == (8, 17, 3) and scores["frames_compared"] == 8
    np.testing.assert_allclose(scores["mpjpe_per_frame_mm"][3], 1.0, atol=1e-3)
    np.testing.assert_allclose(np.delete(scores["mpjpe_per_frame_mm"], 3), 0.0, atol=1e-3)
    assert scores["p1_mm"] == pytest.approx(1.0 / 8, abs=1e-3)


def test_three_panel_frame_draws_the_truth_and_a_caption():
    renderer = render.PoseRenderer(960, 320, panels=3)
    pose = np.zeros((17, 3), np.float32)
    pose[:, 2] = np.linspace(0, 1.7, 17)  # a vertical stick is enough to draw
    kp = np.full((17, 3), 100.0, np.float32)
    with_truth = renderer.frame(kp, (640, 480), pose, truth_world=pose, caption="P1 12.3 mm")
    without = renderer.frame(kp, (640, 480), pose)
    assert with_truth.shape == (320, 960, 3)
    third = slice(640, 960)
    assert (with_truth[40:280, third] != without[40:280, third]).any()  # the skeleton
    assert (with_truth[-20:, :200] != without[-20:, :200]).any()  # the caption


def test_view_is_three_quarter_for_a_person_facing_the_camera():
    from aptpose_jax.world_frame import to_world

    # Camera frame: shoulders along x (facing the camera), a step forward along -z (towards it).
    pts = np.zeros((1, 17, 3), np.float32)
    pts[0, 11], pts[0, 14] = [0.2, -0.5, 0.0], [-0.2, -0.5, 0.0]
    pts[0, 3] = [0.0, 0.4, -0.4]
    world, _ = to_world(pts)
    screen = world[0] @ render._view_matrix().T  # (17, 2)
    width = abs(screen[11, 0] - screen[14, 0]) / 0.4
    depth = abs(screen[3, 0] - screen[0, 0]) / 0.4
    assert 0.55 < width < 0.85 and 0.55 < depth < 0.85  # neither edge-on nor flat frontal


def test_an_earlier_demo_keypoint_file_is_replaced_and_a_foreign_one_kept(demo_root, tmp_path):
    old = write_demo_video_keypoints(demo_root, tmp_path / "kp.npz", action="Walking", frames=8)
    new = write_demo_video_keypoints(demo_root, old, frames=8)  # the default sequence
    assert list(load_npz(new)["positions_2d"]) == ["S9_Discussion_1_cam0"]
    np.savez(tmp_path / "mine.npz", positions_2d=np.zeros(3))
    with pytest.raises(UserError, match="not this demo's keypoint file"):
        write_demo_video_keypoints(demo_root, tmp_path / "mine.npz", frames=8)


def test_without_a_video_the_2d_panel_zooms_on_the_person():
    kp = np.zeros((5, 17, 3), np.float32)
    kp[..., 0] = np.linspace(400, 500, 17)  # a person 100 x 200 px in a 1000 x 1000 frame
    kp[..., 1] = np.linspace(300, 500, 17)
    shifted, size = render.person_crop(kp, (1000, 1000))
    assert size == (240, 240)  # the larger side plus 20%
    assert shifted[..., :2].min() >= 0 and shifted[..., :2].max() <= 240
    np.testing.assert_allclose(shifted[..., 2], kp[..., 2])
    same, full = render.person_crop(np.full_like(kp, np.nan), (1000, 1000))
    assert full == (1000, 1000)
