"""Per-protocol evaluators: selection from the configuration, and the prediction-only one."""

from __future__ import annotations

import numpy as np
import pytest

from aptpose_jax import evaluators
from aptpose_jax.defaults import base_config


@pytest.mark.parametrize(
    "stage, dataset, expected",
    [
        ("pretrain", "h36m", evaluators.pretrain_reconstruction),
        ("pretrain", "mpi_inf_3dhp", evaluators.pretrain_reconstruction),
        ("lifter", "h36m", evaluators.h36m_actions),
        ("lifter_nomask", "mpi_inf_3dhp", evaluators.mpi3dhp_pck_auc),
    ],
)
def test_evaluator_is_chosen_by_the_config(stage, dataset, expected):
    c = base_config()
    c.model.stage, c.data.dataset = stage, dataset
    assert evaluators.evaluator_for(c) is expected


def test_prediction_only_statistics():
    rng = np.random.default_rng(0)
    pose = rng.normal(0, 0.3, (17, 3))
    rigid = np.tile(pose[None], (10, 1, 1))
    s, text = evaluators.prediction_only(rigid)
    assert s["frames"] == 10 and s["bone_cv"] < 1e-9 and s["jitter_mm"] < 1e-9
    assert s["bone_mm"] > 0 and "bone_mm" in text
    noisy = rigid + rng.normal(0, 0.01, rigid.shape)
    t, _ = evaluators.prediction_only(noisy)
    assert t["bone_cv"] > 0.005 and t["jitter_mm"] > 10  # 10 mm noise -> ~ 40 mm acceleration


def test_velocity_error_only_pairs_consecutive_frames():
    pred = np.zeros((4, 2, 3))
    target = np.zeros((4, 2, 3))
    target[1, :, 0] = 1.0  # error of 1 on the steps 0->1 and 1->2
    seq, frame = np.array([0, 0, 0, 1]), np.array([0, 1, 2, 0])
    np.testing.assert_allclose(evaluators.velocity_error(pred, target, seq, frame), [1.0, 1.0])


def test_stage1_table_and_log_say_what_they_measure():
    import types

    c = base_config()
    c.model.stage = "pretrain"
    run = types.SimpleNamespace(
        config=c, test_ds=types.SimpleNamespace(group_names=["Walking 1", "Eating"])
    )
    pred = {"error": np.array([0.010, 0.020, 0.030]), "group": np.array([0, 0, 1])}
    summary, text = evaluators.pretrain_reconstruction(run, pred)
    assert set(summary) == {"p1"}  # no P2: Stage I has no 3D pose
    assert summary["p1"] == pytest.approx(22.5)  # class means 15 and 30, x1000
    assert "2D reconstruction error (normalised units x1000" in text.splitlines()[0]
    assert "2D error (x1000)" in text and "P1" not in text and "P2" not in text
    line = evaluators.describe(c, summary)
    assert line.startswith("2D reconstruction error") and "p2" not in line
