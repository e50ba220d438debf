"""Input pipeline: device-gathered windows equal the host gather bit for bit; prefetch; TTA."""

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aptpose_jax import pipeline, sharding, steps
from aptpose_jax.datasets.sequences import PoseSequences
from aptpose_jax.datasets.skeleton import H36M_JOINTS_LEFT, H36M_JOINTS_RIGHT
from aptpose_jax.datasets.windows import WindowDataset
from aptpose_jax.flip import flip_pose
from aptpose_jax.masking import MaskSpec, draw_masks
from aptpose_jax.models import ModelConfig, build_model


def _sequences(lengths, seed=0):
    """Random float poses (every bit pattern matters) with H36M left/right lists."""
    rng = np.random.default_rng(seed)
    n = len(lengths)
    return PoseSequences(
        name="t", keys=[(f"S{s}",) for s in range(n)],
        poses_2d=[rng.normal(size=(t, 17, 2)).astype(np.float32) for t in lengths],
        poses_3d=[rng.normal(size=(t, 17, 3)).astype(np.float32) for t in lengths],
        cameras=rng.normal(size=(n, 9)).astype(np.float32),
        groups=["A" if s % 2 == 0 else "B" for s in range(n)],
        subjects=[f"S{s % 3}" for s in range(n)],
        cam_indices=[s % 4 for s in range(n)],
    )  # fmt: skip


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh()


@pytest.mark.parametrize("frames", [27, 81, 243])
@pytest.mark.parametrize("tds", [1, 2])
@pytest.mark.parametrize("train,flip", [(True, True), (True, False), (False, True), (False, False)])
def test_device_gather_is_bitwise_the_host_gather(mesh, frames, tds, train, flip):
    """Train: the flip augmentation; test: the TTA mirror of the input, made on the device
    as `steps.tta_forward` makes it, against the host's mirror of the host batch."""
    # Sequences shorter and longer than the window span: border clamping on both sides.
    seqs = _sequences([5, 40, 300, 700])
    kwargs = dict(flip_augment=flip, stride=2) if train else {}
    ds = WindowDataset(seqs, frames=frames, tds=tds, train=train, **kwargs)
    idx = np.random.default_rng(1).permutation(len(ds))[:64].astype(np.int32)
    if train and flip:
        assert ds.pair_flip[idx].any() and not ds.pair_flip[idx].all()
    host = ds.get_batch(idx)
    windows = pipeline.place_windows(ds, mesh, with_3d=True)
    idx_dev = jax.device_put(idx, sharding.batch_sharded(mesh))

    def gather(w, i):
        batch = w.gather(i)
        if flip and not train:
            batch["input_2d_flip"] = flip_pose(batch["input_2d"], *ds.lr_2d)
        return batch

    got = jax.device_get(jax.jit(gather)(windows, idx_dev))
    if flip and not train:
        host["input_2d_flip"] = flip_pose(host["input_2d"], *ds.lr_2d)
    expected = {"input_2d", "gt_3d", "cam"} | ({"input_2d_flip"} if flip and not train else set())
    assert set(got) == expected
    for k in expected:
        assert got[k].dtype == host[k].dtype and got[k].shape == host[k].shape, k
        np.testing.assert_array_equal(got[k].view(np.uint32), host[k].view(np.uint32), err_msg=k)


def test_stage1_places_no_3d_and_host_batches_equal_device_batches(mesh):
    seqs = _sequences([50, 90])
    ds = WindowDataset(seqs, frames=27, tds=2, train=True, with_3d=False)
    assert ds.poses_3d is None and "gt_3d" not in ds.get_batch(np.arange(4))
    dev = pipeline.Pipeline(ds, mesh, mode="device", keys=("input_2d",), with_3d=False)
    assert dev.windows.poses_3d is None
    assert pipeline.device_bytes(ds, with_3d=False) == sum(
        a.nbytes for a in (ds.poses_2d, ds.cameras)
    ) + 4 * (2 * len(ds.lengths) + 2 * len(ds)) + len(ds)
    host = pipeline.Pipeline(ds, mesh, mode="host", keys=("input_2d",), with_3d=False)
    order = np.random.default_rng(0).permutation(len(ds))
    index_of = lambda i: order[i * 16 : (i + 1) * 16]  # noqa: E731
    gather = jax.jit(pipeline.materialize)
    for a, b in zip(dev.batches(index_of, 0, 3), host.batches(index_of, 0, 3), strict=True):
        assert isinstance(a, pipeline.IndexBatch) and set(b) == {"input_2d"}
        assert b["input_2d"].sharding.is_equivalent_to(sharding.batch_sharded(mesh), 4)
        np.testing.assert_array_equal(np.asarray(gather(a)["input_2d"]), np.asarray(b["input_2d"]))


