"""`python -m aptpose_jax.infer` on generated files of every input format, and bad inputs."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from infer_helpers import (
    FRAMES,
    RES,
    alphapose_results,
    coco_results,
    save_converted,
    save_pth,
    save_workdir,
    tiny_model,
    walking_person,
)

from aptpose_jax import infer, steps, world_frame
from aptpose_jax.datasets.keypoint_files import detect_format
from aptpose_jax.datasets.safe_npz import save_npz_atomic
from aptpose_jax.datasets.tracking import fill_gaps, select_person
from aptpose_jax.errors import UserError
from aptpose_jax.predictor import Predictor
from aptpose_jax.seq2frame import window_indices

T = 30


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    return {
        "converted": save_converted(root / "converted"),
        "nomask": save_converted(root / "nomask", "lifter_nomask"),
        "stage1": save_converted(root / "stage1", "pretrain"),
    }


def _infer(tmp_path, keypoints, weights, *extra, out="out"):
    args = ["--keypoints", str(keypoints), "--weights", str(weights)]
    args += ["--out", str(tmp_path / out), "--batch-size", "16", *extra]
    infer.main(args)
    return tmp_path / out


def _check_outputs(out, n_frames, *, rendered=True):
    res = np.load(out / "poses_3d.npz")
    assert res["poses_3d"].shape == (n_frames, 17, 3)
    assert res["poses_world"].shape == (n_frames, 17, 3)
    assert res["keypoints_2d"].shape == (n_frames, 17, 2)
    assert res["interpolated_frames"].shape == (n_frames,)
    assert res["interpolated_joints"].shape == (n_frames, 17)
    for k in ("poses_3d", "poses_world", "keypoints_2d", "model_input"):
        assert np.isfinite(res[k]).all(), k
    np.testing.assert_array_equal(res["poses_3d"][:, 0], 0.0)  # root-relative
    assert abs(res["poses_world"][..., 2].min()) < 1e-6  # lowest joint on the ground
    back = world_frame.to_camera(res["poses_world"], float(res["world_shift"]))
    np.testing.assert_allclose(back, res["poses_3d"], atol=1e-5)
    np.testing.assert_array_equal(np.load(out / "poses_3d.npy"), res["poses_3d"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == n_frames and summary["lift_fps"] > 0
    if rendered:
        import imageio_ffmpeg

        assert (out / "frames.png").stat().st_size > 0
        count, _ = imageio_ffmpeg.count_frames_and_secs(str(out / "pose3d.mp4"))
        assert count == n_frames
    return res, summary


def test_videopose3d_custom_npz(tmp_path, weights):
    kp = walking_person(T)
    path = tmp_path / "data_2d_custom_myvideo.npz"
    save_npz_atomic(
        path,
        positions_2d={"clip.mp4": {"custom": [kp]}},
        metadata={"layout_name": "coco", "num_joints": 17,
                  "video_metadata": {"clip.mp4": {"w": RES[0], "h": RES[1]}}},
    )  # fmt: skip
    out = _infer(tmp_path, path, weights["converted"])
    res, summary = _check_outputs(out, T)
    assert summary["format"] == "videopose3d" and summary["resolution"] == list(RES)
    assert summary["resolution_from"] == "keypoint file"
    assert not res["interpolated_frames"].any()
    np.testing.assert_allclose(res["keypoints_2d"], kp[..., :2])


def test_coco_json_follows_the_most_confident_person_through_gaps(tmp_path, weights):
    a = walking_person(T, seed=1, conf=0.9)
    b = walking_person(T, seed=2, shift=(-200.0, 20.0), conf=0.5)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(coco_results([b, a], missing={1: {10, 11, 12}})))
    assert detect_format(path) == "coco"
    out = _infer(tmp_path, path, weights["converted"], "--resolution", "640x480", "--no-render")
    res, summary = _check_outputs(out, T, rendered=False)
    np.testing.assert_array_equal(np.nonzero(res["interpolated_frames"])[0], [10, 11, 12])
    assert res["interpolated_joints"][10:13].all()
    keep = ~res["interpolated_frames"]
    np.testing.assert_allclose(res["keypoints_2d"][keep], a[keep, :, :2], atol=1e-4)
    # The gap is filled by linear interpolation between frames 9 and 13.
    np.testing.assert_allclose(res["keypoints_2d"][11], (a[9, :, :2] + a[13, :, :2]) / 2, atol=1e-3)
    other = _infer(tmp_path, path, weights["converted"], "--resolution", "640x480",
                   "--no-render", "--person", "1", out="out_b")  # fmt: skip
    np.testing.assert_allclose(
        np.load(other / "poses_3d.npz")["keypoints_2d"], b[..., :2], atol=1e-4
    )


@pytest.mark.parametrize("halpe", [False, True], ids=["coco17", "halpe26"])
def test_alphapose_json(tmp_path, weights, halpe):
    a = walking_person(T, seed=3)
    b = walking_person(T, seed=4, shift=(200.0, 0.0), conf=0.4)
    path = tmp_path / "alphapose-results.json"
    path.write_text(json.dumps(alphapose_results([a, b], halpe=halpe)))
    out = _infer(tmp_path, path, weights["nomask"], "--resolution", "640x480", "--no-render")
    res, summary = _check_outputs(out, T, rendered=False)
    assert summary["format"] == "alphapose" and summary["input_layout"] == "coco"
    np.testing.assert_allclose(res["keypoints_2d"], a[..., :2], atol=1e-4)


def test_npy_with_confidence_interpolates_low_confidence_joints(tmp_path, weights):
    kp = walking_person(T, seed=5)
    kp[5:8, 9, 2] = 0.05  # the left wrist is unsure for three frames
    kp[20:22] = np.nan  # the person is missing
    path = tmp_path / "kp.npy"
    np.save(path, kp)
    out = _infer(tmp_path, path, weights["converted"], "--resolution", "640x480", "--no-render")
    res, _ = _check_outputs(out, T, rendered=False)
    assert res["interpolated_joints"][5:8, 9].all() and res["interpolated_joints"][:5].sum() == 0
    np.testing.assert_array_equal(np.nonzero(res["interpolated_frames"])[0], [20, 21])


def _write_video(path, n, size=RES, fps=30):
    import imageio_ffmpeg

    from aptpose_jax.render import _spawn_without_preexec

    writer = imageio_ffmpeg.write_frames(str(path), size, fps=fps)
    with _spawn_without_preexec():  # no JAX fork warning in this process either
        writer.send(None)
    for t in range(n):
        writer.send(np.full((size[1], size[0], 3), 8 * t, np.uint8))
    writer.close()
    return path


def test_npz_kpts_with_resolution_and_video(tmp_path, weights):
    kp = walking_person(T, seed=6)[..., :2]
    path = tmp_path / "input.npz"
    np.savez(path, kpts=kp)
    video = _write_video(tmp_path / "video.mp4", T)
    out = _infer(tmp_path, path, weights["converted"], "--video", str(video))
    _, summary = _check_outputs(out, T)
    assert summary["resolution"] == list(RES) and summary["resolution_from"] == "--video"
    assert summary["video_fps"] == pytest.approx(30.0)
    assert summary["video_background"] == {
        "video_frames_drawn": T, "video_longer": False, "note": ""
    }  # fmt: skip


def test_shorter_video_is_reported_and_the_rest_drawn_blank(tmp_path, weights, capsys):
    np.save(tmp_path / "kp.npy", walking_person(T, seed=6))
    video = _write_video(tmp_path / "short.mp4", 20)
    out = _infer(tmp_path, tmp_path / "kp.npy", weights["converted"], "--video", str(video))
    _, summary = _check_outputs(out, T)
    note = "--video has 20 frames, the keypoints 30: frames 20..29 are drawn on a blank background"
    assert summary["video_background"]["note"] == note
    assert summary["video_background"]["video_frames_drawn"] == 20
    assert f"note: {note}" in capsys.readouterr().out


def test_a_person_missing_for_ten_frames_stays_one_track(tmp_path, weights, capsys):
    """Person A (more confident) vanishes for frames 10..19 and walks on fast meanwhile: its
    box after the gap no longer overlaps the last one, the centre shift bridges it."""
    a = walking_person(T, seed=1, conf=0.9)
    a[..., 0] += 9.0 * np.arange(T, dtype=np.float32)[:, None] - 200.0  # ~10 px / frame
    b = walking_person(T, seed=2, shift=(250.0, 20.0), conf=0.5)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(coco_results([b, a], missing={1: set(range(10, 20))})))
    out = _infer(tmp_path, path, weights["converted"], "--resolution", "640x480", "--no-render")
    res, summary = _check_outputs(out, T, rendered=False)
    assert len(summary["tracks"]) == 2 and summary["person"] == 0
    assert summary["person_track"] == summary["tracks"][0]
    first = summary["tracks"][0]
    assert (first["first_frame"], first["last_frame"], first["frames"], first["gaps"]) == (
        0, T - 1, T - 10, 1
    )  # fmt: skip
    assert first["mean_score"] == pytest.approx(0.9, abs=1e-3)
    np.testing.assert_array_equal(np.nonzero(res["interpolated_frames"])[0], np.arange(10, 20))
    printed = capsys.readouterr().out
    assert "2 track(s) found" in printed and "person 0: frames 0-29 (20 seen, 1 gap(s)" in printed
    other = _infer(tmp_path, path, weights["converted"], "--resolution", "640x480",
                   "--no-render", "--person", "1", out="out_b")  # fmt: skip
    np.testing.assert_allclose(
        np.load(other / "poses_3d.npz")["keypoints_2d"], b[..., :2], atol=1e-4
    )
    # With a shorter allowed gap, A becomes two tracks: its second part is ranked after B.
    short = _infer(tmp_path, path, weights["converted"], "--resolution", "640x480",
                   "--no-render", "--max-gap", "5", out="out_c")  # fmt: skip
    tracks = json.loads((short / "summary.json").read_text())["tracks"]
    assert [(t["first_frame"], t["last_frame"]) for t in tracks] == [(0, 29), (0, 9), (20, 29)]


def test_infer_prints_no_third_party_warnings(tmp_path):
    """A normal rendered run with a video: no orbax/absl notes, no JAX fork warning."""
    workdir = save_workdir(tmp_path / "run")
    np.save(tmp_path / "kp.npy", walking_person(T))
    video = _write_video(tmp_path / "video.mp4", T)
    cmd = [sys.executable, "-m", "aptpose_jax.infer", "--keypoints", str(tmp_path / "kp.npy"),
           "--weights", str(workdir), "--out", str(tmp_path / "out"), "--video", str(video),
           "--batch-size", "16"]  # fmt: skip
    repo = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    noisy = [x for x in proc.stderr.splitlines() if "warning" in x.lower() or "fork" in x]
    assert not noisy, proc.stderr
    assert (tmp_path / "out" / "pose3d.mp4").is_file()


def test_predictor_core_is_the_eval_step(weights):
    """The Predictor's batch function and the evaluation step compute the same poses."""
    from flax import nnx

    predictor = Predictor.load(weights["converted"], batch_size=8)
    model, _ = tiny_model()
    x = np.random.default_rng(0).normal(0, 0.3, (8, FRAMES, 17, 2)).astype(np.float32)
    graphdef, params, batch_stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    eval_step = steps.make_eval_step(graphdef, rest, predictor.step_cfg)
    import jax

    key = jax.random.fold_in(jax.random.key(predictor.seed), 3)
    batch = {"input_2d": jax.numpy.asarray(x), "gt_3d": jax.numpy.zeros((8, 1, 17, 3))}
    expected = eval_step(params, batch_stats, batch, key)["pose"]
    got = predictor.windows_function()(x, np.int32(3))
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-6, atol=1e-6)


