"""The refine step (§2.8): back-projection against the reference formulas on hand-made cameras,
the refine loss, and refine `.pth` files that convert and evaluate with the refined centre."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from test_train import load_config, tiny

from aptpose_jax import losses, run_builder, steps, train
from aptpose_jax.convert import export_state_dict
from aptpose_jax.convert.__main__ import main as convert_main
from aptpose_jax.models import ModelConfig, build_model
from aptpose_jax.refine import uvd_to_xyz


def _reference_get_uvd2xyz(uvd, gt_3d, cam):
    """numpy transcription of the reference formula (§2.8; P-STMO common/camera.py):
    uvd (N, T, V, 3), gt_3d (N, T, V, 3) with the absolute root at joint 0, cam (N, 9)."""
    n, t, v, _ = uvd.shape
    root = np.repeat(gt_3d[:, :, :1, :], v, axis=2)
    f = np.broadcast_to(cam[:, None, None, :2], (n, t, v, 2))
    c = np.broadcast_to(cam[:, None, None, 2:4], (n, t, v, 2))
    z = uvd[..., 2].copy()
    z[:, :, 0] = root[:, :, 0, 2]
    z[:, :, 1:] = uvd[:, :, 1:, 2] + root[:, :, 1:, 2]
    xy = (uvd[..., :2] - c) * z[..., None] / f
    xyz = np.concatenate([xy, z[..., None]], axis=-1)
    return xyz - xyz[:, :, :1]


# Two hand-made normalised cameras [fx, fy, cx, cy, k1, k2, k3, p1, p2].
CAMERAS = np.array(
    [[1.15, 1.14, 0.02, -0.01, 0.1, -0.2, 0.0, 0.001, -0.002],
     [0.92, 0.95, -0.03, 0.04, 0.0, 0.0, 0.0, 0.0, 0.0]], np.float32
)  # fmt: skip


def test_back_projection_inverts_the_pinhole_projection_of_hand_made_cameras():
    rng = np.random.default_rng(0)
    root = np.array([[0.3, -0.2, 5.0], [-0.5, 0.1, 4.2]])  # (B, 3) absolute, metres
    offsets = rng.normal(0, 0.3, (2, 17, 3))
    offsets[:, 0] = 0
    points = root[:, None] + offsets  # (B, J, 3) camera frame
    f, c = CAMERAS[:, None, :2], CAMERAS[:, None, 2:4]
    uv = f * points[..., :2] / points[..., 2:] + c  # the pinhole projection (no distortion)
    depth = points[..., 2] - root[:, None, 2]  # predicted depths are root-relative
    depth[:, 0] = 123.0  # the root's prediction is replaced by the ground-truth root depth
    xyz = uvd_to_xyz(jnp.asarray(uv), jnp.asarray(depth), jnp.asarray(root[:, 2]), CAMERAS)
    np.testing.assert_allclose(np.asarray(xyz), offsets, atol=1e-5)


def test_back_projection_equals_the_reference_formula():
    rng = np.random.default_rng(1)
    uv = rng.uniform(-1, 1, (2, 17, 2)).astype(np.float32)
    depth = rng.normal(0, 0.2, (2, 17)).astype(np.float32)
    gt = rng.normal(0, 0.3, (2, 1, 17, 3)).astype(np.float32)
    gt[:, :, 0] = [[0.1, 0.2, 4.5]], [[-0.3, 0.0, 6.1]]
    expected = _reference_get_uvd2xyz(
        np.concatenate([uv, depth[..., None]], -1)[:, None], gt, CAMERAS
    )[:, 0]
    got = uvd_to_xyz(jnp.asarray(uv), jnp.asarray(depth), jnp.asarray(gt[:, 0, 0, 2]), CAMERAS)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)


def test_refine_loss_is_the_mpjpe_of_the_refined_centre_frame():
    rng = np.random.default_rng(2)
    gt = rng.normal(0, 0.3, (3, 5, 17, 3)).astype(np.float32)
    refined = rng.normal(0, 0.3, (3, 1, 17, 3)).astype(np.float32)
    target = gt[:, 2:3].copy()
    target[:, :, 0] = 0
    expected = np.linalg.norm(refined - target, axis=-1).mean()
    cfg = steps.StepConfig(stage="lifter", mask_spec=None, refine=True)
    refined, gt = jnp.asarray(refined), jnp.asarray(gt)
    loss, metrics = steps._loss(cfg, {"pose_refined": refined}, {"gt_3d": gt}, None)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    assert float(losses.refine_loss(refined, gt)) == pytest.approx(float(expected), rel=1e-6)


@pytest.fixture(scope="module")
def refine_files(tmp_path_factory):
    """A tiny Stage II model with refine weights, saved as the reference does: two .pth files."""
    tmp = tmp_path_factory.mktemp("refine")
    cfg = ModelConfig("lifter", 27, layers=2, channel=16, d_hid=32, refine=True)
    model = build_model(cfg, nnx.Rngs(params=5, dropout=0))
    sd = {k: torch.from_numpy(np.array(v)) for k, v in export_state_dict(model).items()}
    torch.save({k: v for k, v in sd.items() if not k.startswith("post_refine.")}, tmp / "m.pth")
    torch.save({k: v for k, v in sd.items() if k.startswith("post_refine.")}, tmp / "r.pth")
    return tmp


def _eval_config(demo_root, **kw):
    return tiny(load_config("h36m_eval", "demo"), demo_root, **{"init.from_workdir": "", **kw})


def test_refine_pth_converts_and_evaluates_the_refined_centre(refine_files, demo_root, tmp_path):
    out = tmp_path / "converted"
    args = ["--pth", str(refine_files / "m.pth"), "--refine_pth", str(refine_files / "r.pth")]
    assert convert_main([*args, "--out", str(out)]) == 0
    assert json.loads((out / "model_config.json").read_text())["refine"] is True

    refined = train.train_and_evaluate(
        _eval_config(demo_root, **{"init.from_workdir": str(out), "model.refine": True}),
        str(tmp_path / "refined"),
    )
    from_pth = train.train_and_evaluate(
        _eval_config(
            demo_root,
            **{
                "init.from_pth": str(refine_files / "m.pth"),
                "init.refine_pth": str(refine_files / "r.pth"),
                "model.refine": True,
            },
        ),
        str(tmp_path / "from_pth"),
    )
    plain = train.train_and_evaluate(
        _eval_config(demo_root, **{"init.from_workdir": str(out), "model.refine": False}),
        str(tmp_path / "plain"),
    )
    assert math.isfinite(refined["p1"]) and refined["p1"] == pytest.approx(from_pth["p1"])
    assert refined["p1"] != pytest.approx(plain["p1"], rel=1e-6)  # the refined pose is scored
    saved = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert saved["model"]["refine"] is False  # refine follows the run config, not the weights


def test_eval_step_refines_only_u_and_v(refine_files, demo_root, tmp_path):
    config = _eval_config(
        demo_root,
        **{
            "init.from_pth": str(refine_files / "m.pth"),
            "init.refine_pth": str(refine_files / "r.pth"),
            "model.refine": True,
            "data.test_flip": False,
        },
    )
    run = run_builder.build_run(config, tmp_path / "w")
    batch = run.test_ds.get_batch(np.arange(8))
    inputs = {k: jnp.asarray(batch[k]) for k in ("input_2d", "gt_3d", "cam")}
    out = {}
    for refine in (False, True):
        cfg = steps.StepConfig(**{**run.step_cfg.__dict__, "refine": refine})
        step = jax.jit(steps.make_eval_step(run.eval_graphdef, run.rest, cfg))
        out[refine] = np.asarray(
            step(run.params, run.batch_stats, inputs, jax.random.key(0))["pose"]
        )
    run.close()
    np.testing.assert_array_equal(out[True][..., 2], out[False][..., 2])  # depth kept
    assert np.abs(out[True][:, 1:, :2] - out[False][:, 1:, :2]).max() > 1e-4  # u, v blended
