"""TFDS builders: ArrayRecord datasets built without TensorFlow read back as the npz loaders."""

from __future__ import annotations

import sys

import ml_collections
import numpy as np
import pytest

from aptpose_jax.datasets import demo, load_sequences
from aptpose_jax.datasets.tfds_builders import AptposeDemo, DemoConfig, load_from_tfds

FRAMES = 40


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return demo.generate_demo_data(tmp_path_factory.mktemp("demo"), 0, FRAMES)


def _cfg(root, tfds_dir, **overrides) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict(
        {
            "dataset": "h36m",
            "root": str(root),
            "keypoints": "cpn_ft_h36m_dbb",
            "subjects_train": "S1,S5,S6,S7,S8",
            "subjects_test": "S9,S11",
            "actions": "*",
            "downsample": 1,
            "subset": 1.0,
            "source": "tfds",
            "tfds_data_dir": str(tfds_dir),
            "demo": True,
            "need_3d": True,
        }
    )
    cfg.update(overrides)
    return cfg


def _assert_same(a, b):
    assert a.name == b.name and a.keys == b.keys and len(a) > 0
    assert a.groups == b.groups and a.subjects == b.subjects and a.cam_indices == b.cam_indices
    for field in ("joints_left_2d", "joints_right_2d", "joints_left_3d", "joints_right_3d"):
        assert tuple(getattr(a, field)) == tuple(getattr(b, field))
    assert a.root_joint == b.root_joint
    np.testing.assert_array_equal(a.cameras, b.cameras)
    pairs = [(a.poses_2d, b.poses_2d), (a.poses_3d, b.poses_3d), (a.valid, b.valid)]
    for xs, ys in pairs:
        assert (xs is None) == (ys is None)
        for x, y in zip(xs or [], ys or [], strict=True):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"keypoints": "gt", "actions": "Walk,Sitting", "subjects_train": "S8,S1"},
        {"keypoints": "detectron_pt_coco", "subset": 0.5, "downsample": 2},
        {"need_3d": False},
        {"dataset": "mpi_inf_3dhp"},
        {"demo": False},  # the `h36m` builder, reading the files as its manual folder
        {"demo": False, "dataset": "mpi_inf_3dhp"},
    ],
)
def test_tfds_reads_back_what_the_npz_loader_gives(demo_dir, tmp_path_factory, overrides):
    tfds_dir = tmp_path_factory.getbasetemp() / "tfds"  # shared: later cases reuse builds
    cfg = _cfg(demo_dir, tfds_dir, **overrides)
    for split in ("train", "test"):
        from_tfds = load_from_tfds(cfg, split)
        npz_cfg = ml_collections.ConfigDict(cfg.to_dict())
        npz_cfg.source = "npz"
        _assert_same(from_tfds, load_sequences(npz_cfg, split))
    assert "tensorflow" not in sys.modules


def test_demo_builder_generates_its_own_data(demo_dir, tmp_path):
    config = DemoConfig(name="tiny_gt", keypoints="gt", frames_per_sequence=FRAMES)
    builder = AptposeDemo(config=config, data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    assert sorted(builder.info.splits.keys()) == sorted(demo.ACTION_PLAN)
    source = builder.as_data_source(split="S9")
    npz = load_sequences(
        _cfg(demo_dir, tmp_path, keypoints="gt", source="npz", subjects_test="S9"), "test"
    )
    assert len(source) == len(npz)
    first = min((source[i] for i in range(len(source))), key=lambda ex: int(ex["index"]))
    n3d = int(first["n_frames_3d"])
    np.testing.assert_array_equal(first["poses_2d"][:n3d], npz.poses_2d[0])
    np.testing.assert_array_equal(first["poses_3d"], npz.poses_3d[0])


def test_unknown_subject_is_a_clear_error(demo_dir, tmp_path):
    cfg = _cfg(demo_dir, tmp_path, subjects_test="S2")
    with pytest.raises(KeyError, match="subject 'S2' not in the dataset"):
        load_from_tfds(cfg, "test")