def test_weights_of_every_kind_give_the_same_poses(tmp_path, weights):
    kp = np.random.default_rng(1).normal(0, 0.3, (12, 17, 2)).astype(np.float32)
    pth = save_pth(tmp_path / "stage2.pth")
    workdir = save_workdir(tmp_path / "run", keypoints="detectron_pt_coco")
    outs = []
    for w in (weights["converted"], pth, workdir):
        p = Predictor.load(w, input_layout="h36m", batch_size=8)
        assert p.model_cfg.frames == FRAMES and p.model_cfg.stage == "lifter"
        outs.append(p(kp))
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=1e-6, atol=1e-6)
    assert Predictor.load(workdir).input_layout == "coco"  # from the run's data.keypoints
    assert Predictor.load(weights["converted"]).input_layout == "h36m"


def test_windows_replicate_the_edges():
    idx = window_indices(np.arange(3), n_frames=3, frames=5)
    np.testing.assert_array_equal(idx, [[0, 0, 0, 1, 2], [0, 0, 1, 2, 2], [0, 1, 2, 2, 2]])


def test_tracking_and_gap_filling_units():
    a = walking_person(6, seed=7)
    b = walking_person(6, seed=8, shift=(250.0, 0.0), conf=0.3)
    from aptpose_jax.datasets.keypoint_files import Detections, keypoint_box

    people = [[b[t], a[t]] for t in range(6)]
    det = Detections(
        people, [[keypoint_box(p) for p in f] for f in people],
        [[float(p[:, 2].mean()) for p in f] for f in people], None, "coco",
    )  # fmt: skip
    np.testing.assert_array_equal(select_person(det, 0), a)
    np.testing.assert_array_equal(select_person(det, 1), b)
    with pytest.raises(UserError, match=r"2 track\(s\) were found .*0: frames 0-5; 1: frames 0-5"):
        select_person(det, 2, source="kp.json")
    kp = a.copy()
    kp[2:4] = np.nan
    filled, joints, frames = fill_gaps(kp)
    np.testing.assert_array_equal(frames, [False, False, True, True, False, False])
    np.testing.assert_allclose(filled[2], a[1, :, :2] + (a[4, :, :2] - a[1, :, :2]) / 3, atol=1e-4)


