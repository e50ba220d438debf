"""Logs: quiet console (third-party INFO filtered, --verbosity honoured), one start-up summary,
metrics.jsonl / TensorBoard flushed at every log step and cut back on a resume."""

from __future__ import annotations

import json
import logging as pylogging
import pathlib
import subprocess
import sys

from test_train import load_config, tiny

from aptpose_jax import logs, run_builder

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _record(path: str, level: int, name: str = "absl") -> pylogging.LogRecord:
    return pylogging.LogRecord(name, level, path, 1, "message", None, None)


def test_filter_keeps_our_info_and_everyones_warnings():
    ours = str(REPO_ROOT / "aptpose_jax" / "train.py")
    orbax = "/site-packages/orbax/checkpoint/checkpoint_manager.py"
    assert logs.ours_or_warning(_record(ours, pylogging.INFO))
    assert not logs.ours_or_warning(_record(orbax, pylogging.INFO))
    assert logs.ours_or_warning(_record(orbax, pylogging.WARNING))
    assert not logs.ours_or_warning(_record("/x/jax/_src/dispatch.py", pylogging.DEBUG, "jax"))


def test_metrics_are_flushed_each_step_and_cut_back_on_resume(tmp_path):
    log = logs.MetricLog(tmp_path, tensorboard=True)
    for step in (2, 4, 6):
        log.scalars({"train/loss": 1.0 / step}, step)
    # Before close (a kill): every record is on disk, TensorBoard's included.
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    sizes = sum(e.stat().st_size for e in events)
    log.scalars({"train/loss": 0.1}, 8)
    assert sum(e.stat().st_size for e in events) > sizes
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 10, "tr')  # a line cut short by a kill
    resumed = logs.MetricLog(tmp_path, tensorboard=False, resume_step=4)  # restored step 4
    resumed.scalars({"train/loss": 0.2}, 6)
    resumed.close()
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]  # each step once


def test_start_up_summary_names_devices_sizes_windows_steps_and_workdir(demo_root, tmp_path):
    config = tiny(load_config("h36m_finetune", "demo"), demo_root, **{"init.from_workdir": ""})
    run = run_builder.build_run(config, tmp_path / "w")
    text = run_builder.describe(run, 4)
    run.close()
    for part in ("8 x cpu", "frames 27", "layers 2", "parameters", "fresh",
                 f"train {len(run.train_ds)}", f"test {len(run.test_ds)}",
                 "steps per epoch: 4", str(tmp_path / "w")):  # fmt: skip
        assert part.lower() in text.lower(), (part, text)


def test_a_training_run_logs_no_third_party_info(demo_root, tmp_path):
    overrides = {
        "data.root": demo_root, "init.from_workdir": "", "model.layers": 2, "model.channel": 16,
        "model.d_hid": 32, "data.subjects_train": "S1", "data.subjects_test": "S9",
        "data.actions": "Walking", "optim.batch_size": 16, "optim.num_epochs": 1,
        "optim.max_steps_per_epoch": 2, "checkpoint.every_steps": 1, "eval.batch_size": 16,
        "eval.max_batches": 1, "log.progress_bar": False,
    }  # fmt: skip
    cmd = [sys.executable, "-m", "aptpose_jax.main", "--config=configs/h36m_finetune.py:demo",
           f"--workdir={tmp_path / 'w'}"]  # fmt: skip
    cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    info = [x for x in lines if x.startswith("I")]  # absl's INFO prefix
    assert sum("run: devices:" in x for x in lines) == 1  # the start-up summary, once
    assert [x for x in info if not _ours(x)] == []  # no INFO line of another library
    assert len(lines) < 80, "\n".join(lines)  # (an unfiltered run printed ~1000 orbax lines)
    quiet = subprocess.run([*cmd, "--verbosity=-1"], cwd=REPO_ROOT, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert quiet.returncode == 0 and "run: devices:" not in quiet.stderr  # --verbosity works


def _ours(line: str) -> bool:
    """Whether an absl log line comes from one of this package's modules."""
    source = line.split("]")[0].split(" ")[-1]  # "I1201 12:00:00.1 123 train.py:45]"
    names = {p.name for p in (REPO_ROOT / "aptpose_jax").rglob("*.py")}
    return source.split(":")[0] in names
