"""Cameras, safe npz reading, validation errors and the H36M / 3DHP / in-the-wild loaders."""

import hashlib
import os
import struct
import types

import numpy as np
import pytest

from aptpose_jax.datasets import camera as cam_lib
from aptpose_jax.datasets import load_sequences
from aptpose_jax.datasets.h36m import deterministic_random, load_h36m
from aptpose_jax.datasets.mpi_inf_3dhp import load_3dhp
from aptpose_jax.datasets.safe_npz import UnsafePickleError, load_npz, save_npz_atomic
from aptpose_jax.datasets.skeleton import H36M_KEPT_JOINTS, coco_to_h36m
from aptpose_jax.datasets.wild import load_custom_npz, load_keypoints_npy

SYM = [[4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16]]


def _quat_matrix(q):
    """Rotation matrix of unit quaternion (w, x, y, z), textbook formula, float64."""
    w, x, y, z = np.asarray(q, np.float64)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


# ----------------------------------------------------------------------------- cameras


def test_world_camera_round_trip_and_matrix_formula():
    rng = np.random.default_rng(0)
    world = rng.normal(size=(4, 17, 3)).astype(np.float32) + [0, 0, 1]
    q, t = cam_lib.camera_extrinsics("S9", 2)
    np.testing.assert_allclose(np.linalg.norm(q), 1, atol=1e-6)
    x_cam = cam_lib.world_to_camera(world, q, t)
    assert x_cam.dtype == np.float32
    expected = (world.astype(np.float64) - t) @ _quat_matrix(q)  # R^T (X - t), row vectors
    np.testing.assert_allclose(x_cam, expected, atol=2e-5)
    np.testing.assert_allclose(cam_lib.camera_to_world(x_cam, q, t), world, atol=2e-5)
    # Subjects stand in front of every camera: positive depth near the capture volume centre.
    assert (cam_lib.world_to_camera(np.zeros((1, 3)), q, t)[..., 2] > 3).all()


def test_project_to_2d_hand_values():
    x = np.array([[0.2, 0.1, 1.0]])
    radial = np.array([1, 1, 0, 0, 0.1, 0, 0, 0, 0.0])  # f=1, c=0, k1=0.1
    # r2 = 0.05, radial factor 1.005.
    np.testing.assert_allclose(cam_lib.project_to_2d(x, radial), [[0.201, 0.1005]], atol=1e-12)
    tangential = np.array([1, 1, 0, 0, 0, 0, 0, 0.01, 0.02])
    # tan = 0.01*0.2 + 0.02*0.1 = 0.004; xy*1.004 + p*r2.
    np.testing.assert_allclose(cam_lib.project_to_2d(x, tangential), [[0.2013, 0.1014]], atol=1e-12)
    pinhole = np.array([2, 3, 0.5, -0.5, 0, 0, 0, 0, 0.0])
    np.testing.assert_allclose(
        cam_lib.project_to_2d(np.array([[0.4, -0.2, 2.0]]), pinhole), [[0.9, -0.8]], atol=1e-12
    )


def test_normalised_intrinsics_consistent_with_pixels():
    rng = np.random.default_rng(1)
    x = rng.normal(scale=0.3, size=(10, 3)) + [0, 0, 5]
    for cam_idx in range(4):
        w, h = cam_lib.camera_resolution(cam_idx)
        px = cam_lib.project_to_2d(x, cam_lib.camera_intrinsic_vector("S1", cam_idx, False))
        norm = cam_lib.project_to_2d(x, cam_lib.camera_intrinsic_vector("S1", cam_idx))
        np.testing.assert_allclose(norm, cam_lib.normalize_screen_coordinates(px, w, h), atol=1e-5)
    vec = cam_lib.camera_intrinsic_vector("S1", 0)
    np.testing.assert_allclose(vec[:4], [1145.0494 / 500, 1143.7811 / 500, 0.0250830, 0.0289030],
                               atol=1e-6)  # fmt: skip


