"""Soak test: `kill -9` a small demo training run at random moments, restart it, compare.

Runs `python -m aptpose_jax.main` on generated demo data once without interruption, then in a
second workdir starts the same command, kills it with SIGKILL at a random moment (by default
a few logged records after the checkpoint it resumed from, plus a random 0-3 s; or after a
random time with `--trigger time`), restarts it, ... `--kills` times, and finally lets it
finish. The killed run must restart every time
without error and end bitwise equal to the uninterrupted one: parameters, batch statistics,
optimiser state, the best checkpoint's step and P1, and each logged training step exactly once
in metrics.jsonl.

  PYTHONPATH=. .venv/bin/python experiments/soak_kill.py [--kills 10] [--seed 0]

Exit status 0 when everything matched. Also run as `pytest -m slow tests/test_soak.py`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

OVERRIDES = {
    "init.from_workdir": "",
    "model.frames": 27,
    "model.layers": 2,
    "model.channel": 16,
    "model.d_hid": 32,
    "data.subjects_train": "S1",
    "data.subjects_test": "S9",
    "data.actions": "Walking,Directions",
    "optim.batch_size": 16,
    "optim.num_epochs": 2,
    "optim.max_steps_per_epoch": 8,
    "checkpoint.every_steps": 3,
    "eval.batch_size": 16,
    "eval.max_batches": 2,
    "log.every_steps": 2,
    "log.progress_bar": False,
}


def _command(workdir: Path, data_root: Path) -> list[str]:
    overrides = {**OVERRIDES, "data.root": str(data_root)}
    return [
        sys.executable,
        "-m",
        "aptpose_jax.main",
        "--config=configs/h36m_finetune.py:demo",
        f"--workdir={workdir}",
        *(f"--config.{k}={v}" for k, v in overrides.items()),
    ]


def _env() -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}


def _run_to_end(workdir: Path, data_root: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(_command(workdir, data_root), cwd=REPO, env=_env(), capture_output=True,
                          text=True)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"run in {workdir} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def _latest_step(workdir: Path) -> int:
    ckpts = workdir / "checkpoints"
    steps = [int(p.name) for p in ckpts.iterdir() if p.name.isdigit()] if ckpts.is_dir() else []
    return max(steps, default=0)


def _records_after(workdir: Path, step: int, since: float) -> int:
    """Records of steps after `step` written after wall time `since` (by this process)."""
    try:
        lines = (workdir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    count = 0
    for line in lines:
        try:
            record = json.loads(line)
            count += record["step"] > step and record["time"] > since
        except (ValueError, KeyError):
            pass
    return count


def _run_and_kill(workdir: Path, data_root: Path, rng: random.Random, trigger: str,
                  straight_s: float) -> tuple[int | None, float]:  # fmt: skip
    """Starts the run and SIGKILLs it at a random moment.

    trigger "time": after uniform(5%, 45%) of an uninterrupted run's duration.
    trigger "progress": once the run has logged 1-3 records beyond the checkpoint it
    resumed from, plus a random 0-3 s (inside a step, a save or an evaluation), so that
    every kill lands in training however long the start-up takes on a loaded machine.

    Returns:
      (exit code if the run ended before its kill else None, seconds it lived).
    """
    log = workdir.parent / f"{workdir.name}.log"
    start_step = _latest_step(workdir)
    target, extra = rng.randint(1, 3), rng.uniform(0.0, 3.0)
    deadline = rng.uniform(0.05, 0.45) * straight_s
    start, since = time.perf_counter(), time.time()
    with open(log, "a") as err:  # a file, not a pipe: a full pipe would stall the run
        proc = subprocess.Popen(_command(workdir, data_root), cwd=REPO, env=_env(),
                                stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
        while proc.poll() is None:
            lived = time.perf_counter() - start
            if trigger == "time" and lived >= deadline:
                break
            if trigger == "progress" and _records_after(workdir, start_step, since) >= target:
                time.sleep(extra)
                break
            time.sleep(0.1)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return None, time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"a restart failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    return proc.returncode, time.perf_counter() - start


def _config(data_root: Path):
    spec = importlib.util.spec_from_file_location("cfg", REPO / "configs" / "h36m_finetune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("demo")
    for path, value in {**OVERRIDES, "data.root": str(data_root)}.items():
        node = config
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def record(workdir: Path, data_root: Path) -> dict:
    """The final state of a workdir, as host arrays and plain values."""
    import jax
    import numpy as np

    from aptpose_jax import checkpointing, run_builder

    run = run_builder.build_run(_config(data_root), workdir)
    state, meta = run.restore_latest(run.initial_state())
    run.close()
    leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]
    _, best_step, best_meta = checkpointing.read_run_meta(workdir, "best")
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {
        "leaves": leaves,
        "step": meta["step"],
        "best": (best_step, best_meta["best_p1"]),
        "train_steps": [m["step"] for m in lines if "train/loss" in m],
        "evals": [(m["step"], m["eval/p1"]) for m in lines if "eval/p1" in m],
    }


def compare(a: dict, b: dict) -> list[str]:
    """Differences between two records (empty when bitwise equal)."""
    import numpy as np

    problems = [k for k in ("step", "best", "train_steps", "evals") if a[k] != b[k]]
    if len(a["leaves"]) != len(b["leaves"]):
        problems.append("number of arrays")
    else:
        problems += [
            f"array {i}"
            for i, (x, y) in enumerate(zip(a["leaves"], b["leaves"], strict=True))
            if not np.array_equal(x, y)
        ]
    return problems


def _count(path: Path, text: str) -> int:
    return path.read_text().count(text) if path.is_file() else 0


def soak(kills: int, seed: int, out: Path, trigger: str = "progress") -> dict:
    """Runs the soak; returns a result dict (also written to `out/result.json`)."""
    from aptpose_jax.datasets.demo import generate_demo_data

    data_root = out / "data"
    if not (out / "straight").is_dir():  # (reused when a previous soak in `out` made it)
        generate_demo_data(data_root, seed=0, frames_per_sequence=120)
        (out / "straight_s").write_text(str(_run_to_end(out / "straight", data_root)))
    straight_s = float((out / "straight_s").read_text())
    rng = random.Random(seed)
    lived, ended_early = [], 0
    shutil.rmtree(out / "killed", ignore_errors=True)
    (out / "killed.log").unlink(missing_ok=True)
    for _ in range(kills):
        code, seconds = _run_and_kill(out / "killed", data_root, rng, trigger, straight_s)
        lived.append(round(seconds, 1))
        if code is not None:
            ended_early += 1  # it finished before the kill: later kills hit a finished run
    _run_to_end(out / "killed", data_root)
    problems = compare(record(out / "straight", data_root), record(out / "killed", data_root))
    result = {
        "kills": kills,
        "seed": seed,
        "trigger": trigger,
        "seconds_each_killed_process_lived": lived,
        "runs_finished_before_their_kill": ended_early,
        "uninterrupted_s": round(straight_s, 1),
        "attempts_that_found_the_run_done": _count(out / "killed.log", "epochs already done"),
        "attempts_that_resumed": _count(out / "killed.log", "resumed from"),
        "bitwise_equal": not problems,
        "differences": problems,
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="scratch directory (default: a temporary one)")
    p.add_argument(
        "--trigger",
        choices=("progress", "time"),
        default="progress",
        help="kill after some training progress (default) or after a random time",
    )
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="aptpose_soak_"))
    result = soak(args.kills, args.seed, out, args.trigger)
    print(json.dumps(result))
    return 0 if result["bitwise_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
