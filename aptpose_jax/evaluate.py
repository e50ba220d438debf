"""Evaluation protocols as pure aggregation of per-sample errors (no model code).

* Human3.6M (§3.4): per-action-class means of per-sample errors and the unweighted mean over
  the classes; a text table for logs and a dict for JSON.
* MPI-INF-3DHP (§1.11): PCK@150 mm, AUC and MPJPE per test sequence, per activity, per scene
  and overall, following the official MATLAB scripts; CSV/JSON writers and an optional
  `inference_data.mat` export for those scripts.

All files are written atomically (`atomic_files.py`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence

import numpy as np

from aptpose_jax import atomic_files, metrics
from aptpose_jax.datasets.skeleton import H36M_ACTIONS, MPI3DHP_ROOT

# Display names of the known H36M columns, in display order.
H36M_COLUMNS: dict[str, str] = {"p1": "P1", "p2": "P2", "n_mpjpe": "N-MPJPE", "mpjve": "MPJVE"}

MPI3DHP_SEQUENCES: tuple[str, ...] = ("TS1", "TS2", "TS3", "TS4", "TS5", "TS6")
# Scene groups of the 3DHP test set (Mehta et al., 3DV 2017): green-screen studio, studio
# without green screen, outdoor. Not computed by the official MATLAB scripts; an extra view.
MPI3DHP_SCENES: dict[str, tuple[str, ...]] = {
    "GS": ("TS1", "TS2"),
    "noGS": ("TS3", "TS4"),
    "Outdoor": ("TS5", "TS6"),
}
# Official activity labels 1..7 (`mpii_get_activity_name.m`).
MPI3DHP_ACTIVITIES: tuple[str, ...] = (
    "Standing/Walking", "Exercising", "Sitting", "Reaching/Crouching", "On The Floor", "Sports",
    "Miscellaneous",
)  # fmt: skip
# Official PCK/AUC joint groups (`mpii_get_pck_auc_joint_groups.m`, 0-based, 3DHP order).
MPI3DHP_JOINT_GROUPS: dict[str, tuple[int, ...]] = {
    "Head": (0,), "Neck": (1,), "Shoulder": (2, 5), "Elbow": (3, 6), "Wrist": (4, 7),
    "Hip": (8, 11), "Knee": (9, 12), "Ankle": (10, 13),
}  # fmt: skip
MPI3DHP_CSV_COLUMNS: tuple[str, ...] = ("group", "name", "frames", "pck150", "auc", "mpjpe")


# --- Human3.6M ------------------------------------------------------------------------------


def action_class(name: str) -> str:
    """Evaluation class of an H36M action name: the text before the first space (§1.6)."""
    return name.split(" ")[0]


def _class_order(classes: set[str]) -> list[str]:
    known = [a for a in H36M_ACTIONS if a in classes]
    return known + sorted(classes - set(H36M_ACTIONS))


def _check_groups(groups, n_names: int) -> np.ndarray:
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.size == 0:
        raise ValueError(f"h36m_action_table: groups must be 1-D and non-empty, got {groups.shape}")
    if groups.min() < 0 or groups.max() >= n_names:
        raise ValueError(
            f"h36m_action_table: group ids must index group_names (0..{n_names - 1}),"
            f" got range [{groups.min()}, {groups.max()}]"
        )
    return groups


def h36m_action_table(
    p1: np.ndarray,
    p2: np.ndarray | None,
    groups: np.ndarray,
    group_names: Sequence[str],
    *,
    n_mpjpe: np.ndarray | None = None,
    mpjve: np.ndarray | None = None,
    unit: str = "mm",
) -> dict:
    """Per-action H36M table (§3.4): class means, then the unweighted mean over classes.

    Each class value is the mean of the per-sample errors of that class (every sample has the
    same weight, as in the reference for P1). "average" is the unweighted mean over the
    classes present (the reference averages over all 15 classes, counting an empty class as
    0; identical whenever all 15 are present). "pooled" (an extra) is the mean over samples.

    Differences from the reference: P2 is the exact per-sample P-MPJPE averaged per class; the
    reference gives every sample of a batch spanning two classes the batch mean (Q14 fixed).

    Args:
      p1: (N,) per-sample MPJPE, already in `unit` (millimetres: multiply H36M metres by 1000).
      p2: (N,) per-sample P-MPJPE in `unit`, or None (e.g. Stage I) to leave the column out.
      groups: (N,) int index of each sample into `group_names`.
      group_names: action names ("Walking 1", "Walking", ...); mapped to their class.
      n_mpjpe: optional (N,) per-sample N-MPJPE column.
      mpjve: optional (N,) per-sample velocity-error column.
      unit: unit label stored in the result and shown in the text header.

    Returns:
      {"unit", "metrics": [column names], "samples": N,
       "per_action": {class: {"count", column: value}}, "average": {column: value},
       "pooled": {column: value}} plus every column's "average" value at the top level
      (`result["p1"]` is the reported P1).
    """
    groups = _check_groups(groups, len(group_names))
    given = {"p1": p1, "p2": p2, "n_mpjpe": n_mpjpe, "mpjve": mpjve}
    values = {
        n: np.asarray(v, dtype=np.float64).reshape(-1) for n, v in given.items() if v is not None
    }
    names = list(values)
    for n, v in values.items():
        if v.shape != groups.shape:
            raise ValueError(
                f"h36m_action_table: {n} has {v.size} values, groups has {groups.size}"
            )
    sample_class = np.array([action_class(group_names[g]) for g in groups], dtype=object)
    per_action = {}
    for cls in _class_order(set(sample_class.tolist())):
        sel = sample_class == cls
        per_action[cls] = {
            "count": int(sel.sum()),
            **{n: float(values[n][sel].mean()) for n in names},
        }
    average = {n: float(np.mean([row[n] for row in per_action.values()])) for n in names}
    pooled = {n: float(values[n].mean()) for n in names}
    return {
        "unit": unit,
        "metrics": names,
        "per_action": per_action,
        "average": average,
        "pooled": pooled,
        "samples": int(groups.size),
        **average,
    }


def _align(rows: list[list[str]], n_left: int) -> str:
    """Text table: the first `n_left` columns left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i < n_left else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    )