def test_normalisation_hand_values_and_inverse():
    px = np.array([[500.0, 501.0], [0.0, 0.0], [1000.0, 1002.0]], np.float32)
    norm = cam_lib.normalize_screen_coordinates(px, 1000, 1002)
    np.testing.assert_allclose(norm, [[0, 0], [-1, -1.002], [1, 1.002]], atol=1e-6)
    assert norm.dtype == np.float32
    np.testing.assert_allclose(cam_lib.image_coordinates(norm, 1000, 1002), px, atol=1e-4)


# ----------------------------------------------------------------------------- safe npz


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Arbitrary:
    pass


def _object_npz(path, value):
    holder = np.empty((), dtype=object)
    holder[()] = value
    np.savez(path, data=holder)


def test_restricted_unpickler_rejects_malicious(tmp_path):
    marker = tmp_path / "pwned"
    _object_npz(tmp_path / "evil.npz", {"x": [_Evil(marker)]})
    with pytest.raises(UnsafePickleError, match=r"evil\.npz.*'data'.*system"):
        load_npz(tmp_path / "evil.npz")
    assert not marker.exists()

    class _Eval:
        def __reduce__(self):
            return (eval, ("1+1",))

    _object_npz(tmp_path / "eval.npz", _Eval())
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        load_npz(tmp_path / "eval.npz")
    _object_npz(tmp_path / "cls.npz", {"a": _Arbitrary()})
    with pytest.raises(UnsafePickleError, match="_Arbitrary"):
        load_npz(tmp_path / "cls.npz")


def test_safe_npz_round_trip(tmp_path):
    value = {"S1": {"Walk 1": [np.ones((3, 17, 2), np.float32), None]}, "n": (1, 2.5, "x", True)}
    out = save_npz_atomic(tmp_path / "ok.npz", data=value, plain=np.arange(4, dtype=np.int16))
    assert sorted(os.listdir(tmp_path)) == ["ok.npz"]  # no temp leftovers
    loaded = load_npz(out)
    np.testing.assert_array_equal(loaded["data"]["S1"]["Walk 1"][0], value["S1"]["Walk 1"][0])
    assert loaded["data"]["n"] == (1, 2.5, "x", True) and loaded["plain"].dtype == np.int16
    assert np.load(out, allow_pickle=True)["data"].item()["S1"]["Walk 1"][1] is None
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "missing.npz")


# ----------------------------------------------------------------------------- H36M


def _h36m_files(root, n3d=None, extra_2d=5, keypoints="cpn_ft_h36m_dbb", channels=2, sym=SYM):
    """Two subjects, two actions; 2D dict lists actions in the opposite order of the 3D dict."""
    rng = np.random.default_rng(0)
    n3d = n3d or {"Walking 1": 40, "Eating 2": 31}
    pos3d, pos2d = {}, {}
    for subject in ("S1", "S5"):
        pos3d[subject] = {
            a: (rng.normal(scale=0.3, size=(n, 32, 3)) + [0, 0, 1]).astype(np.float32)
            for a, n in n3d.items()
        }
        pos2d[subject] = {
            a: [rng.uniform(0, 1000, (n + extra_2d, 17, channels)).astype(np.float32)
                for _ in range(4)]
            for a, n in reversed(list(n3d.items()))
        }  # fmt: skip
    save_npz_atomic(root / "data_3d_h36m.npz", positions_3d=pos3d)
    meta = {"layout_name": "h36m", "num_joints": 17, "keypoints_symmetry": sym}
    save_npz_atomic(root / f"data_2d_h36m_{keypoints}.npz", positions_2d=pos2d, metadata=meta)
    return pos3d, pos2d


