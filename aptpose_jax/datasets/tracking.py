"""Following one person through a video, and filling the gaps of their keypoints.

Tracking (`track_people`): detections are linked frame to frame by box overlap. Each
detection of a frame joins the live track whose last box overlaps it most (intersection over
union >= `min_iou`, greedy, best pairs first); unmatched detections start new tracks, and a
track that found no match for `max_gap` frames ends. Tracks are then ranked by their total
confidence (the sum of the person scores over the frames they cover), so a person who is
visible longer and detected more surely comes first. `select_person(..., person=N)` returns
the N-th track of that ranking (0 = the most confident, the default of `infer`).

Gap filling (`fill_gaps`): frames without the person, and joints whose confidence is below a
threshold, are linearly interpolated along time from the nearest good frames of the same joint
(held constant before the first / after the last good frame). The returned masks say which
frames and joints were filled.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from aptpose_jax.datasets.keypoint_files import Detections
from aptpose_jax.errors import UserError


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two [x0, y0, x1, y1] boxes (0 when either is invalid)."""
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return 0.0
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclasses.dataclass
class _Track:
    frames: list[int]
    people: list[np.ndarray]
    last_box: np.ndarray
    score: float = 0.0


def track_people(det: Detections, *, min_iou: float = 0.3, max_gap: int = 10) -> list[_Track]:
    """Links the detections into tracks, most confident first (see the module docstring)."""
    live: list[_Track] = []
    done: list[_Track] = []
    for t in range(det.n_frames):
        live_now = [tr for tr in live if t - tr.frames[-1] <= max_gap]
        done += [tr for tr in live if t - tr.frames[-1] > max_gap]
        live = live_now
        pairs = sorted(
            (
                (box_iou(tr.last_box, box), i, j)
                for i, tr in enumerate(live)
                for j, box in enumerate(det.boxes[t])
            ),
            reverse=True,
        )
        used_tracks, used_dets = set(), set()
        for iou, i, j in pairs:
            if iou < min_iou or i in used_tracks or j in used_dets:
                continue
            used_tracks.add(i), used_dets.add(j)
            tr = live[i]
            tr.frames.append(t), tr.people.append(det.people[t][j])
            tr.last_box, tr.score = det.boxes[t][j], tr.score + det.scores[t][j]
        for j, kp in enumerate(det.people[t]):
            if j not in used_dets:
                live.append(_Track([t], [kp], det.boxes[t][j], det.scores[t][j]))
    tracks = done + live
    return sorted(tracks, key=lambda tr: (-tr.score, tr.frames[0]))


def select_person(det: Detections, person: int = 0, *, source: str = "") -> np.ndarray:
    """(T, 17, 3) keypoints of the `person`-th most confident track; NaN where it is absent.

    Raises:
      UserError: nobody in the video, or fewer than `person + 1` tracks.
    """
    tracks = track_people(det)
    if not tracks:
        raise UserError(f"{source}: no person was detected in any frame")
    if not 0 <= person < len(tracks):
        raise UserError(
            f"{source}: --person {person} asked, but {len(tracks)} track(s) were found "
            f"(0 = the most confident; valid: 0..{len(tracks) - 1})"
        )
    out = np.full((det.n_frames, 17, 3), np.nan, np.float32)
    tr = tracks[person]
    out[tr.frames] = np.stack(tr.people)  # (n, 17, 3)
    return out


def fill_gaps(
    kp: np.ndarray, *, threshold: float = 0.3, source: str = ""
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interpolates missing frames and low-confidence joints along time.

    Args:
      kp: (T, 17, 3) [x, y, confidence] pixels; NaN coordinates = missing.
      threshold: joints with confidence below it are treated as missing (filled).
      source: file name for error messages.

    Returns:
      (filled (T, 17, 2) float32, joint_filled (T, 17) bool, frame_filled (T,) bool — the
      frames where the person was missing altogether).

    Raises:
      UserError: when every frame is missing (nothing to interpolate from).
    """
    xy = kp[..., :2].astype(np.float64)
    finite = np.isfinite(xy).all(axis=-1)  # (T, 17)
    frame_missing = ~finite.any(axis=-1)  # (T,)
    if frame_missing.all():
        raise UserError(f"{source}: every keypoint is missing (NaN) in every frame: no person")
    conf = np.nan_to_num(kp[..., 2], nan=0.0)
    good = finite & (conf >= threshold)  # (T, 17)
    never = ~good.any(axis=0)  # joints never confident: fall back to any finite value
    good[:, never] = finite[:, never]
    if not good.any(axis=0).all():
        bad = np.nonzero(~good.any(axis=0))[0].tolist()
        raise UserError(f"{source}: COCO joints {bad} are missing in every frame")
    t = np.arange(len(xy))
    out = np.empty_like(xy)
    for j in range(xy.shape[1]):  # 17 joints x 2 coordinates, vectorised over time
        ok = good[:, j]
        for c in range(2):
            out[:, j, c] = np.interp(t, t[ok], xy[ok, j, c])
    return out.astype(np.float32), ~good, frame_missing