# --- bad input: one line, exit status 2, no output directory -----------------------------------


def _bad_file(tmp_path, case):
    if case == "wrong_joint_count":
        np.save(tmp_path / "kp.npy", np.zeros((T, 15, 2), np.float32))
        return tmp_path / "kp.npy", ["--resolution", "640x480"]
    if case == "unknown_resolution":
        np.save(tmp_path / "kp.npy", walking_person(T))
        return tmp_path / "kp.npy", []
    if case == "empty_json":
        (tmp_path / "r.json").write_text("")
        return tmp_path / "r.json", ["--resolution", "640x480"]
    if case == "malformed_json":
        (tmp_path / "r.json").write_text('[{"image_id": 0, "keypoints": [1, 2')
        return tmp_path / "r.json", ["--resolution", "640x480"]
    if case == "no_person":
        (tmp_path / "r.json").write_text("[]")
        return tmp_path / "r.json", ["--resolution", "640x480"]
    if case == "all_nan":
        np.save(tmp_path / "kp.npy", np.full((T, 17, 2), np.nan, np.float32))
        return tmp_path / "kp.npy", ["--resolution", "640x480"]
    if case == "normalised":  # [0, 1] units while a 960x544 frame is declared
        np.save(tmp_path / "kp.npy", walking_person(T)[..., :2] / np.float32(640.0))
        return tmp_path / "kp.npy", ["--resolution", "960x544"]
    if case == "portrait":  # a 1080x1920 video whose metadata says 1920x1080
        kp = walking_person(T) * np.array([1.0, 3.6, 1.0], np.float32)  # y up to ~1500
        np.save(tmp_path / "kp.npy", kp)
        return tmp_path / "kp.npy", ["--resolution", "1920x1080"]
    if case == "missing_video":
        np.save(tmp_path / "kp.npy", walking_person(T))
        return tmp_path / "kp.npy", ["--resolution", "640x480", "--video", "nowhere.mp4"]
    if case == "video_size":
        np.save(tmp_path / "kp.npy", walking_person(T))
        video = _write_video(tmp_path / "small.mp4", T, (320, 240))
        return tmp_path / "kp.npy", ["--resolution", "640x480", "--video", str(video)]
    if case == "not_a_video":
        np.save(tmp_path / "kp.npy", walking_person(T))
        (tmp_path / "v.mp4").write_text("not a video")
        return tmp_path / "kp.npy", ["--resolution", "640x480", "--video", str(tmp_path / "v.mp4")]
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("wrong_joint_count", "17 COCO keypoints"),
        ("unknown_resolution", "--resolution"),
        ("empty_json", "empty"),
        ("malformed_json", "malformed JSON"),
        ("no_person", "no person"),
        ("all_nan", "no person"),
        ("normalised", "look normalised (every coordinate within [0, 1]"),
        ("portrait", "they fit 1080x1920: --resolution 1080x1920"),
        ("missing_video", "--video nowhere.mp4: no such file"),
        ("video_size", "is 320x240 but the keypoints are pixels of a 640x480 frame"),
        ("not_a_video", "ffmpeg cannot read it as a video"),
        ("stage1_weights", "Stage I"),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_output(tmp_path, weights, capsys, case, expected):
    w = weights["converted"]
    if case == "stage1_weights":
        w = weights["stage1"]
        np.save(tmp_path / "kp.npy", walking_person(T))
        path, extra = tmp_path / "kp.npy", ["--resolution", "640x480"]
    else:
        path, extra = _bad_file(tmp_path, case)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        _infer(tmp_path, path, w, *extra)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert "lifted" not in captured.out  # refused before the lift
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp dir left


