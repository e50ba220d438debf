"""Input-pipeline benchmark: samples/s of `WindowDataset.get_batch` on one CPU core.

Training windows (F=243, tds=2, flips on) over synthetic in-memory sequences of Human3.6M-like
size, random batches of 160. Prints one JSON line. Run pinned to one core, e.g.
`taskset -c 0 .venv/bin/python -m experiments.bench_windows` (from the repository root).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time

import numpy as np

from aptpose_jax.datasets.sequences import PoseSequences
from aptpose_jax.datasets.windows import WindowDataset


def _synthetic(n_seqs: int, n_frames: int, seed: int = 0) -> PoseSequences:
    rng = np.random.default_rng(seed)
    p2 = [rng.standard_normal((n_frames, 17, 2), dtype=np.float32) for _ in range(n_seqs)]
    p3 = [rng.standard_normal((n_frames, 17, 3), dtype=np.float32) for _ in range(n_seqs)]
    return PoseSequences(
        name="synthetic", keys=[(f"S{i}", "A", 0) for i in range(n_seqs)], poses_2d=p2,
        poses_3d=p3, cameras=np.zeros((n_seqs, 9), np.float32),
        groups=[f"A{i % 15}" for i in range(n_seqs)], subjects=["S1"] * n_seqs,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequences", type=int, default=600)
    parser.add_argument("--frames-per-seq", type=int, default=1500)
    parser.add_argument("--frames", type=int, default=243)
    parser.add_argument("--tds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=160)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    ds = WindowDataset(
        _synthetic(args.sequences, args.frames_per_seq), frames=args.frames, tds=args.tds,
        train=True, flip_augment=True,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ds))
    ds.get_batch(order[: args.batch])  # warm-up
    n_batches, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        start = (n_batches * args.batch) % (len(ds) - args.batch)
        ds.get_batch(order[start : start + args.batch])
        n_batches += 1
    elapsed = time.perf_counter() - t0
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    result = {
        "bench": "windows_get_batch",
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit,
        "device": f"{platform.processor() or platform.machine()} ({affinity} core(s) allowed)",
        "pairs": len(ds),
        "frames": args.frames,
        "tds": args.tds,
        "batch": args.batch,
        "batches": n_batches,
        "samples_per_s": round(n_batches * args.batch / elapsed, 1),
        "ms_per_batch": round(1000 * elapsed / n_batches, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
