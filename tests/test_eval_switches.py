"""Step-level mask switches (Q2 on/off, per-sample masks) and the padded last evaluation batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_train import load_config, tiny

from aptpose_jax import inference, run_builder, steps
from aptpose_jax.datasets.skeleton import H36M_BONE_PAIRS, H36M_JOINTS_LEFT, H36M_JOINTS_RIGHT
from aptpose_jax.masking import MaskSpec, no_masks
from aptpose_jax.models import ModelConfig, build_model

F, B = 27, 4


@pytest.fixture(scope="module")
def lifter():
    model = build_model(
        ModelConfig("lifter", F, layers=2, channel=16, d_hid=32), nnx.Rngs(params=0, dropout=1)
    )
    model.eval()
    graphdef, params, stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    return model, graphdef, params, stats, rest


def _step_cfg(masks_in_eval: bool, per_sample: bool) -> steps.StepConfig:
    spec = MaskSpec(frames=F, joints_per_frame=3, bones_per_frame=1,
                    joints_left=H36M_JOINTS_LEFT, joints_right=H36M_JOINTS_RIGHT,
                    bone_pairs=H36M_BONE_PAIRS, per_sample=per_sample)  # fmt: skip
    return steps.StepConfig(stage="lifter", mask_spec=spec, masks_in_eval=masks_in_eval,
                            bone_pairs=H36M_BONE_PAIRS, test_flip=False)  # fmt: skip


def _batch(same_rows: bool = False):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.3, (1 if same_rows else B, F, 17, 2)).astype(np.float32)
    x = np.repeat(x, B, axis=0) if same_rows else x
    return {"input_2d": jnp.asarray(x), "gt_3d": jnp.zeros((B, 1, 17, 3), jnp.float32)}


def _eval(lifter, cfg, batch, seed):
    _, graphdef, params, stats, rest = lifter
    step = jax.jit(steps.make_eval_step(graphdef, rest, cfg))
    return np.asarray(step(params, stats, batch, jax.random.key(seed))["pose"])


def test_q2_masks_in_evaluation_on_and_off(lifter):
    batch = _batch()
    on = [_eval(lifter, _step_cfg(True, False), batch, s) for s in (0, 1)]
    off = [_eval(lifter, _step_cfg(False, False), batch, s) for s in (0, 1)]
    assert np.abs(on[0] - on[1]).max() > 1e-6  # Q2 on: masks drawn in evaluation, per key
    np.testing.assert_array_equal(off[0], off[1])  # Q2 off: no randomness
    model = lifter[0]
    direct = np.array(model(batch["input_2d"], no_masks(F, 17))["pose"][:, 0])
    direct[:, 0] = 0.0
    np.testing.assert_allclose(off[0], direct, rtol=1e-5, atol=1e-6)  # = the mask-free model
    assert np.abs(on[0] - off[0]).max() > 1e-6


def test_per_sample_masks_switch(lifter):
    batch = _batch(same_rows=True)  # B identical windows
    shared = _eval(lifter, _step_cfg(True, per_sample=False), batch, 0)
    per_sample = _eval(lifter, _step_cfg(True, per_sample=True), batch, 0)
    for i in range(1, B):
        np.testing.assert_array_equal(shared[i], shared[0])  # one mask set per batch (Q1)
    assert max(np.abs(per_sample[i] - per_sample[0]).max() for i in range(1, B)) > 1e-6
    masks = steps._masks(_step_cfg(True, per_sample=True), jax.random.key(0), B, use=True)
    assert masks.joint.shape == (B, F, 17) and masks.bone.shape == (B, F, 17)
    masks = steps._masks(_step_cfg(True, per_sample=False), jax.random.key(0), B, use=True)
    assert masks.joint.shape == (F, 17)


def test_padded_last_eval_batch_gives_the_unpadded_per_sample_results(
    demo_root, fixtures_dir, tmp_path
):
    config = tiny(
        load_config("h36m_eval", "demo"),
        demo_root,
        **{
            "init.from_workdir": "",
            "init.from_pth": str(fixtures_dir / "stage2_f27.pth"),
            "masks.in_eval": False,  # per-batch masks would differ between batchings
            "eval.max_batches": -1,
        },
    )
    run = run_builder.build_run(config, tmp_path / "w")
    n = len(run.test_ds)
    b = next(k for k in (16, 24, 32, 40, 48) if n % k)  # a batch size that leaves a remainder
    run.config.unlock()
    run.config.eval.batch_size = b
    pred = inference.predict(run, run.params, run.batch_stats)
    assert len(pred["pose"]) == n  # padding dropped
    last = np.arange(n - b, n)  # the same windows in one full, unpadded batch
    inputs = run.test_pipe.batch(last)  # the step input evaluation builds for a full batch
    full = jax.device_get(run.eval_step(run.params, run.batch_stats, inputs, jax.random.key(0)))
    run.close()
    tail = n % b  # the windows that sat in the padded batch
    np.testing.assert_allclose(pred["pose"][-tail:], full["pose"][-tail:], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pred["target"][-tail:], full["target"][-tail:])
