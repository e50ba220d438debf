"""Tests for aptpose_jax.evaluate: H36M per-action averaging, 3DHP grouping and writers."""

import csv
import json

import numpy as np
import pytest

from aptpose_jax import evaluate

# --- Human3.6M ----------------------------------------------------------------------------------

NAMES = ["Walking 1", "Walking", "Eating 2", "Directions"]
GROUPS = np.array([0, 1, 1, 2, 3, 3, 3])
P1 = np.array([10.0, 20.0, 30.0, 50.0, 100.0, 100.0, 400.0])  # mm
P2 = P1 / 2


def test_h36m_per_action_and_unweighted_average():
    table = evaluate.h36m_action_table(P1, P2, GROUPS, NAMES)
    assert table["metrics"] == ["p1", "p2"]
    assert list(table["per_action"]) == ["Directions", "Eating", "Walking"]  # define_actions
    rows = table["per_action"]
    assert rows["Walking"]["count"] == 3 and rows["Directions"]["count"] == 3
    assert rows["Walking"]["p1"] == pytest.approx(20.0)
    assert rows["Eating"]["p1"] == pytest.approx(50.0)
    assert rows["Directions"]["p1"] == pytest.approx(200.0)
    assert table["average"]["p1"] == pytest.approx((20 + 50 + 200) / 3)  # per-class mean
    assert table["pooled"]["p1"] == pytest.approx(710 / 7)  # sample mean differs
    assert table["average"]["p2"] == pytest.approx(45.0)
    assert table["p1"] == table["average"]["p1"] and table["p2"] == pytest.approx(45.0)
    text = evaluate.format_action_table(table)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["Action", "N"] and "P2" in lines[0]
    assert [ln.split()[0] for ln in lines[1:]] == ["Directions", "Eating", "Walking", "Average"]
    assert lines[-1].split()[2] == "90.00"


def test_h36m_extra_columns_and_errors():
    table = evaluate.h36m_action_table(
        P1 / 1000, None, GROUPS, NAMES, mpjve=P1 * 0, n_mpjpe=P1 / 1000, unit="m"
    )
    assert table["metrics"] == ["p1", "n_mpjpe", "mpjve"]  # p2 left out, display order
    assert table["average"]["n_mpjpe"] == pytest.approx(0.09)
    assert "N-MPJPE (m)" in evaluate.format_action_table(table)
    with pytest.raises(ValueError, match="groups has 7"):
        evaluate.h36m_action_table(P1[:3], None, GROUPS, NAMES)
    with pytest.raises(ValueError, match="index group_names"):
        evaluate.h36m_action_table(P1, P2, GROUPS + 1, NAMES)


# --- MPI-INF-3DHP -------------------------------------------------------------------------------


@pytest.fixture()
def hp3d():
    rng = np.random.default_rng(0)
    seqs = np.array(["TS3", "TS1", "TS1", "TS3", "TS1", "TS1"])
    gt = rng.normal(size=(6, 17, 3)) * 300
    gt[:, 14] = [0.0, 0.0, 5000.0]  # absolute root, zeroed by the protocol
    offset = np.where(seqs == "TS1", 102.0, 200.0)[:, None, None] * np.array([0.0, 0.6, 0.8])
    pred = gt + offset  # every joint off by 102 mm (TS1) or 200 mm (TS3)
    pred[:, 14] = 123.0
    activities = np.array([1, 1, 2, 2, 7, 7])
    return pred, gt, seqs, activities


def test_mpi3dhp_groups_by_hand(hp3d):
    pred, gt, seqs, act = hp3d
    res = evaluate.mpi3dhp_evaluate(pred, gt, seqs, act)
    ts1, ts3 = res["per_sequence"]["TS1"], res["per_sequence"]["TS3"]
    assert list(res["per_sequence"]) == ["TS1", "TS3"]
    assert ts1["frames"] == 4 and ts3["frames"] == 2
    assert ts1["pck150"] == pytest.approx(100.0) and ts3["pck150"] == pytest.approx(0.0)
    assert ts1["auc"] == pytest.approx(1000 / 31) and ts3["auc"] == pytest.approx(0.0)
    assert ts1["mpjpe"] == pytest.approx(102 * 16 / 17)  # the zeroed root counts as 0
    assert ts3["mpjpe"] == pytest.approx(200 * 16 / 17)
    assert res["overall"]["pck150"] == pytest.approx(400 / 6)  # pooled = frame-weighted
    assert res["overall"]["mpjpe"] == pytest.approx((4 * 102 + 2 * 200) / 6 * 16 / 17)
    assert res["sequence_mean"]["pck150"] == pytest.approx(50.0)
    assert res["sequence_mean"]["mpjpe"] == pytest.approx(151 * 16 / 17)
    assert set(res["per_scene"]) == {"GS", "noGS"}
    assert res["per_scene"]["GS"]["mpjpe"] == pytest.approx(ts1["mpjpe"])
    acts = res["per_activity"]
    assert list(acts) == ["Standing/Walking", "Exercising", "Miscellaneous"]
    assert acts["Exercising"]["pck150"] == pytest.approx(50.0)  # one TS1 + one TS3 frame
    assert res["overall"]["joint_groups"]["Head"]["pck150"] == pytest.approx(400 / 6)


def test_mpi3dhp_writers(hp3d, tmp_path):
    pred, gt, seqs, act = hp3d
    res = evaluate.mpi3dhp_evaluate(pred, gt, seqs, act)
    paths = evaluate.write_mpi3dhp_report(res, tmp_path / "out", prefix="3dhp")
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["3dhp.csv", "3dhp.json"]
    with open(tmp_path / "out" / "3dhp.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(evaluate.MPI3DHP_CSV_COLUMNS)
    by_name = {(r["group"], r["name"]): r for r in rows}
    assert float(by_name[("sequence", "TS3")]["mpjpe"]) == pytest.approx(200 * 16 / 17, abs=1e-4)
    assert float(by_name[("overall", "sequence_mean")]["pck150"]) == pytest.approx(50.0)
    assert ("activity", "Sitting") not in by_name
    assert json.loads((tmp_path / "out" / "3dhp.json").read_text()) == json.loads(json.dumps(res))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["3dhp.csv", "3dhp.json"]
    text = evaluate.format_mpi3dhp_report(res).splitlines()
    assert len(text) == len(rows) + 1 and text[-1].split()[:2] == ["overall", "sequence_mean"]
    assert text[-1].split()[3] == "50.00"


def test_mpi3dhp_bad_inputs(hp3d):
    pred, gt, seqs, _ = hp3d
    with pytest.raises(ValueError, match=r"\(N, 17, 3\)"):
        evaluate.mpi3dhp_evaluate(pred[:, :16], gt[:, :16], seqs)
    with pytest.raises(ValueError, match="sequence names"):
        evaluate.mpi3dhp_evaluate(pred, gt, seqs[:3])
    with pytest.raises(ValueError, match="1..7"):
        evaluate.mpi3dhp_evaluate(pred, gt, seqs, np.zeros(6, int))


def test_write_inference_mat_layout(hp3d, tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    pred, _, seqs, _ = hp3d
    evaluate.write_inference_mat(pred, seqs, tmp_path / "inference_data.mat")
    mat = scipy_io.loadmat(tmp_path / "inference_data.mat")
    assert mat["TS1"].shape == (3, 17, 1, 4) and mat["TS1"].dtype == np.float32
    np.testing.assert_array_equal(mat["TS3"][:, 14], 0.0)
    np.testing.assert_allclose(mat["TS3"][:, 2, 0, 1], pred[3, 2], rtol=1e-6)
