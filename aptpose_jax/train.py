"""`train_and_evaluate(config, workdir)`: set-up and the epoch loop (train, evaluate, save).

Everything a step does lives in `steps.py`; evaluation passes in `inference.py`; model
construction and weight loading in `run_builder.py`. This module wires them: data order, learning
rate schedule, checkpoints, logging, resume.

Reproducibility: the training order of epoch e is `permutation(seed, e)`, the step key of
global step s is `fold_in(key(seed), s)`; with the parameters, batch statistics, optimiser
state and step restored from a checkpoint, a resumed run repeats exactly what an
uninterrupted one does (bitwise on CPU).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import logging

from aptpose_jax import defaults, inference, resume, run_builder
from aptpose_jax.errors import ConfigError
from aptpose_jax.logs import MetricLog


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss becomes NaN or infinite."""


def learning_rate(optim: ml_collections.ConfigDict, epoch: int, step: int = -1) -> float:
    """Learning rate of 1-based `epoch` (§4.2): decayed after every epoch before it.

    After epoch k the reference multiplies by `lr_decay_large` when
    `k % large_decay_epoch == 0`, else by `lr_decay`. Not in the reference: with
    `optim.warmup_steps` > 0 the 0-based global `step` gets a linear warm-up factor
    `min(1, (step + 1) / warmup_steps)` (for large batches with a scaled lr; default 0 = off).
    """
    lr = optim.lr
    for k in range(1, epoch):
        lr *= optim.lr_decay_large if k % optim.large_decay_epoch == 0 else optim.lr_decay
    warmup = optim.get("warmup_steps", 0)
    if warmup > 0 and step >= 0:
        lr *= min(1.0, (step + 1) / warmup)
    return lr


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The training sample order of an epoch: a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def steps_per_epoch(config, n_samples: int) -> int:
    b = config.optim.batch_size
    steps = n_samples // b if config.data.drop_remainder else math.ceil(n_samples / b)
    if config.optim.max_steps_per_epoch > 0:
        steps = min(steps, config.optim.max_steps_per_epoch)
    if steps < 1:
        raise ConfigError(
            f"the training set has {n_samples} windows, fewer than one batch of "
            f"{b}; lower --config.optim.batch_size or use more data"
        )
    return steps


def _check_finite(history: list, first_step: int) -> None:
    """Aborts, naming the step, if any loss in `history` (device scalars) is not finite."""
    losses = np.asarray(jax.device_get(history))
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        step = first_step + int(bad[0])
        raise NonFiniteLossError(
            f"training loss is {losses[bad[0]]} at global step {step}; the last checkpoint "
            "before it is intact: lower --config.optim.lr or try --config.compute_dtype=float32"
        )


