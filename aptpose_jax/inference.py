"""Evaluation passes: run the eval step over a whole test set and report the protocols.

`predict` runs the jitted eval step over every test window in order (the last batch padded
to the compiled shape, padding dropped afterwards) and returns host arrays.
`evaluate_run` turns them into the protocol's numbers with the evaluator the configuration
chooses (`evaluators.py`): per-action P1 / P2 / N-MPJPE / MPJVE for Human3.6M, PCK / AUC /
MPJPE tables for MPI-INF-3DHP, the 2D reconstruction error for Stage I. Results go to the
log, to `eval_<step>.json` and (3DHP) to CSV/JSON tables in the workdir.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import tqdm
from absl import logging

from aptpose_jax import atomic_files, evaluators, sharding


def predict(run, params, batch_stats) -> dict[str, np.ndarray]:
    """Runs the eval step over the test windows in order.

    The batches come from `run.test_pipe` (device-gathered windows by default); the last
    batch is padded to the compiled shape by repeating its last window, and the padding is
    dropped afterwards. Predictions come back replicated, i.e. gathered over every process.

    Returns:
      Host arrays over the N evaluated windows: Stage I "error" (N,) mean 2D reconstruction
      error; Stage II "pose" and "target" (N, J, 3) root-zeroed; plus "group" (N,) and
      "seq" / "frame" (N,) window positions.
    """
    cfg, ds = run.config, run.test_ds
    b = cfg.eval.batch_size
    sharding.check_batch_size(b, run.mesh, "eval.batch_size")
    n = len(ds)
    n_batches = math.ceil(n / b)
    if cfg.eval.max_batches > 0:
        n_batches = min(n_batches, cfg.eval.max_batches)
    eval_key = jax.random.fold_in(run.base_key, 2**31 - 1)  # a stream apart from training

    def padded(i):  # static batch shape: the last batch repeats its last window
        idx = np.arange(i * b, min((i + 1) * b, n))
        return np.concatenate([idx, np.full(b - idx.size, idx[-1])])

    bar = tqdm.tqdm(
        range(n_batches),
        desc="evaluate",
        unit="batch",
        disable=not cfg.log.progress_bar or jax.process_index() != 0,
    )
    outputs = []
    batches = run.test_pipe.batches(padded, 0, n_batches)
    for i, batch in zip(bar, batches, strict=True):
        outputs.append(run.eval_step(params, batch_stats, batch, jax.random.fold_in(eval_key, i)))
    fetched = jax.device_get(outputs)
    m = min(n, n_batches * b)  # windows evaluated
    result = {k: np.concatenate([o[k] for o in fetched])[:m] for k in fetched[0]}
    seq = ds.pair_seq[:m]
    result["group"] = ds.seq_group[seq]
    result["seq"] = seq
    result["frame"] = ds.pair_start[:m]
    return result


def summarize(run, pred: dict) -> tuple[dict, str]:
    """Protocol numbers for the predictions of `predict`: the configuration's evaluator."""
    return evaluators.evaluator_for(run.config)(run, pred)


def evaluate_run(run, log, step: int, state=None) -> dict:
    """Evaluates the run's current (or given) weights, logs and writes the results."""
    params = run.params if state is None else state.params
    batch_stats = run.batch_stats if state is None else state.batch_stats
    pred = predict(run, params, batch_stats)
    summary, text = summarize(run, pred)
    log.scalars({f"eval/{k}": v for k, v in summary.items()}, step)
    logging.info("evaluation at step %d: %s", step, evaluators.describe(run.config, summary))
    if jax.process_index() == 0:  # one writer; every process holds the same predictions
        atomic_files.write_json(
            {"step": step, **summary, "table": text}, run.workdir / f"eval_{step:08d}.json"
        )
    summary["table"] = text
    return summary
