"""Evaluation passes: run the eval step over a whole test set and report the protocols.

`predict` runs the jitted eval step over every test window in order (the last batch padded
to the compiled shape, padding dropped afterwards) and returns host arrays.
`evaluate_run` turns them into the dataset's protocol (`evaluate.py`): per-action P1 / P2 /
N-MPJPE / MPJVE for Human3.6M, PCK / AUC / MPJPE tables for MPI-INF-3DHP, the 2D
reconstruction error for Stage I. Results go to the log, to `eval_<step>.json` and (3DHP) to
CSV/JSON tables in the workdir.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import tqdm
from absl import logging

from aptpose_jax import evaluate, metrics, sharding

# H36M 3D data is in metres (printed in mm, §1.1); 3DHP is already in millimetres (§1.11).
_TO_MM = {"h36m": 1000.0, "mpi_inf_3dhp": 1.0}


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


def _velocity_error(pred, target, seq, frame) -> np.ndarray:
    """Per-pair velocity error along time (Q21 fixed): consecutive frames of one sequence."""
    same = (seq[1:] == seq[:-1]) & (frame[1:] == frame[:-1] + 1)
    vel_p = pred[1:] - pred[:-1]  # (N-1, J, 3)
    vel_t = target[1:] - target[:-1]
    return np.linalg.norm(vel_p - vel_t, axis=-1).mean(axis=-1)[same]


def summarize(run, pred: dict) -> tuple[dict, str]:
    """Protocol numbers for the predictions of `predict`; returns (summary, text table)."""
    dataset, stage = run.config.data.dataset, run.config.model.stage
    group_names = list(run.test_ds.group_names)
    if stage == "pretrain":  # Stage I: 2D reconstruction error x1000 per group (§3.2)
        err = pred["error"] * 1000.0
        if dataset == "h36m":
            table = evaluate.h36m_action_table(err, None, pred["group"], group_names, unit="x1000")
            return {"p1": table["p1"], "p2": 0.0}, evaluate.format_action_table(table)
        p1 = float(err.mean())
        return {"p1": p1, "p2": 0.0}, f"2D reconstruction error x1000: {p1:.2f}"
    to_mm = _TO_MM[dataset]
    pose, target = pred["pose"] * to_mm, pred["target"] * to_mm
    p2 = metrics.p_mpjpe(pose, target)
    if dataset == "mpi_inf_3dhp":
        seq_names = np.asarray(group_names)[pred["group"]]
        activity = run.test_seqs.frame_info.get("activity")
        if activity is not None:  # labels of the evaluated centre frames
            offsets = np.concatenate([[0], np.cumsum(run.test_seqs.lengths)[:-1]])
            activity = np.concatenate(activity)[offsets[pred["seq"]] + pred["frame"]]
        result = evaluate.mpi3dhp_evaluate(pose, target, seq_names, activity)
        if jax.process_index() == 0:  # one writer
            evaluate.write_mpi3dhp_report(result, run.workdir, prefix="mpi3dhp_metrics")
        o = result["overall"]
        summary = {"p1": o["mpjpe"], "p2": float(p2.mean()), "pck150": o["pck150"], "auc": o["auc"]}
        return summary, evaluate.format_mpi3dhp_report(result)
    table = evaluate.h36m_action_table(
        metrics.mpjpe_per_pose(pose, target),
        p2,
        pred["group"],
        group_names,
        n_mpjpe=metrics.n_mpjpe(pose, target),
    )
    vel = _velocity_error(pose, target, pred["seq"], pred["frame"])
    summary = {
        "p1": table["p1"],
        "p2": table["p2"],
        "n_mpjpe": table["n_mpjpe"],
        "mpjve": float(vel.mean()) if vel.size else math.nan,
    }
    text = evaluate.format_action_table(table)
    if vel.size:
        text += f"\nMPJVE (velocity error along time, mm per frame): {summary['mpjve']:.2f}"
    return summary, text


def evaluate_run(run, log, step: int, state=None) -> dict:
    """Evaluates the run's current (or given) weights, logs and writes the results."""
    params = run.params if state is None else state.params
    batch_stats = run.batch_stats if state is None else state.batch_stats
    pred = predict(run, params, batch_stats)
    summary, text = summarize(run, pred)
    log.scalars({f"eval/{k}": v for k, v in summary.items()}, step)
    logging.info(
        "evaluation at step %d: %s", step, ", ".join(f"{k} {v:.2f}" for k, v in summary.items())
    )
    if jax.process_index() == 0:  # one writer; every process holds the same predictions
        evaluate.write_json(
            {"step": step, **summary, "table": text}, run.workdir / f"eval_{step:08d}.json"
        )
    summary["table"] = text
    return summary
