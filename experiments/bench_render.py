"""Rendering benchmark: result frames/s of `render.render_result` at 1280x640 (target >= 25).

Three cases, each the median of `--reps` runs over `--frames` frames of a walking person:
`draw` (Pillow drawing only, no encoder), `mp4` (drawing + H.264 encoding with the ffmpeg of
imageio-ffmpeg) and `mp4+video` (also decoding and scaling a 1920x1080 source video drawn
under the keypoints). Prints one JSON line with the date, commit, machine and load average.
Run from the repository root: `PYTHONPATH=. .venv/bin/python experiments/bench_render.py`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from aptpose_jax import render, world_frame

SIZE = (1280, 640)
SOURCE = (1920, 1080)


def _inputs(n: int):
    t = np.arange(n, dtype=np.float32)
    base = np.array(
        [[960, 300], [975, 285], [945, 285], [990, 290], [930, 290], [1010, 400], [910, 400],
         [1030, 520], [890, 520], [1040, 630], [880, 630], [990, 640], [930, 640],
         [995, 800], [925, 800], [1000, 950], [920, 950]], np.float32,
    )  # fmt: skip
    kp = base[None] + np.stack([60 * np.sin(t / 20), 10 * np.cos(t / 7)], -1)[:, None]
    pose = np.zeros((n, 17, 3), np.float32)
    pose[:, :, 1] = np.linspace(-0.8, 0.9, 17)[None]
    pose[:, :, 0] = 0.2 * np.sin(t[:, None] / 10 + np.arange(17)[None])
    world, _ = world_frame.to_world(pose)
    return kp, world


def _source_video(path: Path, n: int) -> None:
    import imageio_ffmpeg

    gen = imageio_ffmpeg.write_frames(
        str(path), SOURCE, fps=30, macro_block_size=8, output_params=["-preset", "ultrafast"]
    )
    gen.send(None)
    for i in range(n):
        gen.send(np.full((SOURCE[1], SOURCE[0], 3), (i * 3) % 255, np.uint8))
    gen.close()


def _time_case(case: str, kp, world, tmp: Path, video: Path) -> float:
    t0 = time.perf_counter()
    if case == "draw":
        renderer = render.PoseRenderer(*SIZE)
        for t in range(len(world)):
            renderer.frame(kp[t], SOURCE, world[t])
    else:
        render.render_result(
            tmp / case.replace("+", "_"), kp, SOURCE, world, size=SIZE,
            video=video if case == "mp4+video" else None, fps=30,
        )  # fmt: skip
    return len(world) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    kp, world = _inputs(args.frames)
    load_before = open("/proc/loadavg").read().split()[:3]
    results = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        _source_video(tmp / "source.mp4", args.frames)
        for case in ("draw", "mp4", "mp4+video"):
            runs = [_time_case(case, kp, world, tmp, tmp / "source.mp4") for _ in range(args.reps)]
            results[case] = {"median_fps": round(statistics.median(runs), 1),
                             "runs": [round(r, 1) for r in runs]}  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    print(json.dumps({
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit.stdout.strip(), "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "size": SIZE, "frames": args.frames, "results": results,
        "loadavg_before": load_before, "loadavg_after": open("/proc/loadavg").read().split()[:3],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
