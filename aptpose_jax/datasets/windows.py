"""Window sampling with temporal downsampling ("tds") and flip augmentation (§1.8-§1.10).

A `WindowDataset` turns `PoseSequences` into samples. Samples ("pairs") are enumerated once as
index arrays (sequence, centre frame, flip flag); `get_batch` gathers whole batches from the
concatenated in-memory arrays with numpy fancy indexing, never looping per sample or per frame.

Window of a pair with centre c in a sequence of L frames: source frames
`clip(c + (k - pad) * tds, 0, L - 1)`, k = 0..F-1, pad = (F - 1) // 2. Clipping replicates the
edge frames on both sides, so a window always has F frames. The reference pads only one side
and returns a short window when a sequence is shorter than the raw span (Q20); that is fixed
here and gives identical windows wherever the reference window is complete.
"""

from __future__ import annotations

import numpy as np

from aptpose_jax.datasets.sequences import PoseSequences
from aptpose_jax.datasets.skeleton import H36M_ACTIONS
from aptpose_jax.flip import flip_camera, flip_pose, swap_permutation


def enumerate_pairs(
    lengths: np.ndarray,
    *,
    chunk: int = 1,
    flip: bool = False,
    valid: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Enumerates the samples of §1.8 in reference order.

    Per sequence: n_chunks = ceil(L / chunk), offset = (n_chunks * chunk - L) // 2, chunk
    starts k * chunk - offset; then (when `flip`) the same starts again flagged flipped. With
    `valid`, only frames with valid == True are centres (3DHP test; chunk must be 1).

    Args:
      lengths: (S,) frames per sequence.
      chunk: the chunk length (`--stride`); 1 makes every frame a centre.
      flip: append flipped copies after each sequence's non-flipped pairs.
      valid: optional per-sequence (L,) bool arrays.

    Returns:
      (seq (P,) int32, start (P,) int64, flip (P,) bool).
    """
    if chunk < 1:
        raise ValueError(f"chunk (stride) must be >= 1, got {chunk}")
    if valid is not None and chunk != 1:
        raise ValueError("valid-frame centres need chunk 1")
    seq_parts, start_parts, flip_parts = [], [], []
    for s, length in enumerate(np.asarray(lengths, dtype=np.int64)):
        n_chunks = -(-int(length) // chunk)  # ceil
        offset = (n_chunks * chunk - int(length)) // 2
        starts = np.arange(n_chunks, dtype=np.int64) * chunk - offset
        if valid is not None:
            starts = np.nonzero(np.asarray(valid[s], dtype=bool))[0].astype(np.int64)
        copies = (False, True) if flip else (False,)
        for flag in copies:
            seq_parts.append(np.full(len(starts), s, dtype=np.int32))
            start_parts.append(starts)
            flip_parts.append(np.full(len(starts), flag, dtype=bool))
    if not seq_parts:
        empty = np.zeros(0, np.int64)
        return empty.astype(np.int32), empty, empty.astype(bool)
    return np.concatenate(seq_parts), np.concatenate(start_parts), np.concatenate(flip_parts)


def window_offsets(frames: int, tds: int = 1) -> np.ndarray:
    """(F,) int64 offsets `(k - pad) * tds` of the window frames relative to the centre."""
    if frames < 1 or frames % 2 == 0:
        raise ValueError(f"frames must be a positive odd number, got {frames}")
    if tds < 1:
        raise ValueError(f"tds must be >= 1, got {tds}")
    pad = (frames - 1) // 2
    return (np.arange(frames, dtype=np.int64) - pad) * tds


def window_frame_indices(
    centres: np.ndarray, lengths: np.ndarray, frames: int, tds: int = 1
) -> np.ndarray:
    """Local source frames of windows: `clip(c + (k - pad) * tds, 0, L - 1)`, shape (B, F).

    Args:
      centres: (B,) centre frames (may lie outside [0, L) for chunked starts; clipped).
      lengths: (B,) length of each window's sequence.
      frames: F (odd).
      tds: temporal downsampling stride.
    """
    idx = np.asarray(centres, np.int64)[:, None] + window_offsets(frames, tds)[None, :]  # (B, F)
    return np.clip(idx, 0, np.asarray(lengths, np.int64)[:, None] - 1)


def _group_order(groups: list[str]) -> list[str]:
    """Unique group names: H36M classes in `define_actions` order, otherwise first appearance."""
    unique = list(dict.fromkeys(groups))
    if set(unique) <= set(H36M_ACTIONS):
        return [a for a in H36M_ACTIONS if a in unique]
    return unique


class WindowDataset:
    """Samples of F-frame windows over `PoseSequences`, batched by index (docs/API.md).

    Training: chunk = `stride`, flipped copies after each sequence's pairs when `flip_augment`,
    3D targets for all F frames (`out_all`). Test: every frame (every valid frame when the
    sequences carry `valid`, 3DHP) is a centre, no flipped pairs, 3D target = centre frame; the
    flipped input of test-time augmentation is made inside the step (`steps.tta_forward`).
    With `with_3d=False` (Stage I, which never uses 3D) the 3D poses are neither kept nor
    gathered.

    The mirror itself is `aptpose_jax.flip` (one implementation for host, device and TTA);
    `pipeline.py` gathers the same windows on the device from the same index tables.

    With `stride > 1` each chunk gives one window centred on the chunk start; the reference
    only produces F-frame windows when stride <= tds (Q20).
    """

    def __init__(
        self,
        seqs: PoseSequences,
        *,
        frames: int,
        tds: int = 1,
        train: bool,
        flip_augment: bool = True,
        stride: int = 1,
        with_3d: bool = True,
    ):
        self.seqs = seqs
        self.frames = frames
        self.tds = tds
        self.train = train
        self.offsets = window_offsets(frames, tds)  # (F,)
        self.lengths = seqs.lengths  # (S,)
        self.seq_offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.poses_2d = np.concatenate(seqs.poses_2d).astype(np.float32, copy=False)  # (N, J, 2)
        self.poses_3d = (
            None
            if seqs.poses_3d is None or not with_3d
            else np.concatenate(seqs.poses_3d).astype(np.float32, copy=False)  # (N, J, 3)
        )
        self.cameras = np.asarray(seqs.cameras, np.float32)  # (S, 9)
        self.lr_2d = (tuple(seqs.joints_left_2d), tuple(seqs.joints_right_2d))
        self.lr_3d = (tuple(seqs.joints_left_3d), tuple(seqs.joints_right_3d))
        self.perm_2d = swap_permutation(self.poses_2d.shape[1], *self.lr_2d)
        n_j3 = self.poses_2d.shape[1] if self.poses_3d is None else self.poses_3d.shape[1]
        self.perm_3d = swap_permutation(n_j3, *self.lr_3d)
        cam_ind = seqs.cam_indices if seqs.cam_indices is not None else [0] * len(seqs)
        self.cam_ind = np.asarray(cam_ind, np.int32)  # (S,)
        self.group_names = _group_order(seqs.groups)
        self.seq_group = np.asarray(
            [self.group_names.index(g) for g in seqs.groups], np.int32
        )  # (S,)
        self.subject_names = list(dict.fromkeys(seqs.subjects))  # first-appearance order
        self.seq_subject = np.asarray(
            [self.subject_names.index(x) for x in seqs.subjects], np.int32
        )  # (S,)
        self.pair_seq, self.pair_start, self.pair_flip = enumerate_pairs(
            self.lengths,
            chunk=stride if train else 1,
            flip=train and flip_augment,
            valid=None if train else seqs.valid,
        )

    def __len__(self) -> int:
        return len(self.pair_seq)

    def window_indices(self, indices: np.ndarray) -> np.ndarray:
        """(B, F) indices into the concatenated frame arrays for the given pair indices."""
        seq = self.pair_seq[indices]
        local = window_frame_indices(
            self.pair_start[indices], self.lengths[seq], self.frames, self.tds
        )  # (B, F)
        return local + self.seq_offsets[seq][:, None]

    @staticmethod
    def _flip_rows(x: np.ndarray, rows: np.ndarray, lr: tuple) -> None:
        """In place: flips samples `rows` of x (B, F, J, D)."""
        if rows.size:
            x[rows] = flip_pose(x[rows], *lr)  # (b, F, J, D)

    def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Gathers the samples `indices` (pair indices, any order) into one batch.

        Returns:
          dict with "input_2d" (B, F, J, 2),
          "gt_3d" (B, F, J, 3) train / (B, 1, J, 3) test (absent without 3D),
          "cam" (B, 9), "scale" (B,) ones, "cam_ind" (B,) int32, "group" (B,) int32 (index
          into `group_names`), "subject" (B,) int32 (index into `subject_names`), "bb_box"
          (B, 4) the reference's constant [0, 0, 1, 1].
        """
        indices = np.asarray(indices, dtype=np.int64)
        seq = self.pair_seq[indices]  # (B,)
        flip_rows = np.nonzero(self.pair_flip[indices])[0]
        frame_idx = self.window_indices(indices)  # (B, F)
        x2 = self.poses_2d[frame_idx]  # (B, F, J, 2)
        self._flip_rows(x2, flip_rows, self.lr_2d)
        batch = {"input_2d": x2}
        if self.poses_3d is not None:
            if self.train:
                x3 = self.poses_3d[frame_idx]  # (B, F, J, 3)
            else:
                centre = np.clip(self.pair_start[indices], 0, self.lengths[seq] - 1)
                x3 = self.poses_3d[(centre + self.seq_offsets[seq])[:, None]]  # (B, 1, J, 3)
            self._flip_rows(x3, flip_rows, self.lr_3d)
            batch["gt_3d"] = x3
        cam = self.cameras[seq]  # (B, 9)
        if flip_rows.size:
            cam[flip_rows] = flip_camera(cam[flip_rows])
        batch["cam"] = cam
        batch["scale"] = np.ones(len(indices), np.float32)
        batch["cam_ind"] = self.cam_ind[seq]
        batch["group"] = self.seq_group[seq]
        batch["subject"] = self.seq_subject[seq]
        # The reference's constant bounding box (unused by every model, §1.9).
        batch["bb_box"] = np.tile(np.asarray([0, 0, 1, 1], np.float32), (len(indices), 1))
        return batch