def test_load_h36m_contents(tmp_path):
    pos3d, pos2d = _h36m_files(tmp_path)
    seqs = load_h36m(tmp_path, subjects="S5,S1")
    expected_keys = [(s, a, c) for s in ("S5", "S1") for a in ("Eating 2", "Walking 1")
                     for c in range(4)]  # fmt: skip
    assert seqs.keys == expected_keys
    assert seqs.groups[:4] == ["Eating"] * 4 and seqs.groups[4] == "Walking"
    assert seqs.cameras.shape == (16, 9)
    np.testing.assert_array_equal(seqs.cameras[5], cam_lib.camera_intrinsic_vector("S5", 1))
    i = expected_keys.index(("S1", "Walking 1", 3))
    world = pos3d["S1"]["Walking 1"][:, list(H36M_KEPT_JOINTS)].astype(np.float64)  # (N, 17, 3)
    q, t = cam_lib.camera_extrinsics("S1", 3)
    cam = (world - t) @ _quat_matrix(q)
    expected = cam.copy()
    expected[:, 1:] -= cam[:, :1]  # root-relative, root absolute
    assert seqs.poses_3d[i].shape == (40, 17, 3) and seqs.poses_3d[i].dtype == np.float32
    np.testing.assert_allclose(seqs.poses_3d[i], expected, atol=3e-5)
    raw2d = pos2d["S1"]["Walking 1"][3][:40]  # truncated to the 3D length
    assert seqs.poses_2d[i].shape == (40, 17, 2)
    np.testing.assert_allclose(seqs.poses_2d[i][..., 0], raw2d[..., 0] / 1000 * 2 - 1, atol=1e-6)
    np.testing.assert_allclose(seqs.poses_2d[i][..., 1], raw2d[..., 1] / 500 - 1.002, atol=1e-6)
    assert seqs.joints_left_2d == tuple(SYM[0])
    only = load_h36m(tmp_path, subjects=["S1"], actions="Walk", need_3d=False)
    assert only.keys == [("S1", "Walking 1", c) for c in range(4)] and only.poses_3d is None


def test_deterministic_random_definition():
    digest = hashlib.sha256(b"1234").digest()
    value = struct.unpack("<I", digest[:4])[0] / (2**32 - 1)
    assert deterministic_random(3, 50, "1234") == int(value * 47) + 3


def test_load_h36m_subset_and_downsample(tmp_path):
    _h36m_files(tmp_path, n3d={"Walking 1": 40, "Eating 2": 31})
    full = load_h36m(tmp_path, subjects="S1")
    down = load_h36m(tmp_path, subjects="S1", downsample=2)
    np.testing.assert_array_equal(down.poses_2d[0], full.poses_2d[0][::2])
    sub = load_h36m(tmp_path, subjects="S1", downsample=2, subset=0.5)
    for k, length in ((0, 31), (4, 40)):
        n = int(round(length // 2 * 0.5) * 2)
        start = deterministic_random(0, length - n + 1, str(length))
        np.testing.assert_array_equal(sub.poses_3d[k], full.poses_3d[k][start : start + n : 2])
        np.testing.assert_array_equal(sub.poses_2d[k], full.poses_2d[k][start : start + n : 2])


def test_load_h36m_detectron_keeps_two_channels(tmp_path):
    coco = [[1, 3, 5, 7, 9, 11, 13, 15], [2, 4, 6, 8, 10, 12, 14, 16]]
    _h36m_files(tmp_path, keypoints="detectron_pt_coco", channels=4, sym=coco)
    seqs = load_h36m(tmp_path, subjects="S1", keypoints="detectron_pt_coco")
    assert seqs.poses_2d[0].shape[-1] == 2 and seqs.joints_right_2d == tuple(coco[1])


def test_h36m_missing_file_message(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data_2d_h36m_cpn_ft_h36m_dbb\.npz.*:demo"):
        load_h36m(tmp_path, subjects="S1")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"channels": 3}, r"expected shape \(frames, joints, 2\)"),
        ({"extra_2d": -3}, "2D must be at least as long"),
    ],
)
def test_h36m_bad_2d(tmp_path, kwargs, match):
    _h36m_files(tmp_path, **kwargs)
    with pytest.raises(ValueError, match=match):
        load_h36m(tmp_path, subjects="S1")


