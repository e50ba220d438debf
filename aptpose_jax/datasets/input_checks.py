"""Checks of a user's video inputs before anything is lifted: one line naming the fix.

Keypoints are pixels of the declared frame (`--resolution`, the keypoint file's size, or
`--video`'s). Two mistakes pass every format check yet give wrong 3D poses:

* normalised keypoints: every coordinate of the tracked person lies within [-1, 1]
  (`NORMALISED_LIMIT`) while the frame is at least `MIN_FRAME_PX` pixels: a person two pixels
  tall. Refused; the fix is pixel coordinates.
* the wrong frame size (a portrait video whose metadata says 1920x1080): more than
  `OUT_OF_FRAME_FRACTION` (5%) of the confident joints lie beyond `OUT_OF_FRAME_MARGIN` (10%
  of the width / height) outside the frame. A person cut by the frame edge keeps nearly all
  joints inside that margin. Refused; the fix is `--resolution` (the swapped size is named
  when the keypoints fit it).

And `--video`: a missing file, or one that ffmpeg cannot read, is refused before the lift; a
video whose frame size differs from the keypoints' is refused naming both sizes (the
keypoints would be drawn at the wrong place). A length mismatch is not an error: the
renderer draws every keypoint frame and reports how many had a video frame behind them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aptpose_jax.errors import MissingFileError, UserError

NORMALISED_LIMIT = 1.0 + 1e-3
MIN_FRAME_PX = 32
OUT_OF_FRAME_MARGIN = 0.10
OUT_OF_FRAME_FRACTION = 0.05


def _points(kp: np.ndarray, confidence: float) -> np.ndarray:
    """(N, 2) confident finite joints of (T, 17, 3) keypoints (all finite ones if none is)."""
    finite = np.isfinite(kp[..., :2]).all(axis=-1)
    sure = finite & (np.nan_to_num(kp[..., 2]) >= confidence)
    return kp[..., :2][sure if sure.any() else finite]


def check_pixel_keypoints(
    kp: np.ndarray, resolution, *, source: str, resolution_from: str, confidence: float = 0.3
) -> None:
    """Raises `UserError` when (T, 17, 3) keypoints do not look like pixels of `resolution`."""
    pts = _points(kp, confidence)
    if not len(pts):
        return  # nobody: `fill_gaps` says so
    w, h = resolution
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = f"x {lo[0]:.4g}..{hi[0]:.4g}, y {lo[1]:.4g}..{hi[1]:.4g}"
    if np.abs(pts).max() <= NORMALISED_LIMIT and min(w, h) >= MIN_FRAME_PX:
        units = "[0, 1]" if lo.min() >= 0 else "[-1, 1]"
        fix = f"x * {w}, y * {h}" if lo.min() >= 0 else f"(x + 1) * {w} / 2, (y + 1) * {h} / 2"
        raise UserError(
            f"{source}: the keypoints look normalised (every coordinate within {units}: {span}) "
            f"but the frame is {w}x{h} pixels ({resolution_from}); pass pixel coordinates "
            f"(for {units} units: {fix})"
        )
    mx, my = OUT_OF_FRAME_MARGIN * w, OUT_OF_FRAME_MARGIN * h
    out = (pts[:, 0] < -mx) | (pts[:, 0] > w + mx) | (pts[:, 1] < -my) | (pts[:, 1] > h + my)
    if out.mean() > OUT_OF_FRAME_FRACTION:
        fits_swapped = lo.min() >= -OUT_OF_FRAME_MARGIN * max(w, h) and (
            hi[0] <= h * (1 + OUT_OF_FRAME_MARGIN) and hi[1] <= w * (1 + OUT_OF_FRAME_MARGIN)
        )
        hint = (
            f"a portrait video? they fit {h}x{w}: --resolution {h}x{w}"
            if fits_swapped and w != h
            else "give the size of the frames the keypoints were detected in: --resolution WxH"
        )
        raise UserError(
            f"{source}: {out.mean():.0%} of the keypoints lie more than "
            f"{OUT_OF_FRAME_MARGIN:.0%} outside the {w}x{h} frame ({resolution_from}; they span "
            f"{span}); {hint}"
        )


def check_video_file(video: str | Path) -> None:
    """Raises `MissingFileError` when `--video` names no file."""
    if not Path(video).is_file():
        raise MissingFileError(f"--video {video}: no such file")


def video_info(video: str | Path) -> tuple[tuple[int, int], float]:
    """((width, height), fps) of `--video`, or a `UserError` when ffmpeg cannot read it."""
    from aptpose_jax import render

    check_video_file(video)
    try:
        return render.video_info(video)
    except (OSError, RuntimeError, StopIteration, KeyError, ValueError) as e:
        last = next((x for x in reversed(str(e).splitlines()) if x.strip()), type(e).__name__)
        raise UserError(
            f"--video {video}: ffmpeg cannot read it as a video ({last.strip()})"
        ) from None


def check_video_size(video: str | Path, video_size, resolution, resolution_from: str) -> None:
    """Raises `UserError` when the video's frames are not the keypoints' frame size."""
    if tuple(video_size) != tuple(resolution):
        vw, vh = video_size
        w, h = resolution
        raise UserError(
            f"--video {video} is {vw}x{vh} but the keypoints are pixels of a {w}x{h} frame "
            f"({resolution_from}); give the video the keypoints were detected on, or "
            f"--resolution {vw}x{vh} if they were detected on this one"
        )
