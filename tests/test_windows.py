"""Window enumeration, padding and flips of `WindowDataset` against hand-computed cases."""

import numpy as np
import pytest

from aptpose_jax.datasets.sequences import PoseSequences
from aptpose_jax.datasets.windows import (
    WindowDataset,
    enumerate_pairs,
    window_frame_indices,
)
from aptpose_jax.flip import flip_camera as flip_cameras
from aptpose_jax.flip import flip_pose as flip_poses

LEFT = (4, 5, 6, 11, 12, 13)
RIGHT = (1, 2, 3, 14, 15, 16)
PERM = np.arange(17)
PERM[list(LEFT)], PERM[list(RIGHT)] = RIGHT, LEFT


def _coded_sequences(lengths, valid=None, with_3d=True):
    """Sequences whose values encode (sequence, frame, joint) so gathers can be decoded."""
    p2, p3 = [], []
    for s, n in enumerate(lengths):
        t = np.arange(n, dtype=np.float32)[:, None] + 1000 * s  # (T, 1)
        j = np.arange(17, dtype=np.float32)[None, :]  # (1, J)
        p2.append(np.stack(np.broadcast_arrays(t + 0 * j, j + 0 * t), -1))  # (T, J, 2)
        p3.append(np.stack(np.broadcast_arrays(t + 0 * j, j + 0 * t, 0 * j + 0 * t + s), -1))
    cams = np.arange(len(lengths) * 9, dtype=np.float32).reshape(-1, 9) + 1
    return PoseSequences(
        name="t", keys=[(f"S{s}",) for s in range(len(lengths))], poses_2d=p2,
        poses_3d=p3 if with_3d else None, cameras=cams,
        groups=["A" if s % 2 == 0 else "B" for s in range(len(lengths))],
        subjects=[f"S{s % 3}" for s in range(len(lengths))], valid=valid,
        cam_indices=[s % 4 for s in range(len(lengths))],
    )  # fmt: skip


def test_pairs_train_order_with_flips():
    seq, start, flip = enumerate_pairs(np.array([5, 3]), chunk=1, flip=True)
    np.testing.assert_array_equal(seq, [0] * 10 + [1] * 6)
    np.testing.assert_array_equal(start, [0, 1, 2, 3, 4] * 2 + [0, 1, 2] * 2)
    np.testing.assert_array_equal(flip, [False] * 5 + [True] * 5 + [False] * 3 + [True] * 3)


def test_pairs_stride_chunking():
    # L=10, chunk 4: n_chunks 3, offset (12 - 10) // 2 = 1 -> starts -1, 3, 7.
    _, start, _ = enumerate_pairs(np.array([10]), chunk=4)
    np.testing.assert_array_equal(start, [-1, 3, 7])
    # L=8, chunk 3: n_chunks 3, offset (9 - 8) // 2 = 0 -> starts 0, 3, 6.
    _, start, _ = enumerate_pairs(np.array([8]), chunk=3)
    np.testing.assert_array_equal(start, [0, 3, 6])


def test_window_indices_hand_cases():
    # F=5, tds=2, L=6, centre 1: raw -3, -1, 1, 3, 5 -> clipped 0, 0, 1, 3, 5.
    np.testing.assert_array_equal(window_frame_indices([1], [6], 5, 2), [[0, 0, 1, 3, 5]])
    # F=5, tds=1, L=4, centre 3: 1, 2, 3, 4, 5 -> 1, 2, 3, 3, 3.
    np.testing.assert_array_equal(window_frame_indices([3], [4], 5, 1), [[1, 2, 3, 3, 3]])
    # Sequence shorter than the raw span on both sides (Q20 fixed): still F frames.
    idx = window_frame_indices([4], [10], 27, 2)
    assert idx.shape == (1, 27)
    np.testing.assert_array_equal(idx[0, :11], 0)  # 4 - 26 .. 4 - 6 -> 0
    np.testing.assert_array_equal(idx[0, 11:16], [0, 2, 4, 6, 8])
    np.testing.assert_array_equal(idx[0, 16:], 9)


@pytest.mark.parametrize("frames", [27, 81, 243])
@pytest.mark.parametrize("tds", [1, 2])
def test_long_sequence_windows_are_regular(frames, tds):
    pad = (frames - 1) // 2
    length = 2 * pad * tds + 50
    c = pad * tds + 10
    idx = window_frame_indices([c], [length], frames, tds)[0]
    np.testing.assert_array_equal(idx, np.arange(c - pad * tds, c + pad * tds + 1, tds))
    # At the very start the left half replicates frame 0.
    idx0 = window_frame_indices([0], [length], frames, tds)[0]
    np.testing.assert_array_equal(idx0[: pad + 1], 0)
    np.testing.assert_array_equal(idx0[pad:], np.arange(0, pad * tds + 1, tds))


def _naive_sample(seqs, seq, centre, flip, frames, tds, train):
    """Per-sample loop written straight from §1.8 (edge replication both sides)."""
    pad = (frames - 1) // 2
    n = len(seqs.poses_2d[seq])
    src = [min(max(centre + (k - pad) * tds, 0), n - 1) for k in range(frames)]
    x2 = seqs.poses_2d[seq][src].copy()
    x3 = seqs.poses_3d[seq][src if train else [min(max(centre, 0), n - 1)]].copy()
    cam = seqs.cameras[seq].copy()
    if flip:
        x2[..., 0] *= -1
        x2[:, LEFT + RIGHT] = x2[:, RIGHT + LEFT]
        x3[..., 0] *= -1
        x3[:, LEFT + RIGHT] = x3[:, RIGHT + LEFT]
        cam[2] *= -1
        cam[7] *= -1
    return x2, x3, cam


