"""Seq2frame over a whole video: one window centred on every frame, batched (numpy only).

Window of frame t: frames `clip(t + (k - pad) * tds, 0, T - 1)`, k = 0..F-1, pad = (F-1)//2,
i.e. the ends are padded by replicating the first / last frame, as the reference's video
script pads (`np.pad(..., 'edge')`, §1.12). Windows are gathered one batch at a time, so
memory stays O(batch x F) for any video length. The batches are what `Predictor` and the
exported artifact (`aptpose_jax.export.load`) both run, in the same order and with the same
batch indices (which seed the masks of a masked model), so their outputs agree.

Only numpy is imported here: the serving loader uses it without the model classes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def window_indices(centres: np.ndarray, n_frames: int, frames: int, tds: int = 1) -> np.ndarray:
    """(B, F) source frames of the windows centred on `centres`, edges replicated."""
    if frames < 1 or frames % 2 == 0:
        raise ValueError(f"frames must be a positive odd number, got {frames}")
    offsets = (np.arange(frames) - (frames - 1) // 2) * tds  # (F,)
    return np.clip(np.asarray(centres)[:, None] + offsets[None, :], 0, n_frames - 1)  # (B, F)


def batch_plan(n_frames: int, batch_size: int) -> tuple[int, int]:
    """(batch size actually used, number of batches): min(batch_size, T) windows per batch."""
    b = max(1, min(int(batch_size), int(n_frames)))
    return b, -(-n_frames // b)


def run_batches(
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    keypoints: np.ndarray,
    *,
    frames: int,
    batch_size: int,
    tds: int = 1,
) -> np.ndarray:
    """Runs `fn(windows (B, F, J, 2), batch_index ()) -> (B, J, 3)` over every frame's window.

    Every batch has the same size B = min(batch_size, T) (the last one is padded by repeating
    its final window, and the padding is dropped), so a jitted `fn` compiles once.

    Args:
      fn: the batched lifter (jitted function or exported artifact).
      keypoints: (T, J, 2) normalised keypoints.
      frames: the model's window length F.
      batch_size: windows per batch (upper bound).
      tds: temporal stride inside a window (1 for video, §1.12).

    Returns:
      (T, J, 3) float32 host array.
    """
    keypoints = np.asarray(keypoints, np.float32)
    n = keypoints.shape[0]
    b, n_batches = batch_plan(n, batch_size)
    outputs = []
    for i in range(n_batches):
        centres = np.arange(i * b, min((i + 1) * b, n))
        padded = np.concatenate([centres, np.full(b - centres.size, centres[-1])])  # (B,)
        windows = keypoints[window_indices(padded, n, frames, tds)]  # (B, F, J, 2)
        outputs.append((fn(windows, np.int32(i)), centres.size))
    return np.concatenate([np.asarray(o)[:size] for o, size in outputs]).astype(np.float32)