def test_prefetcher_keeps_order_runs_ahead_and_reraises():
    made = []

    def make(i):
        made.append(i)
        if i == 5:
            raise KeyError("boom")
        return i * 10

    with pipeline.Prefetcher(make, 0, 5, depth=2) as feed:
        it = iter(feed)
        assert next(it) == 0
        deadline = threading.Event()
        for _ in range(50):  # the thread fills the queue while the consumer waits
            if len(made) >= 3:
                break
            deadline.wait(0.05)
        assert len(made) >= 3
        assert list(it) == [10, 20, 30, 40]
    with pytest.raises(KeyError, match="boom"), pipeline.Prefetcher(make, 4, 7) as feed:
        list(feed)


@pytest.mark.parametrize("kernels", ["plain", "cpu"])  # one pass over 2B / two passes over B
@pytest.mark.parametrize(
    "stage,per_sample", [("lifter", False), ("lifter", True), ("pretrain", False)]
)
def test_both_tta_formulations_equal_two_plain_forwards(stage, per_sample, kernels, monkeypatch):
    monkeypatch.setenv("APTPOSE_KERNELS", kernels)
    frames = 27
    cfg = ModelConfig(stage=stage, frames=frames, layers=2, channel=16, d_hid=32,
                      temporal_ratio=0.5 if stage == "pretrain" else 0.0)  # fmt: skip
    model = build_model(cfg, nnx.Rngs(params=0, dropout=1))
    model.eval()
    spec = MaskSpec(frames=frames, temporal_ratio=cfg.temporal_ratio, joints_per_frame=2,
                    bones_per_frame=1, joints_left=H36M_JOINTS_LEFT,
                    joints_right=H36M_JOINTS_RIGHT, per_sample=per_sample)  # fmt: skip
    left = H36M_JOINTS_LEFT
    right = H36M_JOINTS_RIGHT
    step_cfg = steps.StepConfig(stage=stage, mask_spec=spec, joints_left=left, joints_right=right)
    x = jax.random.normal(jax.random.key(3), (8, frames, 17, 2))
    masks = draw_masks(jax.random.key(4), spec, 8)
    tta = jax.jit(lambda x, m: steps.tta_forward(model, x, m, step_cfg))
    stacked = f"f32[16,{frames},17,2]" in str(jax.make_jaxpr(tta)(x, masks))  # 2B input rows
    assert stacked == (kernels == "plain")
    one = tta(x, masks)

    def two(x, m):
        name = "recon" if stage == "pretrain" else "pose"
        a = model(x, m)[name]
        b = model(steps.flip.flip_pose(x, left, right), m)[name]
        return steps.flip.tta_average(a, b, left, right)

    ref = jax.jit(two)(x, masks)
    # Same operations per sample; only the matmul row count differs (2B vs B), which may
    # change XLA:CPU's blocking and hence float rounding: tolerance at float32 noise.
    np.testing.assert_allclose(np.asarray(one), np.asarray(ref), rtol=1e-5, atol=1e-6)
    assert not jnp.allclose(one, model(x, masks)["recon" if stage == "pretrain" else "pose"])


@pytest.mark.parametrize("kernels", ["plain", "cpu"])
@pytest.mark.parametrize("stage", ["lifter", "pretrain"])
def test_tta_forward_reproduces_the_reference_tta_outputs(
    stage, kernels, fixtures_dir, monkeypatch
):
    """The official fixtures' flip-TTA outputs, from the input alone (flip computed here)."""
    monkeypatch.setenv("APTPOSE_KERNELS", kernels)
    from test_parity import ref_to_bfjd, rel_err

    from aptpose_jax.convert import load_pth
    from aptpose_jax.masking import Masks

    ref = dict(np.load(fixtures_dir / "reference_outputs_f27.npz"))
    b = {k: jnp.asarray(ref[k] > 0.5) for k in ref if k.startswith("mask_")}
    masks = Masks(b["mask_temporal"], b["mask_spatial"], b["mask_bone"], b["mask_limb"],
                  b["mask_halfbody"])  # fmt: skip
    name = "stage2_f27.pth" if stage == "lifter" else "stage1_f27.pth"
    extra = {} if stage == "lifter" else {"temporal_ratio": 0.5}
    model, cfg = load_pth(fixtures_dir / name, **extra)
    spec = MaskSpec(frames=27, joints_left=H36M_JOINTS_LEFT, joints_right=H36M_JOINTS_RIGHT)
    step_cfg = steps.StepConfig(stage=stage, mask_spec=spec, joints_left=H36M_JOINTS_LEFT,
                                joints_right=H36M_JOINTS_RIGHT)  # fmt: skip
    out = steps.tta_forward(model, jnp.asarray(ref["input_2d_bfjc"]), masks, step_cfg)
    key = "stage2_out_3d_tta" if stage == "lifter" else "stage1_output_2d_tta"
    assert rel_err(out, ref_to_bfjd(ref[key])) <= 1e-5