@pytest.mark.parametrize("tds,stride", [(1, 1), (2, 1), (2, 2)])
def test_get_batch_matches_naive_loop(tds, stride):
    seqs = _coded_sequences([7, 30, 64])
    ds = WindowDataset(seqs, frames=27, tds=tds, train=True, stride=stride)
    idx = np.random.default_rng(0).permutation(len(ds))[:40]
    batch = ds.get_batch(idx)
    assert batch["input_2d"].shape == (40, 27, 17, 2) and batch["input_2d"].dtype == np.float32
    assert batch["gt_3d"].shape == (40, 27, 17, 3)
    for b, i in enumerate(idx):
        x2, x3, cam = _naive_sample(
            seqs, ds.pair_seq[i], ds.pair_start[i], ds.pair_flip[i], 27, tds, True
        )
        np.testing.assert_array_equal(batch["input_2d"][b], x2)
        np.testing.assert_array_equal(batch["gt_3d"][b], x3)
        np.testing.assert_array_equal(batch["cam"][b], cam)
    np.testing.assert_array_equal(batch["cam_ind"], ds.pair_seq[idx] % 4)
    assert [ds.group_names[g] for g in batch["group"]] == [
        "A" if s % 2 == 0 else "B" for s in ds.pair_seq[idx]
    ]
    np.testing.assert_array_equal(batch["scale"], np.ones(40, np.float32))
    assert [ds.subject_names[x] for x in batch["subject"]] == [
        f"S{s % 3}" for s in ds.pair_seq[idx]
    ]
    np.testing.assert_array_equal(batch["bb_box"], np.tile([0, 0, 1, 1], (40, 1)))


def test_flipped_pair_decodes_to_mirrored_frames():
    seqs = _coded_sequences([20])
    ds = WindowDataset(seqs, frames=5, tds=1, train=True)
    assert len(ds) == 40
    batch = ds.get_batch(np.array([3, 23]))  # same centre 3, second one flipped
    plain, flipped = batch["input_2d"]
    np.testing.assert_array_equal(plain[:, 0, 0], [1, 2, 3, 4, 5])  # frame numbers
    np.testing.assert_array_equal(flipped[..., 0], -plain[..., 0])  # joint-independent u
    np.testing.assert_array_equal(flipped[0, :, 1], PERM)  # joint ids swapped
    cam_plain, cam_flip = batch["cam"]
    np.testing.assert_array_equal(cam_flip[[2, 7]], -cam_plain[[2, 7]])
    np.testing.assert_array_equal(np.delete(cam_flip, [2, 7]), np.delete(cam_plain, [2, 7]))
    g3 = batch["gt_3d"]
    np.testing.assert_array_equal(g3[1][..., 0], -g3[0][..., 0])
    np.testing.assert_array_equal(g3[1][0, :, 1], PERM)


def test_flip_twice_is_identity():
    x = np.random.default_rng(1).normal(size=(3, 9, 17, 3)).astype(np.float32)
    np.testing.assert_array_equal(flip_poses(flip_poses(x, LEFT, RIGHT), LEFT, RIGHT), x)
    cam = np.random.default_rng(2).normal(size=(4, 9))
    np.testing.assert_array_equal(flip_cameras(flip_cameras(cam)), cam)
    assert not np.array_equal(flip_poses(x, LEFT, RIGHT), x)


def test_test_split_centres_and_flip_input():
    seqs = _coded_sequences([6, 4])
    ds = WindowDataset(seqs, frames=9, tds=2, train=False)
    assert len(ds) == 10 and not ds.pair_flip.any()
    np.testing.assert_array_equal(ds.pair_start, [0, 1, 2, 3, 4, 5, 0, 1, 2, 3])
    batch = ds.get_batch(np.arange(10))
    assert batch["gt_3d"].shape == (10, 1, 17, 3)
    np.testing.assert_array_equal(
        batch["gt_3d"][:, 0, 0, 0], [0, 1, 2, 3, 4, 5, 1000, 1001, 1002, 1003]
    )
    assert "input_2d_flip" not in batch  # the TTA mirror is made in the step


def test_3dhp_valid_only_centres_read_invalid_neighbours():
    valid = [np.array([0, 1, 1, 0, 0, 1, 0], bool), np.array([1, 0, 1], bool)]
    seqs = _coded_sequences([7, 3], valid=valid)
    ds = WindowDataset(seqs, frames=3, tds=1, train=False)
    np.testing.assert_array_equal(ds.pair_seq, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(ds.pair_start, [1, 2, 5, 0, 2])
    batch = ds.get_batch(np.array([0]))
    np.testing.assert_array_equal(batch["input_2d"][0, :, 0, 0], [0, 1, 2])  # frame 0 invalid


def test_without_3d_and_bad_frames():
    ds = WindowDataset(_coded_sequences([12], with_3d=False), frames=3, train=True)
    assert "gt_3d" not in ds.get_batch(np.array([0, 1]))
    with pytest.raises(ValueError, match="odd"):
        WindowDataset(_coded_sequences([12]), frames=4, train=True)


def test_group_names_follow_action_order():
    seqs = _coded_sequences([3, 3, 3])
    seqs.groups = ["Walking", "Eating", "Walking"]
    ds = WindowDataset(seqs, frames=3, train=False)
    assert ds.group_names == ["Eating", "Walking"]
    np.testing.assert_array_equal(ds.get_batch(np.array([0, 3, 6]))["group"], [1, 0, 1])