def test_h36m_nan_and_joint_count(tmp_path):
    pos3d, pos2d = _h36m_files(tmp_path)
    pos2d["S1"]["Eating 2"][1][7, 3, 0] = np.nan
    save_npz_atomic(tmp_path / "data_2d_h36m_cpn_ft_h36m_dbb.npz", positions_2d=pos2d)
    with pytest.raises(ValueError, match=r"'Eating 2'\]\[1\].*NaN/inf.*frame 7"):
        load_h36m(tmp_path, subjects="S1")
    pos2d["S1"]["Eating 2"][1] = np.zeros((40, 16, 2), np.float32)
    save_npz_atomic(tmp_path / "data_2d_h36m_cpn_ft_h36m_dbb.npz", positions_2d=pos2d)
    with pytest.raises(ValueError, match="expected 17 joints, got 16"):
        load_h36m(tmp_path, subjects="S1")
    pos3d["S1"]["Walking 1"] = np.zeros((40, 17, 3), np.float32)
    _, pos2d = _h36m_files(tmp_path)
    save_npz_atomic(tmp_path / "data_3d_h36m.npz", positions_3d=pos3d)
    with pytest.raises(ValueError, match=r"expected \(N, 32, 3\)"):
        load_h36m(tmp_path, subjects="S1")


# ----------------------------------------------------------------------------- 3DHP


def _seq3dhp(rng, n, extra_axis=False):
    d2 = rng.uniform(0, 2048, (n, 17, 2))
    return {"data_2d": d2[:, None] if extra_axis else d2, "data_3d": rng.normal(size=(n, 17, 3))}


@pytest.mark.parametrize("spelling", ["data_{}_3dhp.npz", "data_{}.3dhp.npz"])
def test_load_3dhp(tmp_path, spelling):
    rng = np.random.default_rng(0)
    train = {"S1 Seq1": [{"0": _seq3dhp(rng, 12), "4": _seq3dhp(rng, 12)}, 25],
             "S2 Seq2": [{"1": _seq3dhp(rng, 9)}, 50]}  # fmt: skip
    test = {name: dict(_seq3dhp(rng, 10, extra_axis=True), valid=(np.arange(10) % 3 == 0)[None])
            for name in ("TS1", "TS5")}  # fmt: skip
    save_npz_atomic(tmp_path / spelling.format("train"), data=train)
    save_npz_atomic(tmp_path / spelling.format("test"), data=test)
    tr = load_3dhp(tmp_path, split="train")
    assert tr.keys == [("S1", "Seq1", "0"), ("S1", "Seq1", "4"), ("S2", "Seq2", "1")]
    assert tr.groups == ["S1 Seq1", "S1 Seq1", "S2 Seq2"] and tr.root_joint == 14
    raw3 = train["S1 Seq1"][0]["4"]["data_3d"]
    exp = raw3 - raw3[:, 14:15]
    exp[:, 14] = raw3[:, 14]
    assert tr.poses_3d[1].dtype == np.float32
    np.testing.assert_allclose(tr.poses_3d[1], exp, atol=1e-5)
    np.testing.assert_allclose(tr.poses_2d[1], train["S1 Seq1"][0]["4"]["data_2d"] / 1024 - 1,
                               atol=1e-6)  # fmt: skip
    assert not tr.cameras.any() and tr.valid is None
    te = load_3dhp(tmp_path, split="test")
    assert te.keys == [("TS1",), ("TS5",)] and te.groups == ["TS1", "TS5"]
    np.testing.assert_array_equal(te.valid[1], np.arange(10) % 3 == 0)
    raw = test["TS5"]["data_2d"][:, 0]
    np.testing.assert_allclose(te.poses_2d[1][..., 1], raw[..., 1] / 960 - 1080 / 1920, atol=1e-6)
    raw = test["TS1"]["data_2d"][:, 0]
    np.testing.assert_allclose(te.poses_2d[0][..., 1], raw[..., 1] / 1024 - 1, atol=1e-6)


def test_3dhp_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data_test_3dhp\.npz.*data_test\.3dhp\.npz"):
        load_3dhp(tmp_path, split="test")


# ----------------------------------------------------------------------------- in the wild


