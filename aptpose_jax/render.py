"""Rendering 3D pose results: 2D keypoints beside the 3D skeleton, as a video and a sheet.

Each frame is two square panels: left, the COCO 2D keypoints (over the video frame when one
is given; interpolated joints hollow); right, the world-frame 3D skeleton (`world_frame`) from
a fixed three-quarter viewpoint (45 deg to the side of the camera, 15 deg above) over a ground
grid. With a 3D ground truth (`infer --with-gt`) a third panel draws it, root-aligned and in
the same axes, and a caption line under the panels gives the errors. Drawing is Pillow on a
pre-drawn background (no figure redraw per frame), video frames are decoded and scaled by
ffmpeg, and the video is encoded by the ffmpeg binary that the `imageio-ffmpeg` wheel ships;
without it the result is an animated GIF (Pillow).
`experiments/bench_render.py` measures the frame rate.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from aptpose_jax.datasets.skeleton import H36M_JOINTS_LEFT, H36M_PARENTS

COCO_EDGES = (
    (0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10),
    (5, 11), (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16),
)  # fmt: skip
_COCO_LEFT = {1, 3, 5, 7, 9, 11, 13, 15}
LEFT_COLOUR, RIGHT_COLOUR, MID_COLOUR = (230, 80, 60), (60, 140, 230), (235, 235, 235)
BACKGROUND = (24, 24, 28)
RADIUS_M = 1.7  # the 3D view shows a cube of this size around the root (VideoPose3D)
# The camera of `world_frame.RENDER_ROTATION` looks from azimuth ~66 deg of the world frame
# (VideoPose3D's 70 deg view is nearly the camera's own): 45 deg off it, a person facing the
# camera is seen three-quarter, arms and legs apart and depth visible.
VIEW_AZIM_DEG, VIEW_ELEV_DEG = 21.0, 15.0
TEXT_COLOUR = (200, 200, 210)


def _colour(joint: int, left: set[int]) -> tuple[int, int, int]:
    return LEFT_COLOUR if joint in left else RIGHT_COLOUR


def _view_matrix(azim_deg: float = VIEW_AZIM_DEG, elev_deg: float = VIEW_ELEV_DEG) -> np.ndarray:
    """(2, 3) orthographic projection of z-up world points onto screen (right, up)."""
    a, e = np.deg2rad(azim_deg), np.deg2rad(elev_deg)
    right = np.array([-np.sin(a), np.cos(a), 0.0])
    up = np.array([-np.sin(e) * np.cos(a), -np.sin(e) * np.sin(a), np.cos(e)])
    return np.stack([right, up])


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # scalable with FreeType (Pillow >= 10.1)
    except (TypeError, OSError):
        return ImageFont.load_default()


class PoseRenderer:
    """Draws result frames of `width` x `height` pixels (`panels` side-by-side panels:
    2D keypoints, 3D prediction and, with `panels=3`, the 3D ground truth)."""

    def __init__(self, width: int = 1280, height: int = 640, line: int | None = None,
                 panels: int = 2):  # fmt: skip
        self.width, self.height, self.panels = width, height, panels
        self.panel = width // panels
        self.line = line or max(2, height // 160)
        self.view = _view_matrix()
        self._scale = 0.84 * min(self.panel, height) / RADIUS_M  # pixels per metre, 3D panel
        self._font = _font(max(10, height // 32))
        self._background_3d = self._draw_ground()

    def _project(self, pts: np.ndarray) -> np.ndarray:
        """(..., 3) world points (root at the origin, z up) -> (..., 2) 3D-panel pixels."""
        sx, sy = np.moveaxis(pts @ self.view.T, -1, 0)
        cx, cy = self.panel / 2, self.height / 2  # z in [0, RADIUS_M] spans 84% of the height
        return np.stack([cx + self._scale * sx, cy - self._scale * (sy - RADIUS_M / 2)], -1)

    def _draw_ground(self) -> Image.Image:
        img = Image.new("RGB", (self.panel, self.height), BACKGROUND)
        draw = ImageDraw.Draw(img)
        ticks = np.linspace(-RADIUS_M / 2, RADIUS_M / 2, 7)
        for t in ticks:  # grid lines on z = 0
            for a, b in (
                ((t, ticks[0], 0), (t, ticks[-1], 0)),
                ((ticks[0], t, 0), (ticks[-1], t, 0)),
            ):
                p = self._project(np.array([a, b], np.float64))
                draw.line([tuple(p[0]), tuple(p[1])], fill=(70, 70, 80), width=1)
        return img

    def panel_2d(self, kp: np.ndarray, resolution, filled=None, frame=None) -> Image.Image:
        """Left panel: (17, 2) COCO pixels of a (w, h) video, over `frame` (an RGB array)."""
        w, h = resolution
        s = min(self.panel / w, self.height / h)
        ox, oy = (self.panel - w * s) / 2, (self.height - h * s) / 2
        img = Image.new("RGB", (self.panel, self.height), BACKGROUND)
        if frame is not None:
            img.paste(Image.fromarray(frame), (int(round(ox)), int(round(oy))))
        pts = kp[:, :2] * s + np.array([ox, oy])
        draw = ImageDraw.Draw(img)
        for a, b in COCO_EDGES:
            draw.line([tuple(pts[a]), tuple(pts[b])], fill=_colour(b, _COCO_LEFT), width=self.line)
        r = self.line + 1
        for j, (x, y) in enumerate(pts):
            hollow = filled is not None and filled[j]
            draw.ellipse(
                (x - r, y - r, x + r, y + r),
                fill=None if hollow else _colour(j, _COCO_LEFT),
                outline=(255, 255, 255) if hollow else None,
            )
        return img

    def panel_3d(self, pose_world: np.ndarray | None) -> Image.Image:
        """A 3D panel: the (17, 3) world-frame H36M skeleton (root over the grid centre)."""
        img = self._background_3d.copy()
        if pose_world is None:  # e.g. a frame beyond the ground truth's length
            return img
        centred = pose_world - np.array([pose_world[0, 0], pose_world[0, 1], 0.0])
        pts = self._project(centred)
        draw = ImageDraw.Draw(img)
        left = set(H36M_JOINTS_LEFT)
        for child, parent in enumerate(H36M_PARENTS):
            if parent >= 0:
                colour = MID_COLOUR if child in (7, 8, 9, 10) else _colour(child, left)
                draw.line([tuple(pts[parent]), tuple(pts[child])], fill=colour, width=self.line + 1)
        return img

    def frame(self, kp2d, resolution, pose_world, filled=None, video_frame=None,
              truth_world=None, caption: str | None = None) -> np.ndarray:  # fmt: skip
        """One (height, width, 3) uint8 result frame; `truth_world` goes in the third panel."""
        out = Image.new("RGB", (self.width, self.height))
        out.paste(self.panel_2d(kp2d, resolution, filled, video_frame), (0, 0))
        out.paste(self.panel_3d(pose_world), (self.panel, 0))
        titles = ["2D keypoints (input)", "3D prediction"]
        if self.panels > 2:
            out.paste(self.panel_3d(truth_world), (2 * self.panel, 0))
            titles.append("3D ground truth")
        draw = ImageDraw.Draw(out)
        pad = max(4, self.height // 64)
        for i, title in enumerate(titles):
            draw.text((i * self.panel + pad, pad), title, fill=TEXT_COLOUR, font=self._font)
        if caption:
            draw.text((pad, self.height - pad), caption, fill=TEXT_COLOUR, font=self._font,
                      anchor="ld")  # fmt: skip
        return np.asarray(out)

    def video_frame_size(self, resolution) -> tuple[int, int]:
        """The (w, h) video frames are scaled to so that they fit the left panel."""
        w, h = resolution
        s = min(self.panel / w, self.height / h)
        return max(2, int(round(w * s))), max(2, int(round(h * s)))


def has_video_encoder() -> bool:
    """True when the ffmpeg binary of `imageio-ffmpeg` is available."""
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
        return True
    except (ImportError, RuntimeError):
        return False


@contextlib.contextmanager
def _spawn_without_preexec():
    """ffmpeg processes started in this block are spawned without a Python `preexec_fn`.

    imageio-ffmpeg starts ffmpeg with `preexec_fn=os.setpgrp` (its own process group, so that
    Ctrl-C does not reach it). A `preexec_fn` makes `subprocess` fork and run Python code in
    the child, which JAX's fork handler flags ("os.fork() ... will likely lead to a
    deadlock") once its threads run. imageio-ffmpeg's documented switch turns it off; ffmpeg
    then shares our process group, so Ctrl-C stops it with us (the output is a temporary
    directory, removed on interruption). The switch is read when the process starts, i.e. at
    the first `next`/`send` of imageio-ffmpeg's generators, which this block must enclose.
    """
    key = "IMAGEIO_FFMPEG_NO_PREVENT_SIGINT"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def read_video_frames(path: str | Path, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """Decodes a video with ffmpeg, scaled to `size` (w, h): yields (h, w, 3) uint8 frames."""
    import imageio_ffmpeg

    w, h = size
    logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)  # "size differs": we scale
    gen = imageio_ffmpeg.read_frames(str(path), output_params=["-vf", f"scale={w}:{h}"])
    with _spawn_without_preexec():
        next(gen)  # metadata (ffmpeg starts here)
    for raw in gen:
        yield np.frombuffer(raw, np.uint8).reshape(h, w, 3)


def video_info(path: str | Path) -> tuple[tuple[int, int], float]:
    """((width, height), fps) of a video file."""
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path))
    with _spawn_without_preexec():
        meta = next(gen)
    gen.close()
    return tuple(int(v) for v in meta["size"]), float(meta.get("fps") or 25.0)


class VideoWriter:
    """Writes RGB frames to an H.264 `.mp4` (imageio-ffmpeg), else to an animated `.gif`."""

    def __init__(self, stem: str | Path, size: tuple[int, int], fps: float):
        self.mp4 = has_video_encoder()
        self.path = Path(stem).with_suffix(".mp4" if self.mp4 else ".gif")
        self.fps, self._gif = fps, []
        if self.mp4:
            import imageio_ffmpeg

            self._gen = imageio_ffmpeg.write_frames(
                str(self.path), size, fps=fps, codec="libx264", macro_block_size=16,
                output_params=["-preset", "ultrafast", "-crf", "23"],
            )  # fmt: skip
            with _spawn_without_preexec():
                self._gen.send(None)

    def write(self, frame: np.ndarray) -> None:
        if self.mp4:
            self._gen.send(np.ascontiguousarray(frame))
        else:  # GIF: quarter-size frames keep the file small
            self._gif.append(Image.fromarray(frame).reduce(2))

    def close(self) -> Path:
        if self.mp4:
            self._gen.close()
        elif self._gif:
            self._gif[0].save(
                self.path, save_all=True, append_images=self._gif[1:],
                duration=int(1000 / self.fps), loop=0,
            )  # fmt: skip
        return self.path


def contact_sheet(frames: list[np.ndarray], columns: int = 2) -> Image.Image:
    """Tiles result frames (each (h, w, 3)) at half size into one image, `columns` wide."""
    tiles = [Image.fromarray(f).reduce(2) for f in frames]
    tw, th = tiles[0].size
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * tw, rows * th), BACKGROUND)
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * tw, (i // columns) * th))
    return sheet


def person_crop(keypoints_px: np.ndarray, resolution) -> tuple[np.ndarray, tuple[int, int]]:
    """Without a video frame to show, the 2D panel zooms on the square where the person moves
    over the whole sequence (a fixed crop, 20% margin): returns (shifted keypoints, crop size)."""
    xy = keypoints_px[..., :2]
    if not np.isfinite(xy).any():
        return keypoints_px, resolution
    lo, hi = np.nanmin(xy, axis=(0, 1)), np.nanmax(xy, axis=(0, 1))  # (2,)
    side = 1.2 * float(max(hi - lo))
    if not 0 < side < min(resolution):
        return keypoints_px, resolution
    shifted = np.array(keypoints_px, np.float32, copy=True)
    shifted[..., :2] -= (lo + hi) / 2 - side / 2
    return shifted, (int(round(side)), int(round(side)))


def render_result(
    stem: str | Path,
    keypoints_px: np.ndarray,
    resolution: tuple[int, int],
    poses_world: np.ndarray,
    filled: np.ndarray | None = None,
    *,
    video: str | Path | None = None,
    fps: float = 25.0,
    size: tuple[int, int] | None = None,
    sheet_frames: int = 6,
    video_stats: dict | None = None,
    truth_world: np.ndarray | None = None,
    captions: list[str] | None = None,
) -> tuple[Path, list[np.ndarray]]:
    """Renders the whole result video and keeps `sheet_frames` evenly spaced frames.

    Args:
      stem: output path without suffix (`.mp4`, or `.gif` without an encoder, is added).
      keypoints_px: (T, 17, 2) COCO-order pixels drawn on the left.
      resolution: (w, h) of the video the keypoints belong to.
      poses_world: (T, 17, 3) world-frame poses drawn on the right.
      filled: optional (T, 17) bool, interpolated joints (drawn hollow).
      video: the source video, drawn under the keypoints (its frame t under keypoint row t);
        without it the 2D panel zooms on the person (`person_crop`).
      fps: frame rate of the output.
      size: (width, height) of the output frames (default: 640-pixel square panels).
      video_stats: filled with {"frames": video frames drawn, "more": whether the video has
        frames after the last keypoint frame}. Keypoint frames after the video's last frame
        are drawn on a blank background.
      truth_world: optional (N, 17, 3) world-frame ground truth, drawn in a third panel
        (frames t >= N leave it empty).
      captions: optional per-frame caption lines (drawn under the panels).

    Returns:
      (video path, the kept frames for `contact_sheet`).
    """
    panels = 2 if truth_world is None else 3
    size = size or (640 * panels, 640)
    renderer = PoseRenderer(*size, panels=panels)
    n = len(poses_world)
    keep = set(np.linspace(0, n - 1, min(sheet_frames, n)).round().astype(int).tolist())
    frames_in = iter(())
    if video is not None:
        frames_in = read_video_frames(video, renderer.video_frame_size(resolution))
    else:
        keypoints_px, resolution = person_crop(keypoints_px, resolution)
    writer = VideoWriter(stem, size, fps)
    kept, drawn = [], 0
    try:
        for t in range(n):
            background = next(frames_in, None)
            drawn += background is not None
            f = renderer.frame(
                keypoints_px[t], resolution, poses_world[t],
                None if filled is None else filled[t], background,
                truth_world[t] if truth_world is not None and t < len(truth_world) else None,
                captions[t] if captions is not None and t < len(captions) else None,
            )  # fmt: skip
            writer.write(f)
            if t in keep:
                kept.append(f)
        if video_stats is not None:
            video_stats.update(
                frames=drawn, more=video is not None and next(frames_in, None) is not None
            )
    finally:
        path = writer.close()
        if hasattr(frames_in, "close"):
            frames_in.close()  # stops the decoder of a longer video
    return path, kept
