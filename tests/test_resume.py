"""Kill a training run at each boundary, restart it, and end bitwise equal to an uninterrupted run.

A "kill" is an exception raised at the boundary (the process state is then dropped, as a
`kill -9` would drop it); `experiments/soak_kill.py` does the same with real `kill -9`s at
random moments. Also: resume refuses another configuration, metrics.jsonl holds each step once.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from test_train import load_config, tiny

from aptpose_jax import checkpointing, run_builder, train
from aptpose_jax.errors import ResumeMismatchError


class Killed(Exception):
    """Stands for the process being killed at this point."""


def _cfg(demo_root, **overrides):
    return tiny(
        load_config("h36m_finetune", "demo"),
        demo_root,
        **{
            "init.from_workdir": "",
            "checkpoint.every_steps": 3,
            "optim.num_epochs": 3,
            "optim.max_steps_per_epoch": 4,
            "eval.max_batches": 1,
            **overrides,
        },
    )


def _record(workdir, config):
    """(params, batch stats, opt state, best step, best P1, train/loss steps) of a workdir."""
    run = run_builder.build_run(config, workdir)
    state, meta = run.restore_latest(run.initial_state())
    run.close()
    tree = jax.device_get((state.params, state.batch_stats, state.opt_state))
    best_dir, best_step, best_meta = checkpointing.read_run_meta(workdir, "best")
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    steps = [m["step"] for m in lines if "train/loss" in m]
    evals = [(m["step"], m["eval/p1"]) for m in lines if "eval/p1" in m]
    return tree, best_step, best_meta["best_p1"], steps, evals, meta["step"]


def _assert_same(a, b):
    tree_a, *rest_a = a
    tree_b, *rest_b = b
    assert rest_a == rest_b  # best step, best P1, logged steps (each once), final step
    for x, y in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def straight(demo_root, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    train.train_and_evaluate(_cfg(demo_root), str(workdir))
    return _record(workdir, _cfg(demo_root))


def _kill_after_best_before_latest(monkeypatch, workdir):
    real = checkpointing.RunCheckpoints.save_latest

    def dying(self, step, *a, **k):
        if step in self.best.all_steps():
            raise Killed()  # best/<step> is final, checkpoints/<step> is not
        return real(self, step, *a, **k)

    monkeypatch.setattr(checkpointing.RunCheckpoints, "save_latest", dying)


def _kill_between_epochs(monkeypatch, workdir):
    real = train._train_epoch

    def dying(run, state, epoch, *a, **k):
        if epoch == 2:
            raise Killed()
        return real(run, state, epoch, *a, **k)

    monkeypatch.setattr(train, "_train_epoch", dying)


def _kill_mid_epoch(monkeypatch, workdir):
    real = train._train_epoch
    calls = {"n": 0}

    def dying(run, *a, **k):
        step_fn = run.train_step

        def counting(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:  # global step 7: after the mid-epoch checkpoint of step 6
                raise Killed()
            return step_fn(*args, **kwargs)

        run.train_step = counting
        try:
            return real(run, *a, **k)
        finally:
            run.train_step = step_fn

    monkeypatch.setattr(train, "_train_epoch", dying)


def _kill_inside_temporary_directory(monkeypatch, workdir):
    real = checkpointing.RunCheckpoints.save_latest

    def dying(self, step, *a, **k):
        if step == 8:  # the end of epoch 2: leave half-written temporaries of this very step
            for sub in ("checkpoints", "best"):
                tmp = workdir / sub / f"{step}.orbax-checkpoint-tmp"
                (tmp / "model").mkdir(parents=True, exist_ok=True)
                (tmp / "model" / "garbage").write_bytes(b"half written")
            raise Killed()
        return real(self, step, *a, **k)

    monkeypatch.setattr(checkpointing.RunCheckpoints, "save_latest", dying)


# 3 epochs of 4 steps, checkpoints every 3 steps and at each epoch end (steps 3 4 6 8 9 12).
# Each process is killed at the next boundary; each restart resumes where the last one left.
KILLS = (
    _kill_after_best_before_latest,  # at step 4 (the first best); resumes from step 3
    _kill_between_epochs,  # before epoch 2; resumes from step 4 (epoch done)
    _kill_mid_epoch,  # at step 7; resumes from step 6
    _kill_inside_temporary_directory,  # at step 8; resumes from step 6 again
)


def test_run_killed_at_every_boundary_resumes_and_ends_bitwise_equal(
    straight, demo_root, tmp_path, monkeypatch
):
    workdir = tmp_path / "killed"
    for kill in KILLS:
        with monkeypatch.context() as patch:
            kill(patch, workdir)
            with pytest.raises(Killed):
                train.train_and_evaluate(_cfg(demo_root), str(workdir))
    train.train_and_evaluate(_cfg(demo_root), str(workdir))  # the last restart: no error
    _assert_same(_record(workdir, _cfg(demo_root)), straight)
    assert not list(workdir.glob("*/*.orbax-checkpoint-tmp*"))  # leftovers cleaned


def test_resume_with_other_settings_is_refused_listing_the_fields(demo_root, tmp_path):
    workdir = tmp_path / "run"
    train.train_and_evaluate(_cfg(demo_root, **{"optim.num_epochs": 1}), str(workdir))
    changed = _cfg(demo_root, **{"optim.batch_size": 8, "data.tds": 1, "seed": 3})
    with pytest.raises(ResumeMismatchError) as err:
        train.train_and_evaluate(changed, str(workdir))
    message = str(err.value)
    for field in ("optim.batch_size 16 -> 8", "data.tds 2 -> 1", "seed 1 -> 3", "--workdir"):
        assert field in message
    assert "resume=force" in message
    # More epochs (or another learning rate) are no conflict; force resumes anyway.
    train.train_and_evaluate(_cfg(demo_root, **{"optim.num_epochs": 2}), str(workdir))
    forced = _cfg(demo_root, **{"seed": 3, "resume": "force"})
    train.train_and_evaluate(forced, str(workdir))
