"""Following one person through a video, and filling the gaps of their keypoints.

Tracking (`track_people`): detections are linked frame to frame. Each detection of a frame
joins the live track whose last box overlaps it most (intersection over union >= `min_iou`,
greedy, best pairs first). A track that was missing for some frames (a person hidden, or
missed by the detector) has moved meanwhile, so its last box may no longer overlap: a
detection left unmatched by IoU then joins such a track when its box centre lies within
`max_shift` box sizes of the last box's centre (size = the larger side of the last box) and
its size is within a factor 2 of it (closest first). A track that finds no match for more than
`max_gap` frames (`MAX_GAP` = 30 by default, about a second) ends; unmatched detections start
new tracks. So one person hidden for up to `max_gap` frames stays one track (the frames in
between are interpolated by `fill_gaps`). Tracks are ranked by their total confidence (the sum
of the person scores over the frames they cover), so a person who is visible longer and
detected more surely comes first. `follow_person(..., person=N)` returns the N-th track of
that ranking (0 = the most confident, the default of `infer`) and a report of every track.

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


MAX_GAP = 30  # frames a person may be missing and stay one track (infer --max-gap)
MAX_SHIFT = 1.0  # after a gap: centre distance / last box size accepted when IoU fails


@dataclasses.dataclass
class _Track:
    frames: list[int]
    people: list[np.ndarray]
    last_box: np.ndarray
    score: float = 0.0

    def report(self, rank: int) -> dict:
        """Rank, first and last frame, frames seen, gaps bridged and mean person score."""
        gaps = int(np.count_nonzero(np.diff(self.frames) > 1))
        return {"person": rank, "first_frame": self.frames[0], "last_frame": self.frames[-1],
                "frames": len(self.frames), "gaps": gaps,
                "mean_score": round(self.score / len(self.frames), 4)}  # fmt: skip


def _centre_shift(last: np.ndarray, box: np.ndarray) -> float:
    """Distance of the box centres over the last box's larger side (inf: sizes differ > 2x)."""
    if not (np.isfinite(last).all() and np.isfinite(box).all()):
        return np.inf
    size_a = max(last[2] - last[0], last[3] - last[1])
    size_b = max(box[2] - box[0], box[3] - box[1])
    if size_a <= 0 or size_b <= 0 or not 0.5 <= size_b / size_a <= 2.0:
        return np.inf
    shift = (box[:2] + box[2:]) / 2 - (last[:2] + last[2:]) / 2
    return float(np.hypot(*shift) / size_a)


def _match(live: list[_Track], boxes: list[np.ndarray], t: int, min_iou: float, max_shift: float):
    """Greedy (track, detection) pairs: by IoU, then tracks back from a gap by centre shift."""
    pairs = sorted(
        (box_iou(tr.last_box, box), i, j)
        for i, tr in enumerate(live)
        for j, box in enumerate(boxes)
    )[::-1]
    used_tracks, used_dets, matched = set(), set(), []
    for iou, i, j in pairs:
        if iou >= min_iou and i not in used_tracks and j not in used_dets:
            used_tracks.add(i), used_dets.add(j), matched.append((i, j))
    shifts = sorted(
        (_centre_shift(tr.last_box, box), i, j)
        for i, tr in enumerate(live) if i not in used_tracks and t - tr.frames[-1] > 1
        for j, box in enumerate(boxes) if j not in used_dets
    )  # fmt: skip
    for shift, i, j in shifts:
        if shift <= max_shift and i not in used_tracks and j not in used_dets:
            used_tracks.add(i), used_dets.add(j), matched.append((i, j))
    return matched, used_dets


def track_people(
    det: Detections, *, min_iou: float = 0.3, max_gap: int = MAX_GAP, max_shift: float = MAX_SHIFT
) -> list[_Track]:
    """Links the detections into tracks, most confident first (see the module docstring)."""
    live: list[_Track] = []
    done: list[_Track] = []
    for t in range(det.n_frames):
        done += [tr for tr in live if t - tr.frames[-1] > max_gap + 1]
        live = [tr for tr in live if t - tr.frames[-1] <= max_gap + 1]
        matched, used_dets = _match(live, det.boxes[t], t, min_iou, max_shift)
        for i, j in matched:
            tr = live[i]
            tr.frames.append(t), tr.people.append(det.people[t][j])
            tr.last_box, tr.score = det.boxes[t][j], tr.score + det.scores[t][j]
        for j, kp in enumerate(det.people[t]):
            if j not in used_dets:
                live.append(_Track([t], [kp], det.boxes[t][j], det.scores[t][j]))
    tracks = done + live
    return sorted(tracks, key=lambda tr: (-tr.score, tr.frames[0]))


def follow_person(
    det: Detections, person: int = 0, *, max_gap: int = MAX_GAP, source: str = ""
) -> tuple[np.ndarray, list[dict]]:
    """(T, 17, 3) keypoints of the `person`-th most confident track (NaN where it is absent),
    and the report of every track (`_Track.report`), ranked.

    Raises:
      UserError: nobody in the video, or fewer than `person + 1` tracks.
    """
    if max_gap < 0:
        raise UserError(f"--max-gap must be >= 0 frames, got {max_gap}")
    tracks = track_people(det, max_gap=max_gap)
    if not tracks:
        raise UserError(f"{source}: no person was detected in any frame")
    reports = [tr.report(rank) for rank, tr in enumerate(tracks)]
    if not 0 <= person < len(tracks):
        spans = "; ".join(f"{r['person']}: frames {r['first_frame']}-{r['last_frame']}"
                          for r in reports[:5])  # fmt: skip
        raise UserError(
            f"{source}: --person {person} asked, but {len(tracks)} track(s) were found "
            f"(0 = the most confident; valid: 0..{len(tracks) - 1}; {spans})"
        )
    out = np.full((det.n_frames, 17, 3), np.nan, np.float32)
    tr = tracks[person]
    out[tr.frames] = np.stack(tr.people)  # (n, 17, 3)
    return out, reports


def select_person(det: Detections, person: int = 0, *, source: str = "") -> np.ndarray:
    """The keypoints of `follow_person` alone."""
    return follow_person(det, person, source=source)[0]


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
