"""Model structure and numerics beyond the F = 27 fixtures: parameter counts (§2.4), blocks
against PyTorch (BatchNorm training update, strided conv), modes, shapes, errors, dtypes."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from aptpose_jax.masking import MaskSpec, draw_masks, no_masks
from aptpose_jax.models import ModelConfig, build_model, stride_num
from aptpose_jax.models.layers import BatchNorm, LayerNorm, draw_dropout_seeds
from aptpose_jax.models.strided import StridedConv


def n_params(cfg: ModelConfig) -> int:
    model = nnx.eval_shape(lambda: build_model(cfg, nnx.Rngs(0)))
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


# §2.4 table: (F, layers) -> (Stage II, Stage I, no-mask Stage II), C 256, H 512, J 17.
PARAM_COUNTS = {
    (243, 4): (9_067_982, 5_348_522, 9_067_974),
    (243, 8): (11_176_398, 7_986_858, 11_176_390),
    (81, 3): (7_585_742, 4_626_730, 7_585_734),
    (27, 3): (6_741_198, 4_605_994, 6_741_190),
}


@pytest.mark.parametrize("frames,layers", list(PARAM_COUNTS))
def test_parameter_counts_match_reference(frames, layers):
    # Counted as the reference counts: every nn.Parameter incl. the unused norms (Q6).
    got = tuple(
        n_params(ModelConfig(stage, frames, layers))
        for stage in ("lifter", "pretrain", "lifter_nomask")
    )
    assert got == PARAM_COUNTS[(frames, layers)]


def test_stride_num_table_and_bad_frames():
    assert stride_num(243) == (3, 3, 3, 3, 3) and stride_num(351) == (3, 9, 13)
    assert stride_num(9) == (1, 3, 3)
    with pytest.raises(ValueError, match="no stride_num for frames=100"):
        ModelConfig("lifter", 100)


def test_batchnorm_training_matches_torch():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (4, 7, 5)).astype(np.float32)  # (B, T, C)
    tbn = torch.nn.BatchNorm1d(5)
    ours = BatchNorm(5)
    for _ in range(2):  # two steps: the running update compounds
        y_t = tbn(torch.from_numpy(x).permute(0, 2, 1)).permute(0, 2, 1).detach().numpy()
        y = ours(jnp.asarray(x))
    np.testing.assert_allclose(y, y_t, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.mean[...], tbn.running_mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(ours.var[...], tbn.running_var.numpy(), rtol=1e-6)  # unbiased
    tbn.eval()
    ours.use_running_average = True
    y_t = tbn(torch.from_numpy(x).permute(0, 2, 1)).permute(0, 2, 1).detach().numpy()
    np.testing.assert_allclose(ours(jnp.asarray(x)), y_t, rtol=1e-5, atol=1e-5)


def test_layernorm_is_the_reference_variant():
    x = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float64)
    expected = (x - x.mean(-1, keepdims=True)) / (x.std(-1, ddof=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(LayerNorm(8)(jnp.asarray(x, jnp.float32)), expected, rtol=1e-5)


@pytest.mark.parametrize("stride,length", [(1, 9), (3, 27), (3, 10), (13, 13)])
def test_strided_conv_matches_torch_conv1d(stride, length):
    conv = StridedConv(6, 4, stride, rngs=nnx.Rngs(0))
    x = np.random.default_rng(2).normal(size=(2, length, 6)).astype(np.float32)
    w = torch.from_numpy(np.asarray(conv.kernel[...]).transpose(2, 1, 0).copy())  # (out, in, k)
    ref = torch.nn.functional.conv1d(
        torch.from_numpy(x).permute(0, 2, 1),
        w,
        torch.tensor(np.asarray(conv.bias[...])),
        stride=stride,
        padding=1,
    ).permute(0, 2, 1)
    np.testing.assert_allclose(conv(jnp.asarray(x)), ref.numpy(), rtol=1e-5, atol=1e-5)


# One size for all small models: eager ops compile once per shape, so shared shapes are cheap.
SMALL = dict(frames=9, layers=2, channel=16, d_hid=32, sem_layers=2)


@pytest.fixture(scope="module")
def lifter():
    """Small masked lifter with a refine module (F = 9, strides 1, 3, 3), built once."""
    cfg = ModelConfig("lifter", **SMALL, refine=True)
    return build_model(cfg, nnx.Rngs(params=0, dropout=1)), cfg


def _forward(model):
    """Jitted forward of `model` in its current mode (one compile beats many eager ops)."""
    graph, state = nnx.split(model)
    return jax.jit(lambda s, x, m: nnx.merge(graph, s)(x, m))


@pytest.mark.parametrize("stage,frames", [("lifter", 81), ("lifter", 351), ("pretrain", 27)])
def test_output_shapes(stage, frames):
    cfg = ModelConfig(stage, frames, layers=2, channel=16, d_hid=32, temporal_ratio=0.5)
    masks = draw_masks(jax.random.key(0), MaskSpec(frames=frames, temporal_ratio=0.5))

    def run():
        return build_model(cfg, nnx.Rngs(0))(jnp.zeros((2, frames, 17, 2)), masks)

    shapes = {k: v.shape for k, v in jax.eval_shape(run).items()}
    if stage == "pretrain":
        assert shapes == {"recon": (2, frames, 17, 2)}
    else:
        assert shapes == {
            "pose": (2, 1, 17, 3),
            "pose_seq": (2, frames, 17, 3),
            "bones": (2, 1, 16, 3),
            "bones_seq": (2, frames, 16, 3),
        }


def test_nomask_variant_ignores_masks_and_has_no_tokens():
    cfg = ModelConfig("lifter_nomask", **SMALL)
    model = build_model(cfg, nnx.Rngs(0))
    model.eval()
    assert not hasattr(model, "spatial_mask_token")
    x = jax.random.normal(jax.random.key(3), (2, 9, 17, 2))
    masks = draw_masks(jax.random.key(0), MaskSpec(frames=9, joints_per_frame=2))
    graph, state = nnx.split(model)
    fwd = jax.jit(lambda s, m: nnx.merge(graph, s)(x, m))
    a, b = fwd(state, None), fwd(state, masks)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_pretrain_order_is_visible_then_masked():
    cfg = ModelConfig("pretrain", **SMALL, temporal_ratio=0.5)
    model = build_model(cfg, nnx.Rngs(0))
    model.eval()
    assert cfg.n_visible == 5
    spec = MaskSpec(frames=9, temporal_ratio=0.5, joints_per_frame=1)
    masks = draw_masks(jax.random.key(4), spec)
    x = jax.random.normal(jax.random.key(5), (3, 9, 17, 2))
    graph, state = nnx.split(model)
    out = jax.jit(lambda s: nnx.merge(graph, s)(x, masks, return_intermediates=True))(state)
    assert out["recon"].shape == (3, 9, 17, 2)
    assert out["intermediates"]["enc_out"].shape == (3, 5, 16)
    # Decoder rows of masked frames are mask_token + their positional embedding (Q8).
    order = np.argsort(np.asarray(masks.temporal), kind="stable")
    dec_pos = np.asarray(model.dec_pos_embedding[...])[0, order]
    expected = np.asarray(model.mask_token[...])[0, 0] + dec_pos[5:]
    np.testing.assert_allclose(
        out["intermediates"]["dec_in"][:, 5:], np.broadcast_to(expected, (3, 4, 8)), rtol=1e-6
    )


def test_train_eval_modes(lifter):
    model, _ = lifter
    x = jax.random.normal(jax.random.key(6), (2, 9, 17, 2))
    masks = no_masks(9)
    model.train()
    mean_before = np.asarray(model.encoder1.bn_1.mean[...])
    train_fwd = nnx.jit(lambda m, x: m(x, masks)["pose"])
    # Dropout masks come from the sites' seeds, drawn anew by the train step each step.
    draw_dropout_seeds(model, jax.random.key(1))
    a = train_fwd(model, x)
    draw_dropout_seeds(model, jax.random.key(2))
    b = train_fwd(model, x)
    assert not np.allclose(a, b)  # new seeds, new dropout masks
    assert not np.allclose(mean_before, model.encoder1.bn_1.mean[...])  # running stats moved
    model.eval()
    mean = np.asarray(model.encoder1.bn_1.mean[...])
    np.testing.assert_array_equal(train_fwd(model, x), train_fwd(model, x))
    np.testing.assert_array_equal(mean, model.encoder1.bn_1.mean[...])


def test_bad_inputs_raise_clear_errors(lifter):
    model, _ = lifter
    with pytest.raises(ValueError, match=r"\(B, 9, 17, 2\)"):
        model(jnp.zeros((2, 8, 17, 2)), no_masks(8))
    with pytest.raises(ValueError, match="pass a Masks"):
        model(jnp.zeros((2, 9, 17, 2)), None)
    with pytest.raises(ValueError, match="refine=True"):
        build_model(
            ModelConfig("lifter", 9, layers=2, channel=16, d_hid=32), nnx.Rngs(0)
        ).refine_pose(jnp.zeros((1, 1, 17, 3)), jnp.zeros((1, 1, 17, 3)))


def test_bf16_close_to_fp32(lifter):
    model, cfg = lifter
    model.eval()
    x = jax.random.normal(jax.random.key(7), (2, 9, 17, 2))
    masks = draw_masks(jax.random.key(0), MaskSpec(frames=9, joints_per_frame=1))
    ref = _forward(model)(nnx.split(model)[1], x, masks)["pose_seq"]
    bf16 = build_model(ModelConfig(**{**cfg.__dict__, "dtype": "bfloat16"}), nnx.Rngs(0))
    nnx.update(bf16, nnx.state(model))
    bf16.eval()
    out = _forward(bf16)(nnx.split(bf16)[1], x, masks)["pose_seq"]
    assert out.dtype == jnp.float32
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 3e-2


def test_unused_parameters_get_no_gradient(lifter):
    # Q6/Q10: the final norms and pos_embedding_2/3 rows beyond the used lengths never matter.
    model, _ = lifter
    model.eval()
    graph, params, rest = nnx.split(model, nnx.Param, ...)
    x = jax.random.normal(jax.random.key(8), (2, 9, 17, 2))

    def loss(p):
        return nnx.merge(graph, p, rest, copy=True)(x, no_masks(9))["pose"].sum()

    g = jax.jit(jax.grad(loss))(params)
    assert not np.any(g["Transformer"]["model"]["norm"]["a_2"][...])
    assert not np.any(g["Transformer_reduce"]["model"]["norm"]["b_2"][...])
    assert np.any(g["Transformer"]["model"]["layers"][0]["sublayer"][0]["norm"]["a_2"][...])
    pos3 = np.asarray(g["Transformer_reduce"]["model"]["pos_embedding_3"][...])  # lengths 9,9,3
    assert np.any(pos3[:, :3]) and not np.any(pos3[:, 3:])


def test_refine_blends_uv_only(lifter):
    model, _ = lifter
    model.eval()
    pose = jax.random.normal(jax.random.key(9), (2, 1, 17, 3))
    uvd = jax.random.normal(jax.random.key(10), (2, 1, 17, 3))
    out = model.refine_pose(pose, uvd)
    np.testing.assert_array_equal(out[..., 2], pose[..., 2])
    lo = np.minimum(pose[..., :2], uvd[..., :2]) - 1e-6
    hi = np.maximum(pose[..., :2], uvd[..., :2]) + 1e-6
    assert np.all((out[..., :2] >= lo) & (out[..., :2] <= hi))  # convex blend, w in (0, 1)
    saved = model.refine.post_refine[1].bias[...]
    model.refine.post_refine[1].bias[...] = jnp.full((34,), 50.0)  # sigmoid -> 1: keep pose
    np.testing.assert_allclose(model.refine_pose(pose, uvd), pose, atol=1e-6)
    model.refine.post_refine[1].bias[...] = saved


def test_matmul_custom_vjp_matches_autodiff():
    from aptpose_jax.models.kernels import Compute, matmul

    x = jax.random.normal(jax.random.key(11), (2, 5, 6))
    w = jax.random.normal(jax.random.key(12), (6, 4))
    g = jax.random.normal(jax.random.key(13), (2, 5, 4))
    ours = jax.vjp(lambda x, w: matmul(x, w, Compute(matmul="transposed")), x, w)[1](g)
    plain = jax.vjp(lambda x, w: jnp.matmul(x, w), x, w)[1](g)
    for a, b in zip(ours, plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _fresh(stage: str, cloned: bool):
    cfg = ModelConfig(stage, 27, layers=3, channel=64, d_hid=128, cloned_init=cloned)
    if stage == "pretrain":
        cfg = dataclasses.replace(cfg, temporal_ratio=0.5)
    return build_model(cfg, nnx.Rngs(params=3, dropout=4))


def _params(module) -> list[np.ndarray]:
    return [np.asarray(v) for v in jax.tree.leaves(nnx.state(module, nnx.Param))]


def _same(a, b) -> bool:
    pa, pb = _params(a), _params(b)
    return len(pa) == len(pb) and all(np.array_equal(x, y) for x, y in zip(pa, pb, strict=True))


def _distinct(a, b) -> bool:
    """No parameter of `a` equals its counterpart in `b` (ones/zeros norm inits excepted)."""
    pairs = zip(_params(a), _params(b), strict=True)
    return all(not np.array_equal(x, y) for x, y in pairs if x.std() > 0)


def _vanilla_encoders(model):
    return [t.model for t in (model.Transformer, getattr(model, "Transformer_dec", None)) if t]


@pytest.mark.parametrize("stage", ["pretrain", "lifter"])
def test_cloned_init_is_the_reference_structure(stage):
    """Q9: what the reference's deep copies make equal at initialisation, and what they do not."""
    model = _fresh(stage, cloned=True)
    for enc in _vanilla_encoders(model):  # Stage I encoder and decoder, Stage II Transformer
        for layer in enc.layers:
            assert _same(layer, enc.layers[0])
            for lin in layer.self_attn.linears:
                assert _same(lin, layer.self_attn.linears[0])  # Q = K = V = O
    if stage == "lifter":
        strided = model.Transformer_reduce.model.layers
        for layer in strided:
            assert _same(layer.self_attn, strided[0].self_attn)
            assert _same(layer.self_attn.linears[3], strided[0].self_attn.linears[0])
        for a, b in ((0, 1), (0, 2), (1, 2)):  # each strided feed-forward is built on its own
            assert _distinct(strided[a].feed_forward, strided[b].feed_forward)
        heads = (model.fcn, model.fcn_1, model.fcn_vec, model.fcn_vec1)
        assert _distinct(heads[0], heads[1]) and _distinct(heads[2], heads[3])
        assert _distinct(model.Transformer.model.layers[0].self_attn, strided[0].self_attn)
    encoders = [getattr(model, f"encoder{k}") for k in range(1, 5)]
    for a in range(4):
        for b in range(a + 1, 4):
            assert _distinct(encoders[a], encoders[b])
    # Copies are separate buffers: the train step donates its state.
    first = model.Transformer.model.layers[0].self_attn.linears
    pointers = {lin.kernel[...].unsafe_buffer_pointer() for lin in first}
    assert len(pointers) == 4


@pytest.mark.parametrize("stage", ["pretrain", "lifter"])
def test_independent_init_option(stage):
    model = _fresh(stage, cloned=False)
    for enc in _vanilla_encoders(model):
        assert _distinct(enc.layers[0], enc.layers[1])
        lins = enc.layers[0].self_attn.linears
        assert _distinct(lins[0], lins[1]) and _distinct(lins[2], lins[3])
    if stage == "lifter":
        strided = model.Transformer_reduce.model.layers
        assert _distinct(strided[0].self_attn, strided[1].self_attn)
