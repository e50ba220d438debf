"""Small evidence for the learning-rate rule beyond the paper's batch 160 (Stage II, demo data).

Trains the Stage II lifter from fresh weights on the synthetic demo data (`configs/
h36m_finetune.py:demo`, a smaller model than the paper's, sizes below) once per (batch, lr rule,
warm-up), every run seeing the same number of training samples (so the large batch takes
fewer steps, as it would on a pod), and evaluates P1 / P2 on the demo test set at the end.
Rules: `none` keeps the paper's lr 7e-4, `sqrt` multiplies it by sqrt(B / 160), `linear` by
B / 160. One JSON line per run appended to `--out` (final training loss = mean of the last
logged values, P1, P2, steps, wall time, load average).

  python experiments/lr_scaling.py                                   # the default comparison
  python experiments/lr_scaling.py --runs 160:none:0,1024:linear:20 --samples 102400 --epochs 5
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import jax

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from aptpose_jax.train import train_and_evaluate  # noqa: E402

PAPER_BATCH, PAPER_LR = 160, 7e-4
RULES = {"none": lambda b: 1.0, "sqrt": lambda b: math.sqrt(b / PAPER_BATCH),
         "linear": lambda b: b / PAPER_BATCH}  # fmt: skip


def demo_config(args, batch: int, rule: str, warmup: int):
    """`configs/h36m_finetune.py:demo`, fresh weights, sized by the flags, `samples` samples."""
    spec = importlib.util.spec_from_file_location("cfg_ft", REPO_ROOT / "configs/h36m_finetune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config("demo")
    c.data.root = str(REPO_ROOT / "data" / "demo")
    c.init.from_workdir = ""  # fresh weights: the comparison is about the optimiser
    c.model.frames, c.model.layers = args.frames, args.layers
    c.model.channel, c.model.d_hid = args.channel, args.d_hid
    c.optim.batch_size = batch
    c.optim.lr = PAPER_LR * RULES[rule](batch)
    c.optim.warmup_steps = warmup
    steps = max(1, args.samples // batch)
    c.optim.num_epochs = args.epochs
    c.optim.max_steps_per_epoch = max(1, steps // args.epochs)
    c.eval.every_epochs = args.epochs  # evaluate once, at the end
    c.eval.batch_size = 256
    c.log.every_steps = 5
    c.log.tensorboard = False
    c.log.progress_bar = False
    c.checkpoint.keep = 1
    return c


def final_loss(workdir: pathlib.Path, last: int) -> float:
    """Mean of the last `last` logged training losses of a run."""
    losses = [json.loads(x)["train/loss"] for x in (workdir / "metrics.jsonl").read_text()
              .splitlines() if '"train/loss"' in x]  # fmt: skip
    return sum(losses[-last:]) / len(losses[-last:])


def run_one(args, batch: int, rule: str, warmup: int) -> dict:
    config = demo_config(args, batch, rule, warmup)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lr_scaling_") as tmp:
        summary = train_and_evaluate(config, tmp)
        loss = final_loss(pathlib.Path(tmp), args.last)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    return dict(
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        commit=commit, jax=jax.__version__, backend=jax.default_backend(),
        batch=batch, rule=rule, lr=config.optim.lr, warmup_steps=warmup,
        steps=config.optim.num_epochs * config.optim.max_steps_per_epoch,
        samples=config.optim.num_epochs * config.optim.max_steps_per_epoch * batch,
        frames=args.frames, layers=args.layers, channel=args.channel, d_hid=args.d_hid,
        final_train_loss=round(loss, 3), p1=round(summary["p1"], 2), p2=round(summary["p2"], 2),
        wall_s=round(time.perf_counter() - t0, 1),
        loadavg=[round(load_before, 2), round(os.getloadavg()[0], 2)],
    )  # fmt: skip


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--runs",
        default="160:none:0,1024:linear:5,1024:sqrt:5,1024:none:0",
        help="batch:rule:warmup_steps, comma separated",
    )
    p.add_argument("--samples", type=int, default=20480, help="training samples per run")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--frames", type=int, default=27)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--channel", type=int, default=32)
    p.add_argument("--d_hid", type=int, default=64)
    p.add_argument("--last", type=int, default=2, help="logged losses averaged for the final")
    p.add_argument("--out", default=str(REPO_ROOT / "experiments/results/lr_scaling.jsonl"))
    args = p.parse_args(argv)
    rows = []
    for spec in args.runs.split(","):
        batch, rule, warmup = spec.split(":")
        if rule not in RULES:
            p.error(f"unknown rule {rule!r} in --runs; choose from {', '.join(RULES)}")
        row = run_one(args, int(batch), rule, int(warmup))
        rows.append(row)
        out = pathlib.Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    main()
