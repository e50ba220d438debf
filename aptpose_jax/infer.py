"""Your own video: 2D keypoints of a video -> 3D poses, a rendered video and plots.

    python -m aptpose_jax.infer --keypoints FILE --weights W --out DIR \
        [--video VIDEO] [--resolution WxH] [--person N] [--max-gap F] [--no-render]
        [--format FMT] [--with-gt [DATA_3D.npz:SUBJECT/ACTION/CAMERA]]

FILE is a VideoPose3D custom npz, COCO keypoint results JSON, AlphaPose results JSON
(COCO-17 / Halpe-26) or a plain (T, 17, 2|3) `.npy`/`.npz` (`datasets/keypoint_files.py`).
One person is followed through the video (`datasets/tracking.py`: the most confident track,
or `--person N`; the tracks found are printed and kept in summary.json), gaps are
interpolated, the keypoints are checked to be pixels of the frame
(`datasets/input_checks.py`), the keypoints are normalised by the frame width and
lifted by `Predictor` (seq2frame, flip TTA). DIR receives `poses_3d.npz`, `poses_3d.npy`,
`pose3d.mp4` (or `.gif`), `frames.png` and `summary.json`; it is written as a temporary
sibling directory renamed at the end, and an existing non-empty DIR is never touched.
`--with-gt` (`ground_truth.py`) draws the sequence's 3D ground truth beside the prediction and
adds its per-frame error and P1/P2 to summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aptpose_jax.datasets import input_checks
from aptpose_jax.datasets.keypoint_files import FORMATS, read_keypoints
from aptpose_jax.datasets.tracking import MAX_GAP, fill_gaps, follow_person
from aptpose_jax.errors import UserError, exit_on_user_error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m aptpose_jax.infer", description=__doc__.split("\n")[0]
    )
    p.add_argument("--keypoints", required=True, help="2D keypoint file of the video")
    p.add_argument("--weights", required=True, help="training workdir, converted dir or .pth")
    p.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    p.add_argument("--video", help="the source video: frame size, frame rate, drawn frames")
    p.add_argument("--resolution", help="frame size WIDTHxHEIGHT in pixels, e.g. 1920x1080")
    p.add_argument("--person", type=int, default=0, help="track to follow (0 = most confident)")
    p.add_argument(
        "--max-gap", type=int, default=MAX_GAP,
        help=f"frames a person may vanish and stay one track (default {MAX_GAP})",
    )  # fmt: skip
    p.add_argument("--no-render", action="store_true", help="skip pose3d.mp4 and frames.png")
    p.add_argument("--format", default="auto", choices=("auto", *FORMATS))
    p.add_argument("--entry", help="video name inside a multi-video VideoPose3D npz")
    p.add_argument("--input-layout", default="auto", choices=("auto", "h36m", "coco"),
                   help="joint order the model takes (auto: from the weights)")  # fmt: skip
    p.add_argument("--no-eval-masks", action="store_true",
                   help="masked model: no masks (default: reference eval masks, Q2)")  # fmt: skip
    p.add_argument("--confidence", type=float, default=0.3,
                   help="joints below this confidence are interpolated")  # fmt: skip
    p.add_argument(
        "--fps", type=float, help="frame rate of pose3d.mp4 (default: the video's, else 25)"
    )
    p.add_argument("--batch-size", type=int, default=256, help="windows per jitted batch")
    p.add_argument("--with-gt", nargs="?", const="keypoints", metavar="DATA_3D.npz:S/ACTION/CAM",
                   help="draw and score the 3D ground truth: alone, the keypoint file's "
                   "positions_3d; or a Human3.6M sequence, e.g. "
                   "data_3d_h36m.npz:S9/Walking/1")  # fmt: skip
    p.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return p.parse_args(argv)


def parse_resolution(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX*,]\s*(\d+)\s*", text)
    if not m or min(int(m.group(1)), int(m.group(2))) == 0:
        raise UserError(f"--resolution {text!r}: give WIDTHxHEIGHT in pixels, e.g. 1920x1080")
    return int(m.group(1)), int(m.group(2))


def resolve_resolution(args, file_resolution) -> tuple[tuple[int, int], str]:
    """The frame size: --resolution, else the keypoint file's, else --video's."""
    if args.resolution:
        return parse_resolution(args.resolution), "--resolution"
    if file_resolution is not None:
        return tuple(file_resolution), "keypoint file"
    if args.video:
        return input_checks.video_info(args.video)[0], "--video"
    raise UserError(
        f"{args.keypoints}: the frame size is unknown (this format does not store it); "
        "give --resolution WIDTHxHEIGHT (e.g. --resolution 1920x1080) or --video VIDEO"
    )


def check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not empty; choose another --out or remove it")


def write_outputs(tmp: Path, result: dict, args, resolution, fps: float) -> dict:
    """Writes the arrays, the video and the contact sheet into `tmp`; returns timings."""
    np.savez(tmp / "poses_3d.npz", **{k: v for k, v in result.items() if isinstance(v, np.ndarray)})
    np.save(tmp / "poses_3d.npy", result["poses_3d"])
    if args.no_render:
        return {}
    from aptpose_jax.render import contact_sheet, render_result

    t0 = time.perf_counter()
    drawn: dict = {}
    path, kept = render_result(
        tmp / "pose3d", result["keypoints_2d"], resolution, result["poses_world"],
        result["interpolated_joints"], video=args.video, fps=fps, video_stats=drawn,
        truth_world=result.get("poses_world_gt"), captions=result.get("captions"),
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    contact_sheet(kept).save(tmp / "frames.png")
    n = len(result["poses_3d"])
    out = {"video": path.name, "render_s": seconds, "render_fps": n / max(seconds, 1e-9)}
    if args.video:
        out["video_background"] = video_length_note(drawn, n)
        if out["video_background"]["note"]:
            print(f"note: {out['video_background']['note']}")
    return out


def video_length_note(drawn: dict, n: int) -> dict:
    """How many of the `n` result frames had a `--video` frame behind them, in words too."""
    k, more = drawn.get("frames", 0), drawn.get("more", False)
    note = ""
    if k < n:
        note = (f"--video has {k} frames, the keypoints {n}: frames {k}..{n - 1} are drawn "
                "on a blank background")  # fmt: skip
    elif more:
        note = f"--video has more frames than the keypoints ({n}): its first {n} are drawn"
    return {"video_frames_drawn": k, "video_longer": more, "note": note}


def describe_tracks(tracks: list[dict], person: int) -> str:
    """Console lines: the tracks found (ranked) and the one followed."""
    lines = [f"{len(tracks)} track(s) found (ranked by total confidence; --person N picks):"]
    for r in tracks[:10]:
        mark = "  <- followed" if r["person"] == person else ""
        lines.append(f"  person {r['person']}: frames {r['first_frame']}-{r['last_frame']} "
                     f"({r['frames']} seen, {r['gaps']} gap(s) bridged), "
                     f"mean score {r['mean_score']:.2f}{mark}")  # fmt: skip
    if len(tracks) > 10:
        lines.append(f"  ... and {len(tracks) - 10} more (all in summary.json)")
    return "\n".join(lines)


def lift(args) -> tuple[dict, dict]:
    """Reads, tracks, fills and lifts; returns (result arrays, summary)."""
    from aptpose_jax.evaluators import prediction_only
    from aptpose_jax.predictor import Predictor
    from aptpose_jax.world_frame import to_world

    t0 = time.perf_counter()
    det = read_keypoints(args.keypoints, args.format, args.entry)
    resolution, res_source = resolve_resolution(args, det.resolution)
    raw, tracks = follow_person(det, args.person, max_gap=args.max_gap, source=args.keypoints)
    print(describe_tracks(tracks, args.person))
    input_checks.check_pixel_keypoints(
        raw, resolution, source=args.keypoints, resolution_from=res_source,
        confidence=args.confidence,
    )  # fmt: skip
    if args.video and res_source != "--video":
        video_size = input_checks.video_info(args.video)[0]
        input_checks.check_video_size(args.video, video_size, resolution, res_source)
    kp, joint_filled, frame_filled = fill_gaps(
        raw, threshold=args.confidence, source=args.keypoints
    )
    t1 = time.perf_counter()
    predictor = Predictor.load(
        args.weights, input_layout=args.input_layout, batch_size=args.batch_size,
        **({"eval_masks": False} if args.no_eval_masks else {}),
    )  # fmt: skip
    t2 = time.perf_counter()
    poses = predictor.predict_pixels(kp, resolution)
    timing = predictor.last_timing
    fps = len(poses) / max(timing["run_s"], 1e-9)
    print(f"lifted {len(poses)} frames at {fps:.0f} frames/s "
          f"(+{timing['compile_s']:.1f} s compilation)")  # fmt: skip
    world, shift = to_world(poses)
    stats, _ = prediction_only(poses)
    result = {
        "poses_3d": poses,  # camera frame, root-relative, metres
        "poses_world": world,
        "world_shift": np.asarray(shift, np.float32),
        "keypoints_2d": kp,  # COCO-order pixels after gap filling
        "keypoints_2d_raw": raw,  # the tracked detections, NaN where missing
        "model_input": predictor.to_model_input(kp, resolution),
        "interpolated_frames": frame_filled,
        "interpolated_joints": joint_filled,
        "resolution": np.asarray(resolution, np.int32),
    }
    summary = {
        "frames": len(poses), "keypoints": str(args.keypoints), "format": det.fmt,
        "person": args.person, "person_track": tracks[args.person], "tracks": tracks,
        "max_gap": args.max_gap, "resolution": list(resolution), "resolution_from": res_source,
        "interpolated_frames": int(frame_filled.sum()),
        "interpolated_joints": int(joint_filled.sum()),
        "weights": str(args.weights), "model": predictor.model_cfg.__dict__,
        "input_layout": predictor.input_layout,
        "eval_masks": predictor.step_cfg.masks_in_eval,
        "lift_fps": fps,
        "prediction_stats": stats,
        "timing_s": {"read": t1 - t0, "load": t2 - t1, "compile": timing["compile_s"],
                     "lift": timing["run_s"]},
    }  # fmt: skip
    return result, summary


def add_ground_truth(result: dict, summary: dict, truth: np.ndarray, source: str) -> None:
    """Scores the prediction against `truth`; adds the world-frame truth and captions."""
    from aptpose_jax.ground_truth import compare
    from aptpose_jax.world_frame import to_world

    aligned, scores = compare(result["poses_3d"], truth)  # (n, 17, 3) root-relative
    n, errors = len(aligned), scores["mpjpe_per_frame_mm"]
    result["poses_3d_gt"] = aligned
    result["poses_world_gt"] = to_world(aligned)[0]  # same rotation as the prediction
    result["captions"] = [f"frame {t}: MPJPE {errors[t]:.0f} mm   |   sequence P1 "
                          f"{scores['p1_mm']:.1f} mm, P2 {scores['p2_mm']:.1f} mm ({n} frames)"
                          for t in range(n)]  # fmt: skip
    summary["ground_truth"] = {"source": source, **scores}
    print(f"against the 3D ground truth ({n} frames): P1 {scores['p1_mm']:.1f} mm, "
          f"P2 {scores['p2_mm']:.1f} mm")  # fmt: skip


def run(args) -> Path:
    t0 = time.perf_counter()
    out = Path(args.out).expanduser().resolve()
    check_out_dir(out)
    if args.video:
        input_checks.check_video_file(args.video)  # before any reading or lifting
    truth = None
    if args.with_gt:  # read first: a file without 3D fails before the model loads
        from aptpose_jax.ground_truth import read_ground_truth

        truth = read_ground_truth(args.with_gt, args.keypoints, args.entry)
    result, summary = lift(args)
    if truth is not None:
        add_ground_truth(result, summary, *truth)
    fps = args.fps
    if fps is None and args.video:
        fps = input_checks.video_info(args.video)[1]
    fps = fps or 25.0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp.chmod(0o755)
        summary.update(write_outputs(tmp, result, args, tuple(summary["resolution"]), fps))
        summary["video_fps"] = fps
        summary["timing_s"]["total"] = time.perf_counter() - t0
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        check_out_dir(out)  # nobody wrote there meanwhile
        if out.exists():
            out.rmdir()  # empty
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = exit_on_user_error(lambda: run(args), debug=args.debug)
    looks = [n for n in ("pose3d.mp4", "pose3d.gif", "frames.png") if (out / n).exists()]
    print(f"wrote {out}: poses_3d.npz, poses_3d.npy, summary.json" +
          (f"; look at {', '.join(str(out / n) for n in looks)}" if looks else ""))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