def _train_epoch(run, state, epoch: int, n_steps: int, log: MetricLog, timer: dict,
                 best_p1: float):  # fmt: skip
    """One epoch from the saved position; returns the new state."""
    cfg, ds = run.config, run.train_ds
    b = cfg.optim.batch_size
    order = epoch_order(cfg.seed, epoch, len(ds))
    lr = jnp.float32(learning_rate(cfg.optim, epoch))
    warmup = cfg.optim.get("warmup_steps", 0)
    start = int(state.step) - (epoch - 1) * n_steps
    bar = tqdm.tqdm(
        range(start, n_steps),
        desc=f"epoch {epoch} train",
        unit="step",
        disable=not cfg.log.progress_bar or jax.process_index() != 0,
        initial=start,
        total=n_steps,
    )
    first_step = int(state.step)  # host-side step count: no device sync inside the loop
    history, hist_start, t0, seen = [], first_step, time.perf_counter(), 0
    # Every process walks the same global order and feeds its own devices' rows (pipeline.py).
    batches = run.train_pipe.batches(lambda j: order[j * b : (j + 1) * b], start, n_steps)
    for i, batch in zip(bar, batches, strict=True):
        step = first_step + (i - start)  # global step of this batch, before the update
        key = jax.random.fold_in(run.base_key, step)
        if step < warmup:  # linear warm-up: a new lr every step until done
            lr = jnp.float32(learning_rate(cfg.optim, epoch, step))
        elif step == warmup > 0:
            lr = jnp.float32(learning_rate(cfg.optim, epoch))
        t_c = time.perf_counter()
        state, metrics = run.train_step(state, batch, key, lr)
        if not timer.get("compiled"):  # the first step compiles: report it apart
            jax.block_until_ready(metrics["loss"])
            log.scalar("perf/first_step_s", time.perf_counter() - t_c, step + 1)
            timer["compiled"] = True
            t0, seen = time.perf_counter(), 0
        else:
            seen += b
        history.append(metrics["loss"])
        step += 1
        if step % cfg.log.every_steps == 0 or i == n_steps - 1:
            _check_finite(history, hist_start + 1)
            history, hist_start = [], step
            values = {k: float(v) for k, v in jax.device_get(metrics).items()}
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            log.scalars(
                {
                    **{f"train/{k}": v for k, v in values.items()},
                    "train/lr": float(lr),
                    "perf/train_samples_per_s": rate,
                },
                step,
            )
            bar.set_postfix(loss=f"{values['loss']:.4f}", samples_s=f"{rate:.0f}")
        if (
            cfg.checkpoint.every_steps
            and step % cfg.checkpoint.every_steps == 0
            and i != n_steps - 1
        ):
            run.save(state, epoch, best_p1, is_best=False)
    return state


def _resume(run, state):
    """(state, first epoch, best P1, best step, restored step) from the latest checkpoint."""
    restored = run.restore_latest(state)
    if restored is None:
        return state, 1, math.inf, None, 0
    state, meta = restored
    resume.check_resume(run, meta)
    epoch = meta["epoch"] + (1 if meta.get("epoch_done") else 0)
    return state, epoch, meta["best_p1"], meta.get("best_step"), int(meta["step"])


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, explicit=frozenset()
) -> dict:
    """Trains (mode "train") or evaluates (mode "eval") as the configuration says.

    `explicit` names the fields set on the command line (see `run_builder.build_run`).

    Returns:
      The last evaluation summary (P1/P2 and per-group tables; see `inference.py`).
    """
    workdir = Path(workdir).resolve()
    defaults.resolve_paths(config, workdir)  # the demo's `{workdir}/../pretrain`
    run = run_builder.build_run(config, workdir, explicit)
    log = None
    try:
        if config.mode == "eval":
            logging.info("%s", run_builder.describe(run))
            log = MetricLog(workdir, tensorboard=config.log.tensorboard)
            # Named by the step of the evaluated weights (0 when a .pth records none).
            return inference.evaluate_run(run, log, step=run.weights_step or 0)
        n_steps = steps_per_epoch(config, len(run.train_ds))
        logging.info("%s", run_builder.describe(run, n_steps))
        state, epoch0, best_p1, best_step, done = _resume(run, run.initial_state())
        log = MetricLog(workdir, tensorboard=config.log.tensorboard, resume_step=done)
        summary, timer = {}, {}
        if epoch0 > config.optim.num_epochs:
            logging.info("all %d epochs already done in %s", config.optim.num_epochs, workdir)
        for epoch in range(epoch0, config.optim.num_epochs + 1):
            state = _train_epoch(run, state, epoch, n_steps, log, timer, best_p1)
            is_best = False
            every = config.eval.every_epochs  # 0: no evaluation while training
            if every > 0 and (epoch % every == 0 or epoch == config.optim.num_epochs):
                summary = inference.evaluate_run(run, log, step=int(state.step), state=state)
                is_best = summary["p1"] < best_p1
                if is_best:
                    best_p1, best_step = summary["p1"], int(state.step)
            run.save(state, epoch, best_p1, is_best=is_best, epoch_done=True, best_step=best_step)
            logging.info(
                "epoch %d done: %s",
                epoch,
                json.dumps({k: v for k, v in summary.items() if isinstance(v, float)}),
            )
        return summary
    finally:
        run.close()
        if log is not None:
            log.close()