def test_coco_to_h36m_convention():
    kp = np.arange(17 * 2, dtype=np.float64).reshape(17, 2)
    h = coco_to_h36m(kp)
    np.testing.assert_array_equal(h[0], (kp[11] + kp[12]) / 2)  # pelvis = mid-hip
    np.testing.assert_array_equal(h[8], (kp[5] + kp[6]) / 2)  # thorax = mid-shoulder
    np.testing.assert_array_equal(h[7], (h[0] + h[8]) / 2)
    np.testing.assert_array_equal(h[[1, 3, 4, 6, 9, 13, 16]], kp[[12, 16, 11, 15, 0, 9, 10]])
    np.testing.assert_array_equal(h[10], kp[1:5].mean(0))


def test_wild_loaders(tmp_path):
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 1000, (20, 17, 3)).astype(np.float32)
    np.save(tmp_path / "clip.npy", kp)
    seqs = load_keypoints_npy(tmp_path / "clip.npy")
    assert seqs.poses_3d is None and seqs.keys == [("clip",)]
    np.testing.assert_allclose(seqs.poses_2d[0][..., 1], kp[..., 1] / 500 - 1.002, atol=1e-6)
    assert seqs.joints_left_2d == (1, 3, 5, 7, 9, 11, 13, 15)
    h36 = load_keypoints_npy(tmp_path / "clip.npy", width=640, height=480, to_h36m=True)
    np.testing.assert_allclose(
        h36.poses_2d[0][:, 0], cam_lib.normalize_screen_coordinates(
            (kp[:, 11, :2] + kp[:, 12, :2]) / 2, 640, 480), atol=1e-6)  # fmt: skip
    assert h36.joints_left_2d == (4, 5, 6, 11, 12, 13)
    save_npz_atomic(
        tmp_path / "data_2d_custom_v.npz",
        positions_2d={"a.mp4": {"custom": [kp[:, :, :2]]}, "b.mp4": {"custom": [kp[:5]]}},
        metadata={"layout_name": "coco", "video_metadata": {"a.mp4": {"w": 1920, "h": 1080},
                                                            "b.mp4": {"w": 100, "h": 100}}},
    )  # fmt: skip
    custom = load_custom_npz(tmp_path / "data_2d_custom_v.npz")
    assert custom.keys == [("a.mp4",), ("b.mp4",)]
    np.testing.assert_allclose(custom.poses_2d[0][..., 0], kp[..., 0] / 960 - 1, atol=1e-6)
    bad = kp.copy()
    bad[2, 0, 0] = np.inf
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match="NaN/inf"):
        load_keypoints_npy(tmp_path / "bad.npy")


# ----------------------------------------------------------------------------- dispatcher


def _cfg(root, **kw):
    base = dict(dataset="h36m", root=str(root), keypoints="cpn_ft_h36m_dbb",
                subjects_train="S1", subjects_test=["S5"], actions="*", downsample=1,
                subset=1.0, source="npz", tfds_data_dir="", demo=False)  # fmt: skip
    base.update(kw)
    return types.SimpleNamespace(**base)


def test_load_sequences_dispatch(tmp_path, monkeypatch):
    _h36m_files(tmp_path)
    assert {k[0] for k in load_sequences(_cfg(tmp_path), "train").keys} == {"S1"}
    assert {k[0] for k in load_sequences(_cfg(tmp_path), "test").keys} == {"S5"}
    calls = []
    fake_tfds = types.ModuleType("aptpose_jax.datasets.tfds_builders")
    fake_tfds.load_from_tfds = lambda cfg, split: calls.append(("tfds", split)) or "from-tfds"
    monkeypatch.setitem(__import__("sys").modules, fake_tfds.__name__, fake_tfds)
    assert load_sequences(_cfg(tmp_path, source="tfds"), "test") == "from-tfds"
    fake_demo = types.ModuleType("aptpose_jax.datasets.demo")
    fake_demo.ensure_demo_data = lambda root: calls.append(("demo", str(root))) or tmp_path
    monkeypatch.setitem(__import__("sys").modules, fake_demo.__name__, fake_demo)
    seqs = load_sequences(_cfg(tmp_path / "elsewhere", demo=True), "train")
    assert calls == [("tfds", "test"), ("demo", str(tmp_path / "elsewhere"))] and len(seqs) == 8
    with pytest.raises(ValueError, match="data.dataset"):
        load_sequences(_cfg(tmp_path, dataset="coco"), "train")
