"""2D keypoint files of a user's video: format detection and reading into per-frame detections.

Formats (`FORMATS`; detected from the file, or named with `--format`):

* `videopose3d`: VideoPose3D's custom npz `data_2d_custom_<name>.npz` (Detectron COCO-17,
  `positions_2d[video]['custom'][0]` (T, 17, 2|3+) pixels, `metadata['video_metadata'][video]`
  with the frame size `w`, `h`); one person per frame.
* `coco`: COCO keypoint results JSON, a list of `{image_id, keypoints[51], score}` (several
  people per frame; `image_id` is the frame number).
* `alphapose`: AlphaPose `alphapose-results.json`, a list of `{image_id: "12.jpg",
  keypoints[51 | 78], score, box}` (COCO-17 or Halpe-26; Halpe's first 17 points are COCO-17).
* `array`: a plain `.npy` / `.npz` of (T, 17, 2|3) COCO-order pixels (third channel =
  confidence; NaN = missing); an `.npz` holds it as its only array or under `kpts`
  (P-STMO's video script) or `keypoints`, optionally with `res_w` / `res_h`.

Every reader returns a `Detections`: for each frame the list of people seen in it, as
(17, 3) COCO-order [x, y, confidence] pixel arrays. Bad files raise `UserError` naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import re
import zipfile
from pathlib import Path

import numpy as np

from aptpose_jax.datasets.safe_npz import load_npz
from aptpose_jax.errors import UserError

FORMATS = ("videopose3d", "coco", "alphapose", "array")
N_COCO = 17
N_HALPE = 26


@dataclasses.dataclass
class Detections:
    """People per frame of one video.

    Attributes:
      people: one list per frame of (17, 3) float32 arrays [x, y, confidence], COCO order,
        pixels; an empty list = nobody detected in that frame. NaN coordinates = missing.
      boxes: matching lists of (4,) [x0, y0, x1, y1] boxes (from the file or the keypoints).
      scores: matching lists of person scores.
      resolution: (width, height) in pixels when the file says it, else None.
      fmt: the format read (one of `FORMATS`).
    """

    people: list[list[np.ndarray]]
    boxes: list[list[np.ndarray]]
    scores: list[list[float]]
    resolution: tuple[int, int] | None
    fmt: str

    @property
    def n_frames(self) -> int:
        return len(self.people)


def keypoint_box(kp: np.ndarray) -> np.ndarray:
    """(4,) [x0, y0, x1, y1] around the finite keypoints of one person (17, 3)."""
    ok = np.isfinite(kp[:, :2]).all(axis=1) & (kp[:, 2] > 0)
    if not ok.any():
        ok = np.isfinite(kp[:, :2]).all(axis=1)
    if not ok.any():
        return np.full(4, np.nan, np.float32)
    xy = kp[ok, :2]
    return np.concatenate([xy.min(axis=0), xy.max(axis=0)]).astype(np.float32)


def _from_array(arr: np.ndarray, name: str, resolution, fmt: str) -> Detections:
    """One person per frame from a (T, 17, C) array; all-NaN frames count as missing."""
    arr = np.asarray(arr)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise UserError(f"{name}: expected a numeric (frames, 17, 2|3) array, got {arr.dtype}")
    if arr.ndim != 3 or arr.shape[-1] < 2:
        raise UserError(
            f"{name}: expected keypoints of shape (frames, 17, 2|3), got {arr.shape}; "
            "give COCO-order pixel keypoints, one row of 17 joints per frame"
        )
    if arr.shape[1] != N_COCO:
        raise UserError(
            f"{name}: expected 17 COCO keypoints per frame, got {arr.shape[1]} "
            f"(shape {arr.shape}); convert the detector's output to COCO-17 order"
        )
    if arr.shape[0] == 0:
        raise UserError(f"{name}: the keypoint array has no frames")
    arr = arr.astype(np.float32)
    conf = arr[..., 2] if arr.shape[-1] > 2 else np.ones(arr.shape[:2], np.float32)
    kp = np.concatenate([arr[..., :2], conf[..., None]], axis=-1)  # (T, 17, 3)
    people, boxes, scores = [], [], []
    for frame in kp:
        if np.isnan(frame[:, :2]).all():
            people.append([]), boxes.append([]), scores.append([])
        else:
            people.append([frame]), boxes.append([keypoint_box(frame)])
            scores.append([float(np.nanmean(frame[:, 2]))])
    return Detections(people, boxes, scores, resolution, fmt)


def _resolution(w, h, name: str) -> tuple[int, int]:
    try:
        size = (int(np.asarray(w).item()), int(np.asarray(h).item()))
    except (TypeError, ValueError):
        raise UserError(f"{name}: the frame size {w!r} x {h!r} is not a pair of numbers") from None
    if min(size) <= 0:
        raise UserError(f"{name}: the frame size {size} must be positive")
    return size


def read_videopose3d(path: Path, entry: str | None = None) -> Detections:
    """Reads one video of a VideoPose3D `data_2d_custom_<name>.npz` (see module docstring)."""
    try:
        data = load_npz(path)
    except Exception as e:  # a corrupt or foreign npz
        raise UserError(f"{path}: cannot read it as a VideoPose3D custom npz ({e})") from None
    positions, meta = data.get("positions_2d"), data.get("metadata")
    if not isinstance(positions, dict) or not positions:
        raise UserError(f"{path}: 'positions_2d' must be a non-empty dict of videos")
    names = list(positions)
    if entry is None:
        if len(names) > 1:
            raise UserError(f"{path}: holds {len(names)} videos {names}; pick one with --entry")
        entry = names[0]
    if entry not in positions:
        raise UserError(f"{path}: no video {entry!r}; it holds {names} (--entry NAME)")
    video = positions[entry]
    try:
        arr = np.asarray(video["custom"][0])
    except (KeyError, IndexError, TypeError):
        raise UserError(f"{path}: positions_2d[{entry!r}]['custom'][0] is missing") from None
    vmeta = (meta or {}).get("video_metadata", {}).get(entry, {}) if isinstance(meta, dict) else {}
    res = _resolution(vmeta["w"], vmeta["h"], str(path)) if {"w", "h"} <= set(vmeta) else None
    return _from_array(arr, f"{path}: positions_2d[{entry!r}]['custom'][0]", res, "videopose3d")


def read_array(path: Path) -> Detections:
    """Reads a plain (T, 17, 2|3) `.npy`, or an `.npz` holding one (see module docstring)."""
    try:
        if path.suffix == ".npy":
            return _from_array(np.load(path, allow_pickle=False), str(path), None, "array")
        data = load_npz(path)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{path}: cannot read it as a numpy keypoint array ({e})") from None
    keys = [k for k in ("kpts", "keypoints") if k in data]
    arrays = [k for k, v in data.items() if isinstance(v, np.ndarray) and v.ndim == 3]
    key = keys[0] if keys else (arrays[0] if len(arrays) == 1 else None)
    if key is None:
        raise UserError(
            f"{path}: no keypoint array found (keys {sorted(data)}); store it as 'kpts' or "
            "'keypoints', shape (frames, 17, 2|3)"
        )
    res = None
    if "res_w" in data and "res_h" in data:
        res = _resolution(data["res_w"], data["res_h"], str(path))
    return _from_array(data[key], f"{path}: {key!r}", res, "array")


def _frame_number(image_id, path: Path) -> int:
    if isinstance(image_id, (int, np.integer)) and not isinstance(image_id, bool):
        return int(image_id)
    digits = re.findall(r"\d+", Path(str(image_id)).stem)
    if not digits:
        raise UserError(
            f"{path}: image_id {image_id!r} has no frame number; name frames like '12.jpg'"
        )
    return int(digits[-1])


def _json_records(path: Path) -> list:
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text JSON file") from None
    if not text.strip():
        raise UserError(f"{path}: the JSON file is empty; expected a list of detections")
    try:
        records = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(records, list):
        raise UserError(f"{path}: expected a JSON list of detections, got {type(records).__name__}")
    if not records:
        raise UserError(f"{path}: the JSON list is empty: the detector found no person")
    return records


def read_json(path: Path, fmt: str) -> Detections:
    """Reads COCO keypoint results or AlphaPose results (several people per frame)."""
    records = _json_records(path)
    parsed = []
    for i, r in enumerate(records):
        if not isinstance(r, dict) or "keypoints" not in r or "image_id" not in r:
            raise UserError(f"{path}: detection {i} needs 'image_id' and 'keypoints'")
        kp = np.asarray(r["keypoints"], dtype=np.float32).reshape(-1)
        if kp.size not in (3 * N_COCO, 3 * N_HALPE):
            raise UserError(
                f"{path}: detection {i} has {kp.size} keypoint values; expected 51 (COCO-17) "
                "or 78 (Halpe-26) as [x, y, score] triples"
            )
        kp = kp.reshape(-1, 3)[:N_COCO]  # Halpe-26 starts with the COCO-17 points
        box = r.get("box") or r.get("bbox")
        if box is not None and len(box) == 4:  # [x, y, w, h] in both formats
            x, y, w, h = (float(v) for v in box)
            box = np.asarray([x, y, x + w, y + h], np.float32)
        else:
            box = keypoint_box(kp)
        score = float(r.get("score", np.mean(kp[:, 2])))
        parsed.append((_frame_number(r["image_id"], path), kp, box, score))
    first = min(p[0] for p in parsed)
    n = max(p[0] for p in parsed) - first + 1
    people, boxes, scores = ([[] for _ in range(n)] for _ in range(3))
    for frame, kp, box, score in parsed:
        people[frame - first].append(kp)
        boxes[frame - first].append(box)
        scores[frame - first].append(score)
    return Detections(people, boxes, scores, None, fmt)


def detect_format(path: Path) -> str:
    """The format of a keypoint file from its suffix and content (one of `FORMATS`)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return "array"
    if suffix == ".npz":
        if not zipfile.is_zipfile(path):
            raise UserError(f"{path}: not an .npz file (not a zip archive); is it damaged?")
        try:
            with np.load(path, allow_pickle=False) as f:
                return "videopose3d" if "positions_2d" in f.files else "array"
        except (OSError, ValueError) as e:  # not a zip / damaged
            raise UserError(f"{path}: not a readable .npz file ({e})") from None
    if suffix == ".json":
        records = _json_records(path)
        first = records[0] if isinstance(records[0], dict) else {}
        image_id = first.get("image_id")
        is_alpha = isinstance(image_id, str) or "box" in first or "idx" in first
        return "alphapose" if is_alpha else "coco"
    raise UserError(
        f"{path}: unknown keypoint file type {suffix!r}; give .npz, .npy or .json, or name the "
        f"format with --format ({', '.join(FORMATS)})"
    )


def read_keypoints(path: str | Path, fmt: str = "auto", entry: str | None = None) -> Detections:
    """Reads a keypoint file of any supported format.

    Args:
      path: the file.
      fmt: one of `FORMATS`, or "auto" to detect it.
      entry: the video to read from a multi-video VideoPose3D npz.

    Raises:
      UserError: missing file, unknown or malformed format, wrong joint count.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: keypoint file not found")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)} or auto, got {fmt!r}")
    if fmt == "videopose3d":
        return read_videopose3d(path, entry)
    if fmt == "array":
        return read_array(path)
    return read_json(path, fmt)
