"""The points of the scaling sweep (`scaling.py`): its flags, their order, what is already done.

A point is (stage, compute dtype, device count n, per-device batch b). The flags name weak
series (fixed b), strong series (fixed global batch n x b) and a batch sweep on the fewest
devices; `plan` orders the points so that a sweep cut short by `--budget_s` still covers every
stage and dtype, and `done_points` lets `--resume` skip what a JSONL file already holds.
"""

from __future__ import annotations

import argparse
import json
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "experiments" / "results" / "scaling.jsonl"
# Stage facts of the H36M recipes (configs/h36m_pretrain.py, configs/h36m_finetune.py).
STAGES = {
    "pretrain": dict(temporal_ratio=0.8, joints_per_frame=2, lr=1e-4),
    "lifter": dict(temporal_ratio=0.0, joints_per_frame=0, lr=7e-4),
    "lifter_nomask": dict(temporal_ratio=0.0, joints_per_frame=0, lr=7e-4),  # 3DHP Stage II
}


def plan(args, n_available: int) -> tuple[list[tuple[str, str, int, int, set]], int]:
    """The (stage, dtype, devices, per-device batch, series) points, deduplicated, in order of
    priority: every (stage, dtype) gets its fewest- and most-device points of the first weak
    series first, then its other fewest-device points (batch sweep), then the remaining weak
    and strong points, so that a sweep cut short by `--budget_s` still covers every stage and
    dtype. Also returns how many points
    that first block has (the memory rows run after it).
    """
    counts = [n for n in args.devices if n <= n_available]
    if not counts:
        raise SystemExit(f"--devices {args.devices}: only {n_available} devices available")
    points: dict[tuple[int, int], set] = {}
    for b in args.weak:
        for n in counts:
            points.setdefault((n, b), set()).add(f"weak{b}")
    for g in args.strong:
        for n in counts:
            if g % n == 0:
                points.setdefault((n, g // n), set()).add(f"strong{g}")
    for b in args.batches:
        points.setdefault((counts[0], b), set()).add("batch")
    first = [(n, args.weak[0]) for n in dict.fromkeys((counts[0], counts[-1]))] if args.weak else []
    single = [k for k in sorted(points) if k not in first and k[0] == counts[0]]
    rest = [k for k in sorted(points) if k not in first and k not in single]
    combos = [(st, dt) for dt in args.dtypes.split(",") for st in args.stages.split(",")]
    ordered = [(st, dt, *k) for k in first + single for st, dt in combos]
    ordered += [(st, dt, *k) for st, dt in combos for k in rest]
    return [(st, dt, n, b, points[(n, b)]) for st, dt, n, b in ordered], len(first) * len(combos)


def explicit_points(args, n_available: int):
    """`--points stage:dtype:devices:batch,...` in the given order, tagged with their series."""
    tags = {(n, b): series for _, _, n, b, series in plan(args, n_available)[0]}
    out = []
    for spec in args.points.split(","):
        stage, dtype, n, b = spec.split(":")
        if stage not in STAGES or dtype not in ("float32", "bfloat16") or int(n) > n_available:
            raise SystemExit(f"--points: bad point {spec!r} (stage:dtype:devices:batch)")
        out.append((stage, dtype, int(n), int(b), tags.get((int(n), int(b)), {"custom"})))
    return out


def done_points(path: pathlib.Path, common: dict, args) -> set:
    """Points already in `path` for this backend, device kind and model size (`--resume`)."""
    if not path.is_file():
        return set()
    done = set()
    for line in path.read_text().splitlines():
        r = json.loads(line) if line.strip() else {}
        same = [r.get(k) == common[k] for k in ("backend", "device_kind")]
        same += [r.get(k) == getattr(args, k) for k in ("frames", "layers", "channel", "d_hid")]
        if r.get("kind") == "train_step" and all(same):
            done.add((r["stage"], r["dtype"], r["device_count"], r["per_device_batch"]))
    return done


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Scaling sweep: devices x batch x compute dtype.")
    p.add_argument("--cpu_devices", type=int, default=0, help="fake CPU devices (0: as JAX has)")
    p.add_argument("--devices", type=_ints, default=[1, 2, 4, 8], help="device counts")
    p.add_argument("--weak", type=_ints, default=[2], help="per-device batches (weak scaling)")
    p.add_argument("--strong", type=_ints, default=[16], help="global batches (strong scaling)")
    p.add_argument("--batches", type=_ints, default=[2, 4, 8, 16], help="batch sweep, 1 device")
    p.add_argument("--stages", default="lifter,pretrain", help="lifter (II), pretrain (I)")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--steps", type=int, default=3, help="timed steps per point (and pipelined)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after compilation")
    p.add_argument("--frames", type=int, default=243)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--channel", type=int, default=256)
    p.add_argument("--d_hid", type=int, default=512)
    p.add_argument("--temporal_ratio", type=float, default=-1, help="Stage I; -1: 0.8 (H36M)")
    p.add_argument("--matmul_n", type=int, default=0, help="matmul size; 0: 2048 CPU, 8192 else")
    p.add_argument("--memory_batches", type=_ints, default=[], help="compile-only, Stage II")
    p.add_argument("--fit_search", action="store_true", help="largest Stage II batch that runs")
    p.add_argument("--fit_limit", type=int, default=65536)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSONL file to append to")
    p.add_argument("--label", default="", help="free text stored in every row")
    p.add_argument("--points", default="", help="stage:dtype:devices:batch,... (this order)")
    p.add_argument("--resume", action="store_true", help="skip points already in --out")
    p.add_argument(
        "--budget_s", type=float, default=0, help="start no point after this (0: no limit)"
    )
    args = p.parse_args(argv)
    for s in args.stages.split(","):
        if s not in STAGES:
            p.error(f"unknown stage {s!r}; choose from {', '.join(STAGES)}")
    for d in args.dtypes.split(","):
        if d not in ("float32", "bfloat16"):
            p.error(f"unknown dtype {d!r}; choose float32 or bfloat16")
    if args.steps < 1 or min(args.devices + args.weak + args.strong + args.batches) < 1:
        p.error("--steps, --devices, --weak, --strong and --batches must be positive")
    return args
