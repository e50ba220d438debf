"""One small evaluator per protocol, chosen by the configuration.

Each evaluator turns the host predictions of `inference.predict` into (summary dict, text):

* `h36m_actions`: Human3.6M per-action P1 / P2 / N-MPJPE table and MPJVE (§3.4, Q14, Q21);
* `mpi3dhp_pck_auc`: MPI-INF-3DHP PCK / AUC / MPJPE tables, written as CSV/JSON (§1.11);
* `pretrain_reconstruction`: the Stage I 2D reconstruction error x1000 (§3.2), per action on
  Human3.6M;
* `prediction_only`: statistics of predicted poses without ground truth (bone-length
  consistency, jitter), what `infer` reports for a user's video.

`evaluator_for(config)` picks one from the model stage and the dataset; a configuration may
also name it in `eval.protocol` (one of `EVALUATORS`).
"""

from __future__ import annotations

import math

import numpy as np

from aptpose_jax import evaluate, metrics
from aptpose_jax.datasets.skeleton import H36M_BONE_PAIRS

# H36M 3D data is in metres (printed in mm, §1.1); 3DHP is already in millimetres (§1.11).
_TO_MM = {"h36m": 1000.0, "mpi_inf_3dhp": 1.0}


def velocity_error(pred, target, seq, frame) -> np.ndarray:
    """Per-pair velocity error along time (Q21 fixed): consecutive frames of one sequence."""
    same = (seq[1:] == seq[:-1]) & (frame[1:] == frame[:-1] + 1)
    vel_p = pred[1:] - pred[:-1]  # (N-1, J, 3)
    vel_t = target[1:] - target[:-1]
    return np.linalg.norm(vel_p - vel_t, axis=-1).mean(axis=-1)[same]


# Stage I's number: the mean 2D distance between the reconstructed and the input joints,
# in normalised screen units (the frame width spans 2), x1000. There is no 3D pose: P2 and the
# millimetre metrics do not apply. It is stored as "p1" (the best checkpoint is picked by it).
STAGE1_METRIC = "2D reconstruction error (normalised units x1000; Stage I has no 3D metric)"


def pretrain_reconstruction(run, pred: dict) -> tuple[dict, str]:
    """Stage I: 2D reconstruction error x1000, per group on Human3.6M (§3.2)."""
    err = pred["error"] * 1000.0
    if run.config.data.dataset == "h36m":
        names = list(run.test_ds.group_names)
        table = evaluate.h36m_action_table(err, None, pred["group"], names, unit="x1000")
        text = evaluate.format_action_table(table, heads={"p1": "2D error"})
        return {"p1": table["p1"]}, f"{STAGE1_METRIC}\n{text}"
    p1 = float(err.mean())
    return {"p1": p1}, f"{STAGE1_METRIC}: {p1:.2f}"


def describe(config, summary: dict) -> str:
    """The evaluation's numbers for the log line, named as what they are."""
    if config.model.stage == "pretrain":
        return f"{STAGE1_METRIC} {summary['p1']:.2f}"
    return ", ".join(f"{k} {v:.2f}" for k, v in summary.items())


def h36m_actions(run, pred: dict) -> tuple[dict, str]:
    """Human3.6M: per-action P1 / P2 / N-MPJPE and the velocity error MPJVE."""
    pose, target = pred["pose"] * _TO_MM["h36m"], pred["target"] * _TO_MM["h36m"]
    table = evaluate.h36m_action_table(
        metrics.mpjpe_per_pose(pose, target),
        metrics.p_mpjpe(pose, target),
        pred["group"],
        list(run.test_ds.group_names),
        n_mpjpe=metrics.n_mpjpe(pose, target),
    )
    vel = velocity_error(pose, target, pred["seq"], pred["frame"])
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


def mpi3dhp_pck_auc(run, pred: dict) -> tuple[dict, str]:
    """MPI-INF-3DHP: PCK / AUC / MPJPE per sequence and activity; writes the report files."""
    pose, target = pred["pose"], pred["target"]  # already millimetres
    seq_names = np.asarray(list(run.test_ds.group_names))[pred["group"]]
    activity = run.test_seqs.frame_info.get("activity")
    if activity is not None:  # labels of the evaluated centre frames
        offsets = np.concatenate([[0], np.cumsum(run.test_seqs.lengths)[:-1]])
        activity = np.concatenate(activity)[offsets[pred["seq"]] + pred["frame"]]
    result = evaluate.mpi3dhp_evaluate(pose, target, seq_names, activity)
    evaluate.write_mpi3dhp_report(result, run.workdir, prefix="mpi3dhp_metrics")
    o = result["overall"]
    p2 = float(metrics.p_mpjpe(pose, target).mean())
    summary = {"p1": o["mpjpe"], "p2": p2, "pck150": o["pck150"], "auc": o["auc"]}
    return summary, evaluate.format_mpi3dhp_report(result)


def prediction_only(poses: np.ndarray, to_mm: float = 1000.0) -> tuple[dict, str]:
    """Predicted (T, 17, 3) poses without ground truth: plausibility statistics.

    Returns `bone_mm` (mean bone length), `bone_cv` (mean over bones of std / mean along
    time: 0 for a rigid skeleton) and `jitter_mm` (mean joint acceleration, mm / frame^2).
    """
    p = np.asarray(poses, np.float64) * to_mm
    bones = np.stack([np.linalg.norm(p[:, c] - p[:, a], axis=-1) for a, c in H36M_BONE_PAIRS], 1)
    accel = p[2:] - 2 * p[1:-1] + p[:-2] if len(p) > 2 else np.zeros((1, *p.shape[1:]))
    summary = {
        "frames": len(p),
        "bone_mm": float(bones.mean()),
        "bone_cv": float((bones.std(0) / np.maximum(bones.mean(0), 1e-9)).mean()),
        "jitter_mm": float(np.linalg.norm(accel, axis=-1).mean()),
    }
    text = ", ".join(f"{k} {v:.3g}" for k, v in summary.items())
    return summary, text


EVALUATORS = {
    "h36m_actions": h36m_actions,
    "mpi3dhp_pck_auc": mpi3dhp_pck_auc,
    "pretrain_reconstruction": pretrain_reconstruction,
}


def evaluator_for(config):
    """The evaluator of a run configuration: `eval.protocol` if set, else stage + dataset."""
    name = config.eval.get("protocol", "auto") if hasattr(config.eval, "get") else "auto"
    if name in (None, "", "auto"):
        if config.model.stage == "pretrain":
            name = "pretrain_reconstruction"
        elif config.data.dataset == "mpi_inf_3dhp":
            name = "mpi3dhp_pck_auc"
        else:
            name = "h36m_actions"
    if name not in EVALUATORS:
        raise ValueError(f"eval.protocol must be one of {sorted(EVALUATORS)} or auto, got {name!r}")
    return EVALUATORS[name]