def format_action_table(table: Mapping, heads: Mapping[str, str] | None = None) -> str:
    """Renders an `h36m_action_table` result as aligned text: one row per action + Average.

    `heads` renames columns (Stage I's "p1" is a 2D error, not an MPJPE).
    """
    names = list(table["metrics"])
    heads = [{**H36M_COLUMNS, **(heads or {})}.get(n, n) for n in names]
    rows = [
        [cls, str(row["count"])] + [f"{row[n]:.2f}" for n in names]
        for cls, row in table["per_action"].items()
    ]
    rows.append(["Average", str(table["samples"])] + [f"{table['average'][n]:.2f}" for n in names])
    header = ["Action", "N"] + [f"{h} ({table['unit']})" for h in heads]
    return _align([header, *rows], n_left=1)


# --- MPI-INF-3DHP ---------------------------------------------------------------------------


def _summary(errors: np.ndarray) -> dict:
    """PCK@150, AUC (over joints 0..13) and MPJPE (over all 17 joints) of (N, 17) errors."""
    return {
        "frames": int(errors.shape[0]),
        "pck150": float(metrics.pck(errors, 150.0)),
        "auc": float(metrics.auc(errors)),
        "mpjpe": float(errors.mean()),
    }


def _check_3dhp(pred_mm, gt_mm, seq_names):
    """Validated float64 copies of pred/gt (N, 17, 3) and the (N,) sequence names."""
    pred, gt = np.array(pred_mm, np.float64), np.array(gt_mm, np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[1:] != (17, 3) or not len(pred):
        raise ValueError(
            f"mpi3dhp_evaluate: expected pred and gt of shape (N, 17, 3) with N >= 1, got "
            f"{pred.shape} and {gt.shape}"
        )
    seqs = np.asarray(seq_names, dtype=object).reshape(-1)
    if seqs.shape != (pred.shape[0],):
        raise ValueError(f"mpi3dhp_evaluate: {seqs.size} sequence names for {pred.shape[0]} frames")
    return pred, gt, seqs


def _group_summaries(err: np.ndarray, labels: np.ndarray, preferred: Sequence[str]) -> dict:
    """Summary per label; labels in `preferred` order first, then any others sorted."""
    present = set(labels.tolist())
    order = [x for x in preferred if x in present] + sorted(present - set(preferred))
    return {x: _summary(err[labels == x]) for x in order}


def _activity_names(activities, n: int) -> np.ndarray:
    act = np.asarray(activities).reshape(-1)
    if act.shape != (n,):
        raise ValueError(f"mpi3dhp_evaluate: {act.size} activity labels for {n} frames")
    if act.dtype.kind in "iuf":
        ids = act.astype(int)
        if ids.min() < 1 or ids.max() > len(MPI3DHP_ACTIVITIES):
            raise ValueError(
                "mpi3dhp_evaluate: numeric activity labels must be the official 1..7, got range"
                f" [{ids.min()}, {ids.max()}]"
            )
        return np.array(MPI3DHP_ACTIVITIES, dtype=object)[ids - 1]
    return act.astype(object)


def mpi3dhp_evaluate(
    pred_mm: np.ndarray,
    gt_mm: np.ndarray,
    seq_names: Sequence[str],
    activities=None,
    *,
    root: int | None = MPI3DHP_ROOT,
) -> dict:
    """MPI-INF-3DHP protocol on valid test frames (§1.11, official MATLAB definitions).

    Per frame: joint errors = Euclidean distance in mm. PCK@150 = percent of (frame, joint)
    errors < 150 mm over joints 0..13; AUC = mean PCK over thresholds 0, 5, ..., 150 mm;
    MPJPE = mean over the 17 joints (the zeroed root contributes 0) and frames.

    Args:
      pred_mm: (N, 17, 3) predictions in mm, 3DHP joint order.
      gt_mm: (N, 17, 3) ground truth in mm.
      seq_names: (N,) sequence name per frame ("TS1".."TS6").
      activities: optional (N,) official activity ids 1..7 or names.
      root: joint set to 0 in both arrays (the reference zeroes, not subtracts: the other
        joints must already be root-relative); None leaves the arrays unchanged.

    Returns:
      {"unit": "mm", "per_sequence": {seq: summary}, "per_scene": {...},
       "per_activity": {...} (only with activities), "overall": summary (pooled over frames =
       frame-weighted sequence mean, the README "final" numbers) with "joint_groups",
       "sequence_mean": unweighted mean over sequences}; summary = {"frames", "pck150",
       "auc", "mpjpe"}.
    """
    pred, gt, seqs = _check_3dhp(pred_mm, gt_mm, seq_names)
    if root is not None:
        pred[:, root], gt[:, root] = 0.0, 0.0
    err = metrics.joint_errors(pred, gt)  # (N, 17)
    present = set(seqs.tolist())
    per_seq = _group_summaries(err, seqs, MPI3DHP_SEQUENCES)
    per_scene = {
        name: _summary(err[np.isin(seqs, members)])
        for name, members in MPI3DHP_SCENES.items()
        if present & set(members)
    }
    overall = _summary(err)
    overall["joint_groups"] = {
        g: {"pck150": float(metrics.pck(err, 150.0, j)), "auc": float(metrics.auc(err, joints=j))}
        for g, j in MPI3DHP_JOINT_GROUPS.items()
    }
    result = {"unit": "mm", "per_sequence": per_seq, "per_scene": per_scene}
    if activities is not None:
        act = _activity_names(activities, pred.shape[0])
        result["per_activity"] = _group_summaries(err, act, MPI3DHP_ACTIVITIES)
    result["overall"] = overall
    result["sequence_mean"] = {
        "sequences": len(per_seq),
        **{k: float(np.mean([v[k] for v in per_seq.values()])) for k in ("pck150", "auc", "mpjpe")},
    }
    return result


def mpi3dhp_rows(result: Mapping) -> list[dict]:
    """Flattens an `mpi3dhp_evaluate` result into CSV rows (`MPI3DHP_CSV_COLUMNS`)."""
    rows = []
    for group, key in (
        ("sequence", "per_sequence"),
        ("scene", "per_scene"),
        ("activity", "per_activity"),
    ):
        for name, s in result.get(key, {}).items():
            rows.append(
                {"group": group, "name": name, **{c: s[c] for c in MPI3DHP_CSV_COLUMNS[2:]}}
            )
    o, m = result["overall"], result["sequence_mean"]
    rows.append(
        {"group": "overall", "name": "pooled", **{c: o[c] for c in MPI3DHP_CSV_COLUMNS[2:]}}
    )
    rows.append(
        {
            "group": "overall",
            "name": "sequence_mean",
            "frames": o["frames"],
            **{c: m[c] for c in ("pck150", "auc", "mpjpe")},
        }
    )
    return rows


def format_mpi3dhp_report(result: Mapping) -> str:
    """Renders an `mpi3dhp_evaluate` result as aligned text (one row per CSV row)."""
    rows = mpi3dhp_rows(result)
    header = ["group", "name", "frames", "PCK@150", "AUC", "MPJPE (mm)"]
    cells = [
        [r["group"], r["name"], str(r["frames"])]
        + [f"{r[c]:.2f}" for c in ("pck150", "auc", "mpjpe")]
        for r in rows
    ]
    return _align([header, *cells], n_left=2)


# --- writers ----------------------------------------------------------------------------------


def write_mpi3dhp_csv(result: Mapping, path: str | os.PathLike) -> None:
    """Writes an `mpi3dhp_evaluate` result as CSV: group,name,frames,pck150,auc,mpjpe."""
    atomic_files.write_csv(mpi3dhp_rows(result), MPI3DHP_CSV_COLUMNS, path)


def write_mpi3dhp_report(
    result: Mapping, out_dir: str | os.PathLike, prefix: str = "mpi3dhp"
) -> tuple[str, str]:
    """Writes `<out_dir>/<prefix>.csv` and `<out_dir>/<prefix>.json`; returns both paths."""
    csv_path = os.path.join(os.fspath(out_dir), f"{prefix}.csv")
    json_path = os.path.join(os.fspath(out_dir), f"{prefix}.json")
    write_mpi3dhp_csv(result, csv_path)
    atomic_files.write_json(result, json_path)
    return csv_path, json_path


def write_inference_mat(
    pred_mm: np.ndarray, seq_names: Sequence[str], path: str | os.PathLike, *, root: int = 14
) -> None:
    """Exports predictions as the reference's `inference_data.mat` for the MATLAB scripts.

    One variable per sequence (TS1..TS6), float32 (3, 17, 1, N_valid), root-relative mm with
    the root row zero, frames in the given (valid-frame) order (§1.11). Needs scipy, which is
    not a runtime requirement of this package.
    """
    try:
        from scipy.io import savemat
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("write_inference_mat needs scipy: pip install scipy") from e
    pred = np.asarray(pred_mm, np.float32).copy()
    pred[:, root] = 0.0
    seqs = np.asarray(seq_names, dtype=object).reshape(-1)
    out = {}
    for s in dict.fromkeys(seqs.tolist()):
        p = pred[seqs == s]  # (N, 17, 3)
        out[s] = np.transpose(p, (2, 1, 0))[:, :, None, :]  # (3, 17, 1, N)
    buf = io.BytesIO()
    savemat(buf, out)
    atomic_files.write_bytes(path, buf.getvalue())
