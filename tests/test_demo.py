"""Synthetic demo data: determinism, official layouts, geometry, generalisation, atomicity."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from aptpose_jax.datasets import camera as cam_lib
from aptpose_jax.datasets import demo
from aptpose_jax.datasets.h36m import load_h36m
from aptpose_jax.datasets.mpi_inf_3dhp import load_3dhp
from aptpose_jax.datasets.safe_npz import load_npz
from aptpose_jax.datasets.skeleton import H36M_ACTIONS, H36M_BONE_PAIRS, H36M_KEPT_JOINTS
from aptpose_jax.errors import UnsafeDirectoryError

FRAMES = 40
TRAIN, TEST = ("S1", "S5", "S6", "S7", "S8"), ("S9", "S11")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return demo.generate_demo_data(tmp_path_factory.mktemp("demo"), 0, FRAMES)


def _npz(path, key):
    with np.load(path, allow_pickle=True) as f:
        return f[key].item()


def _assert_nested_equal(a, b):
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_nested_equal(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_nested_equal(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


def test_deterministic_from_seed(demo_dir, tmp_path):
    again = demo.generate_demo_data(tmp_path / "again", 0, FRAMES)
    other = demo.generate_demo_data(tmp_path / "other", 1, FRAMES)
    for name in demo.DEMO_FILES:
        _assert_nested_equal(load_npz(demo_dir / name), load_npz(again / name))
    a = load_npz(demo_dir / "data_3d_h36m.npz")["positions_3d"]["S1"]["Walking"]
    b = load_npz(other / "data_3d_h36m.npz")["positions_3d"]["S1"]["Walking"]
    assert a.shape != b.shape or np.abs(a - b).max() > 0.05


def test_h36m_files_have_official_structure(demo_dir):
    pos3d = _npz(demo_dir / "data_3d_h36m.npz", "positions_3d")
    assert sorted(pos3d) == sorted(TRAIN + TEST)
    for name in ("gt", "cpn_ft_h36m_dbb", "detectron_pt_coco"):
        path = demo_dir / f"data_2d_h36m_{name}.npz"
        pos2d, meta = _npz(path, "positions_2d"), _npz(path, "metadata")
        assert meta["num_joints"] == 17
        coco = name == "detectron_pt_coco"
        sym = [[1, 3, 5, 7, 9, 11, 13, 15], [2, 4, 6, 8, 10, 12, 14, 16]] if coco else [
            [4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16]]  # fmt: skip
        assert meta["keypoints_symmetry"] == sym
        if name == "cpn_ft_h36m_dbb":
            assert meta["layout_name"] == "h36m"
        assert list(pos2d) == list(pos3d)
        for subject, actions in pos3d.items():
            assert list(pos2d[subject]) == list(actions)
            for action, world in actions.items():
                assert re.fullmatch(r"[A-Za-z]+( \d)?", action)
                assert world.dtype == np.float32 and world.shape[1:] == (32, 3)
                cams = pos2d[subject][action]
                assert isinstance(cams, list) and len(cams) == 4
                for kp in cams:
                    assert kp.dtype == np.float32 and kp.shape[1:] == (17, 2)
                    # gt has the mocap length; detector files may be a few frames longer
                    assert (len(kp) == len(world)) if name == "gt" else (len(kp) >= len(world))
                    assert 0 < kp.min() and kp.max() < 1000  # pixels inside the image


def test_units_are_metres_and_bones_rigid(demo_dir):
    pos3d = _npz(demo_dir / "data_3d_h36m.npz", "positions_3d")
    per_subject = {}
    for subject, actions in pos3d.items():
        for action, world in actions.items():
            kept = world[:, list(H36M_KEPT_JOINTS)].astype(np.float64)  # (N, 17, 3)
            height = kept[..., 2].max(1) - kept[..., 2].min(1)  # (N,)
            assert 0.5 < height.min() and height.max() < 2.1, (subject, action)
            assert np.abs(kept[..., :2]).max() < 3.0  # inside the capture area
            bones = np.stack([np.linalg.norm(kept[:, c] - kept[:, p], axis=-1)
                              for p, c in H36M_BONE_PAIRS], 1)  # fmt: skip  # (N, 16)
            assert bones.std(0).max() < 1e-5, (subject, action)
            assert 0.1 < bones.mean() < 0.35
            per_subject.setdefault(subject, bones[0])
            np.testing.assert_allclose(bones[0], per_subject[subject], atol=1e-5)
    assert np.abs(per_subject["S9"] - per_subject["S1"]).max() > 0.005


def test_gt_2d_is_the_projection_of_the_3d(demo_dir):
    pos3d = _npz(demo_dir / "data_3d_h36m.npz", "positions_3d")
    gt = _npz(demo_dir / "data_2d_h36m_gt.npz", "positions_2d")
    cpn = _npz(demo_dir / "data_2d_h36m_cpn_ft_h36m_dbb.npz", "positions_2d")
    coco = _npz(demo_dir / "data_2d_h36m_detectron_pt_coco.npz", "positions_2d")
    cpn_err = []
    for subject in ("S1", "S11"):
        for action, world in pos3d[subject].items():
            for cam in range(4):
                quat, trans = cam_lib.camera_extrinsics(subject, cam)
                x_cam = cam_lib.world_to_camera(world[:, list(H36M_KEPT_JOINTS)], quat, trans)
                assert x_cam[..., 2].min() > 2.0  # in front of the camera, metres
                intr = cam_lib.camera_intrinsic_vector(subject, cam, normalized=False)
                proj = cam_lib.project_to_2d(x_cam, intr)
                np.testing.assert_allclose(proj, gt[subject][action][cam], atol=1e-3)
                n = len(world)
                cpn_err.append(np.linalg.norm(cpn[subject][action][cam][:n] - proj, axis=-1))
                # COCO shoulders/elbows/wrists follow the H36M ones (same order, l/r pairs)
                arms = coco[subject][action][cam][:n, 5:11]
                ref = proj[:, [11, 14, 12, 15, 13, 16]]
                assert np.linalg.norm(arms - ref, axis=-1).mean() < 25
    err = np.concatenate([e.ravel() for e in cpn_err])
    assert 1.0 < err.mean() < 15.0  # noisy but close, like a 2D detector
    assert err.max() > 15.0  # occasional outliers


def test_files_load_through_the_official_loaders(demo_dir):
    for keypoints in ("gt", "cpn_ft_h36m_dbb", "detectron_pt_coco"):
        train = load_h36m(demo_dir, keypoints=keypoints, subjects=TRAIN)
        test = load_h36m(demo_dir, keypoints=keypoints, subjects=TEST)
        assert set(train.groups) == set(H36M_ACTIONS)
        assert set(test.groups) == set(H36M_ACTIONS)
        assert len(train) == 4 * sum(len(demo.ACTION_PLAN[s]) for s in TRAIN)
    train3, test3 = load_3dhp(demo_dir, split="train"), load_3dhp(demo_dir, split="test")
    assert len(train3) > 0 and [k[0] for k in test3.keys] == [f"TS{i}" for i in range(1, 7)]
    assert all(0 < v.sum() < len(v) for v in test3.valid)


def test_3dhp_files_have_official_structure(demo_dir):
    train = _npz(demo_dir / "data_train_3dhp.npz", "data")
    for name, item in train.items():
        assert re.fullmatch(r"S\d Seq\d", name)
        cams, fps = item
        assert fps in (25, 50) and set(cams) <= {"0", "1", "2", "4", "5", "6", "7", "8"}
        for anim in cams.values():
            p2, p3 = anim["data_2d"], anim["data_3d"]
            assert p2.shape[1:] == (17, 2) and p3.shape[1:] == (17, 3) and len(p2) == len(p3)
            assert 0 < p2.min() and p2.max() < 2048
            assert p3[:, 14, 2].min() > 1500  # millimetres, in front of the camera
            head = np.linalg.norm(p3[:, 0] - p3[:, 16], axis=-1)
            assert 60 < head.mean() < 200  # a head-top to head bone in mm
    test = _npz(demo_dir / "data_test_3dhp.npz", "data")
    assert list(test) == [f"TS{i}" for i in range(1, 7)]
    for name, anim in test.items():
        width, height = (1920, 1080) if name in ("TS5", "TS6") else (2048, 2048)
        assert anim["data_2d"][..., 0].max() < width and anim["data_2d"][..., 1].max() < height
        assert set(np.unique(anim["valid"])) == {0, 1}


def test_test_subjects_are_not_copies_of_train_subjects(demo_dir):
    pos3d = _npz(demo_dir / "data_3d_h36m.npz", "positions_3d")

    def poses(subjects):
        out = [w[:, list(H36M_KEPT_JOINTS)] for s in subjects for w in pos3d[s].values()]
        out = np.concatenate(out).astype(np.float64)
        return (out - out[:, :1]).reshape(len(out), -1)  # (N, 51) pelvis-relative

    train, test = poses(TRAIN), poses(TEST)
    d2 = (test**2).sum(1)[:, None] + (train**2).sum(1)[None] - 2 * test @ train.T
    nearest = np.sqrt(np.maximum(d2.min(1), 0) / 17)  # RMS per joint, metres
    assert np.median(nearest) > 0.03
    # The same measure finds exact copies (sanity check of the metric).
    d2_self = (train[:50] ** 2).sum(1)[:, None] + (train**2).sum(1)[None] - 2 * train[:50] @ train.T
    assert np.sqrt(np.maximum(d2_self.min(1), 0)).max() < 1e-3


def test_interrupted_generation_is_never_accepted(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_save = demo.save_npz_atomic

    def failing_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (simulated)")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(demo, "save_npz_atomic", failing_save)
    with pytest.raises(OSError, match="simulated"):
        demo.generate_demo_data(tmp_path, 0, FRAMES)
    assert demo.read_manifest(tmp_path) is None
    assert not any(p.name.startswith(".demo-") for p in tmp_path.iterdir())  # temp cleaned
    monkeypatch.setattr(demo, "save_npz_atomic", real_save)
    demo.ensure_demo_data(tmp_path, frames_per_sequence=FRAMES)
    assert demo.read_manifest(tmp_path) is not None

    # A crash while complete files are moved in leaves the folder marked incomplete.
    real_replace = os.replace
    moved = {"n": 0}

    def failing_replace(src, dst):
        if os.path.dirname(dst) == str(tmp_path):  # a complete file moving into place
            moved["n"] += 1
            if moved["n"] == 2:
                raise OSError("crash while moving (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(demo.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        demo.generate_demo_data(tmp_path, 1, FRAMES)
    monkeypatch.setattr(demo.os, "replace", real_replace)
    assert demo.read_manifest(tmp_path) is None
    assert demo.ensure_demo_data(tmp_path) == tmp_path
    assert demo.read_manifest(tmp_path) is not None


def test_ensure_demo_data_reuses_complete_sets_and_completes_missing_files(demo_dir, tmp_path):
    mtimes = {n: (demo_dir / n).stat().st_mtime_ns for n in demo.DEMO_FILES}
    assert demo.ensure_demo_data(demo_dir) == demo_dir
    assert mtimes == {n: (demo_dir / n).stat().st_mtime_ns for n in demo.DEMO_FILES}
    root = demo.generate_demo_data(tmp_path / "d", 0, FRAMES)
    path = root / "data_2d_h36m_gt.npz"
    path.unlink()  # a file the generator wrote, deleted: written again
    assert demo.read_manifest(root) is None
    demo.ensure_demo_data(root)
    _assert_nested_equal(load_npz(path), load_npz(demo_dir / "data_2d_h36m_gt.npz"))
    # asking for other settings regenerates (every file is still the generator's)
    demo.ensure_demo_data(root, frames_per_sequence=FRAMES + 10)
    assert demo.read_manifest(root)["frames_per_sequence"] == FRAMES + 10


def test_generated_files_have_normal_permissions(demo_dir):
    for name in (*demo.DEMO_FILES, demo.MANIFEST):
        assert (demo_dir / name).stat().st_mode & 0o777 == 0o644, name


def test_a_directory_of_real_data_is_refused_and_left_untouched(tmp_path):
    real = {"data_3d_h36m.npz": b"the user's real file", "notes.txt": b"mine"}
    for name, content in real.items():
        (tmp_path / name).write_bytes(content)
    with pytest.raises(UnsafeDirectoryError) as err:
        demo.ensure_demo_data(tmp_path, frames_per_sequence=FRAMES)
    message = str(err.value)
    assert "data_3d_h36m.npz" in message and "notes.txt" in message
    assert "--config.data.root" in message  # the way out
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(real)
    for name, content in real.items():
        assert (tmp_path / name).read_bytes() == content
    with pytest.raises(UnsafeDirectoryError):
        demo.generate_demo_data(tmp_path, 0, FRAMES)  # the generator itself refuses too


def test_an_edited_demo_file_is_never_replaced(tmp_path):
    root = demo.generate_demo_data(tmp_path / "d", 0, FRAMES)
    path = root / "data_3d_h36m.npz"
    edited = path.read_bytes()[:1000]  # truncated or edited: not what the generator wrote
    path.write_bytes(edited)
    for call in (
        lambda: demo.ensure_demo_data(root),
        lambda: demo.ensure_demo_data(root, seed=5),
        lambda: demo.generate_demo_data(root, 0, FRAMES),
    ):
        with pytest.raises(UnsafeDirectoryError, match="data_3d_h36m.npz"):
            call()
        assert path.read_bytes() == edited
    # Other files of the user beside an unchanged demo set are kept as they are.
    other = demo.generate_demo_data(tmp_path / "e", 0, FRAMES)
    (other / "mine.txt").write_text("keep")
    demo.ensure_demo_data(other, seed=2, frames_per_sequence=FRAMES)
    assert (other / "mine.txt").read_text() == "keep"
    assert demo.read_manifest(other)["seed"] == 2


def test_cli_and_bad_arguments(tmp_path):
    demo.main(["--out", str(tmp_path / "cli"), "--seed", "3", "--frames_per_sequence", "30"])
    assert demo.read_manifest(tmp_path / "cli")["seed"] == 3
    with pytest.raises(ValueError, match="frames_per_sequence"):
        demo.generate_demo_data(tmp_path / "bad", 0, 5)
