"""Losses against the official fixtures; flip TTA parity; metrics on hand-made numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aptpose_jax import losses, metrics
from aptpose_jax.datasets.skeleton import H36M_JOINTS_LEFT, H36M_JOINTS_RIGHT
from aptpose_jax.flip import flip_pose, tta_average

TOL = {"rtol": 1e-5, "atol": 1e-6}
# One compiled P-MPJPE for the (5, 17, 3) test poses: much faster than eager dispatch on CPU.
_p_mpjpe_jit = jax.jit(metrics.p_mpjpe)


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    with np.load(fixtures_dir / "reference_outputs_f27.npz") as z:
        return {k: z[k] for k in z.files}


def _jl(a):
    """(B, D, F, J, 1) reference layout -> (B, F, J, D) joints-last."""
    return np.transpose(a[..., 0], (0, 2, 3, 1))


def _rotation(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


# --- fixture parity -----------------------------------------------------------------------------


def test_pretrain_target_and_loss(ref):
    temporal = jnp.asarray(ref["mask_temporal"] > 0.5)
    x = jnp.asarray(ref["input_2d_bfjc"])
    np.testing.assert_allclose(_jl(ref["input_2d"]), ref["input_2d_bfjc"])
    target = losses.pretrain_target(x, temporal)
    np.testing.assert_allclose(np.asarray(target), ref["stage1_target_2d_bfjc"], **TOL)
    loss = losses.pretrain_loss(jnp.asarray(_jl(ref["stage1_output_2d"])), x, temporal)
    np.testing.assert_allclose(float(loss), ref["stage1_loss"], **TOL)


def test_lifter_loss_terms(ref):
    gt = jnp.asarray(ref["stage2_gt_3d"])
    np.testing.assert_allclose(
        np.asarray(losses.zero_root(gt, 0)), ref["stage2_target_3d_rootzero"], **TOL
    )
    np.testing.assert_allclose(
        np.asarray(losses.bone_vectors(gt)), ref["stage2_target_bones"], **TOL
    )
    outputs = {
        "pose": jnp.asarray(_jl(ref["stage2_out_3d"])),
        "pose_seq": jnp.asarray(_jl(ref["stage2_out_3d_vte"])),
        "bones": jnp.asarray(_jl(ref["stage2_out_bone"])),
        "bones_seq": jnp.asarray(_jl(ref["stage2_out_bone_vte"])),
    }
    loss, terms = losses.lifter_loss(outputs, gt)
    got = [float(terms[k]) for k in ("pose_seq", "pose", "bones_seq", "bones")]
    np.testing.assert_allclose(got, ref["stage2_loss_terms"], **TOL)
    np.testing.assert_allclose(float(loss), ref["stage2_loss"], **TOL)
    assert "velocity" not in terms
    loss_v, terms_v = losses.lifter_loss(outputs, gt, velocity_weight=2.0)
    np.testing.assert_allclose(float(loss_v), float(loss) + 2.0 * float(terms_v["velocity"]))


@pytest.mark.parametrize(
    "out, flipped, tta",
    [
        ("stage1_output_2d", "stage1_output_2d_on_flip", "stage1_output_2d_tta"),
        ("stage2_out_3d", "stage2_out_3d_on_flip", "stage2_out_3d_tta"),
        ("stage2_out_3d_vte", "stage2_out_3d_vte_on_flip", "stage2_out_3d_vte_tta"),
    ],
)
def test_tta_matches_reference(ref, out, flipped, tta):
    got = tta_average(
        jnp.asarray(_jl(ref[out])),
        jnp.asarray(_jl(ref[flipped])),
        H36M_JOINTS_LEFT,
        H36M_JOINTS_RIGHT,
    )
    np.testing.assert_allclose(np.asarray(got), _jl(ref[tta]), **TOL)


def test_flip_pose_input_and_involution(ref):
    x = ref["input_2d_bfjc"]
    flipped = flip_pose(x, H36M_JOINTS_LEFT, H36M_JOINTS_RIGHT)
    assert isinstance(flipped, np.ndarray) and flipped.dtype == x.dtype
    np.testing.assert_allclose(flipped, _jl(ref["input_2d_flip"]), **TOL)
    np.testing.assert_array_equal(flip_pose(flipped, H36M_JOINTS_LEFT, H36M_JOINTS_RIGHT), x)


# --- metrics on hand-made numbers -------------------------------------------------------------


@pytest.fixture(scope="module")
def poses():
    return np.random.default_rng(0).normal(size=(5, 17, 3)) * 0.3


def test_mpjpe_constant_offset(poses):
    off = np.array([3.0, 4.0, 0.0])  # |off| = 5
    np.testing.assert_allclose(metrics.mpjpe(poses + off, poses), 5.0)
    np.testing.assert_allclose(metrics.mpjpe_per_pose(poses + off, poses), np.full(5, 5.0))
    np.testing.assert_allclose(metrics.joint_errors(poses + off, poses), np.full((5, 17), 5.0))
    np.testing.assert_allclose(float(metrics.mpjpe(jnp.asarray(poses + off), poses)), 5.0)


def test_p_mpjpe_similarity_is_zero_and_reflection_is_not(poses):
    r = _rotation([1.0, 2.0, 0.5], 0.7)
    moved = 2.5 * poses @ r + np.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(metrics.p_mpjpe(moved, poses), 0.0, atol=1e-9)
    np.testing.assert_allclose(
        np.asarray(_p_mpjpe_jit(jnp.asarray(moved), jnp.asarray(poses))), 0.0, atol=1e-4
    )
    assert metrics.mpjpe(moved, poses) > 0.1
    mirrored = poses * np.array([-1.0, 1.0, 1.0])  # a reflection cannot be undone by R
    err = metrics.p_mpjpe(mirrored, poses)
    assert err.shape == (5,) and np.all(err > 1e-3)
    assert np.all(err <= metrics.mpjpe_per_pose(mirrored, poses) + 1e-12)


def test_p_mpjpe_is_per_pose(poses):
    pred = poses.copy()
    pred[2] += np.random.default_rng(1).normal(size=(17, 3)) * 0.1
    err = metrics.p_mpjpe(pred, poses)
    np.testing.assert_allclose(np.delete(err, 2), 0.0, atol=1e-9)
    assert err[2] > 1e-3


def test_p_mpjpe_numpy_and_jax_agree():
    rng = np.random.default_rng(2)
    pred, target = rng.normal(size=(5, 17, 3)), rng.normal(size=(5, 17, 3))
    ref = metrics.p_mpjpe(pred, target)
    got = _p_mpjpe_jit(jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32))
    assert ref.shape == got.shape == (5,)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-5)
    # Alignment never makes the error worse than the plain per-pose MPJPE.
    assert np.all(ref <= metrics.mpjpe_per_pose(pred, target) + 1e-12)


def test_n_mpjpe_handles_scale_only(poses):
    np.testing.assert_allclose(metrics.n_mpjpe(0.5 * poses, poses), 0.0, atol=1e-12)
    # A translation is not undone by scaling: N-MPJPE stays positive.
    assert np.all(metrics.n_mpjpe(poses + 1.0, poses) > 0.01)


def test_mpjve_constant_velocity():
    t = np.arange(6, dtype=float)[None, :, None, None]  # (1, F, 1, 1)
    target = np.zeros((2, 6, 17, 3)) + t * np.array([1.0, 0.0, 0.0])
    pred = target + t * np.array([0.0, 3.0, 4.0])  # extra velocity of norm 5 per step
    v = metrics.mpjve(pred, target)
    assert v.shape == (2, 5)
    np.testing.assert_allclose(v, 5.0)
    # A constant offset has no velocity error, whichever the sample (Q21: not the batch axis).
    shifted = target + np.arange(2.0)[:, None, None, None]
    np.testing.assert_allclose(metrics.mpjve(shifted, target), 0.0)
    with pytest.raises(ValueError, match="time_axis"):
        metrics.mpjve(pred, target, time_axis=-1)


def test_pck_and_auc_by_hand():
    errors = np.full((10, 17), 100.0)
    errors[:, 14:] = 1000.0  # pelvis, spine, head are not scored
    assert metrics.pck(errors) == pytest.approx(100.0)
    # Thresholds 0..150 step 5: PCK 100 at 105..150 (10 of 31 values), 0 below.
    assert metrics.auc(errors) == pytest.approx(1000.0 / 31)
    errors[:5, :14] = 150.0  # half of the frames exactly at 150 -> not counted (strict <)
    assert metrics.pck(errors) == pytest.approx(50.0)
    mixed = np.tile(np.array([0.0, 10.0, 200.0, 140.0]), (1, 4))[:, :14]  # (1, 14)
    expected = 100.0 * np.mean(mixed < 150)
    assert metrics.pck(mixed) == pytest.approx(expected)
    assert float(metrics.pck(jnp.asarray(mixed))) == pytest.approx(expected, rel=1e-6)
    curve = metrics.pck_curve(mixed)
    assert curve.shape == (31,) and curve[0] == 0.0