def test_existing_output_is_never_overwritten(tmp_path, weights, capsys):
    np.save(tmp_path / "kp.npy", walking_person(T))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("user file")
    with pytest.raises(SystemExit):
        _infer(tmp_path, tmp_path / "kp.npy", weights["converted"], "--resolution", "640x480")
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "out" / "mine.txt").read_text() == "user file"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mine.txt"]


def test_command_line_error_has_no_traceback(tmp_path):
    np.save(tmp_path / "kp.npy", np.zeros((4, 15, 2), np.float32))
    cmd = [sys.executable, "-m", "aptpose_jax.infer", "--keypoints", str(tmp_path / "kp.npy")]
    cmd += ["--weights", str(tmp_path), "--out", str(tmp_path / "out"), "--resolution", "8x8"]
    repo = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")


def test_demo_video_keypoints_run_through_infer(demo_root, tmp_path, weights):
    """`make demo`'s infer step on the demo's Detectron COCO keypoints (tiny model here)."""
    from aptpose_jax.datasets.demo_video import write_demo_video_keypoints
    from aptpose_jax.datasets.keypoint_files import read_keypoints

    path = write_demo_video_keypoints(demo_root, tmp_path / "data_2d_custom_demo.npz", frames=24)
    det = read_keypoints(path)
    assert det.fmt == "videopose3d" and det.n_frames == 24 and det.resolution == (1000, 1002)
    out = _infer(tmp_path, path, weights["converted"])
    _, summary = _check_outputs(out, 24)
    assert summary["input_layout"] == "h36m"  # converted COCO -> H36M for this model
    # Re-running keeps the identical file; a foreign file at --out is never overwritten.
    assert write_demo_video_keypoints(demo_root, path, frames=24) == path
    foreign = tmp_path / "mine.npz"
    foreign.write_bytes(b"my own file")
    with pytest.raises(UserError, match="not this demo's keypoint file"):
        write_demo_video_keypoints(demo_root, foreign, frames=24)
    assert foreign.read_bytes() == b"my own file"
