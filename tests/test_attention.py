"""models/attention.py: the Pallas kernels (interpreted on CPU) equal the XLA formulation, and
the counter-hash dropout mask has the right rate, scaling, independence and batch offsets."""

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from aptpose_jax.models import kernels
from aptpose_jax.models.attention import attention, available_impls, keep_mask
from aptpose_jax.sharding import make_mesh

HIGHEST = jax.lax.Precision.HIGHEST
SEED = jnp.array([0x12345678, 0x9ABCDEF0], jnp.uint32)
SHAPE = (2, 4, 20, 8)  # (B, H, T, D): T pads to 32 (two query blocks of 16), D pads to 16


def _qkv(shape=SHAPE, dtype=jnp.float32, seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    q, k, v, w = (jax.random.normal(key, shape) for key in keys)
    return q.astype(dtype), k.astype(dtype), v.astype(dtype), w


def _out_and_grads(q, k, v, w, **kw):
    """attention and the gradients of sum(out * w) wrt q, k, v, in one jit."""

    def f(q, k, v):
        return attention(q, k, v, precision=HIGHEST, **kw)

    @jax.jit
    def run(q, k, v):
        out, vjp = jax.vjp(f, q, k, v)
        return out, vjp(w)

    return run(q, k, v)


def _mask_from(impl, rate, seed=SEED, b=2, h=4, t=16, batch_offset=0):
    """The dropout mask an impl applies, read back through attention itself: q = k = 0 gives
    p = 1/T everywhere and v = I gives out = dropout(p), so out * T * (1 - r) is the mask."""
    zeros = jnp.zeros((b, h, t, t))
    eye = jnp.broadcast_to(jnp.eye(t), (b, h, t, t))
    out = attention(
        zeros, zeros, eye, dropout_rate=rate, seed=seed, impl=impl, precision=HIGHEST,
        batch_offset=batch_offset,
    )  # fmt: skip
    return np.asarray(out) * t * (1.0 - rate), np.asarray(out)


@pytest.mark.parametrize("rate", [0.0, 0.25])
def test_pallas_matches_xla_forward_and_grads(rate):
    q, k, v, w = _qkv()
    ref_out, ref_grads = _out_and_grads(q, k, v, w, dropout_rate=rate, seed=SEED, impl="xla")
    out, grads = _out_and_grads(q, k, v, w, dropout_rate=rate, seed=SEED, impl="pallas")
    assert out.shape == SHAPE and out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref_out, atol=1e-5, rtol=1e-5)
    for g, ref in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(g, ref, atol=2e-5, rtol=1e-5)
    if rate:  # dropout really acted: the no-dropout output differs
        plain = attention(q, k, v, dropout_rate=0.0, seed=SEED, impl="xla", precision=HIGHEST)
        assert np.abs(np.asarray(plain) - np.asarray(ref_out)).max() > 1e-2


def test_in_kernel_mask_is_the_xla_mask_scaled():
    rate = 0.3
    mask_p, out_p = _mask_from("pallas", rate)
    mask_x, _ = _mask_from("xla", rate)
    np.testing.assert_allclose(mask_p, mask_x, atol=1e-5)
    keep = np.asarray(keep_mask(SEED, mask_p.shape, rate))
    np.testing.assert_allclose(mask_p, keep.astype(np.float32), atol=1e-5)  # 0 or 1 exactly
    kept = out_p[keep]
    np.testing.assert_allclose(kept, 1.0 / 16 / (1.0 - rate), rtol=1e-6)  # 1/(1-r) scaling
    assert np.all(out_p[~keep] == 0.0)


def test_mask_is_the_kernels_counter_hash():
    """Same bits as kernels.hash_keep_mask over the flat index (one hash in the project)."""
    key, shape, rate = jax.random.key(7), (2, 3, 5, 5), 0.4
    seed = jax.random.bits(key, (2,), jnp.uint32)
    expected = kernels.hash_keep_mask(seed, shape, rate)
    np.testing.assert_array_equal(keep_mask(seed, shape, rate), expected)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_keep_fraction_and_independence(rate):
    shape = (8, 8, 64, 64)
    m = np.asarray(keep_mask(SEED, shape, rate)).astype(np.float64)
    n = m.size
    assert abs(m.mean() - (1.0 - rate)) < 5 * math.sqrt(rate * (1 - rate) / n)

    def corr(a, b):
        return abs(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    bound = 5 / math.sqrt(n / 8)
    other_seed = np.asarray(keep_mask(SEED + jnp.uint32(1), shape, rate)).astype(np.float64)
    assert not np.array_equal(m, other_seed)
    assert corr(m, other_seed) < 5 / math.sqrt(n)
    assert not np.array_equal(m[:, 0], m[:, 1])  # heads
    assert corr(m[:, 0], m[:, 1]) < bound
    assert corr(m[0], m[1]) < bound  # batch elements
    assert corr(m[..., :-1, :], m[..., 1:, :]) < bound / 2  # neighbouring queries
    assert corr(m[..., :-1], m[..., 1:]) < bound / 2  # neighbouring keys


@pytest.mark.parametrize("impl", ["xla", "pallas"])
def test_batch_offset_is_slicing_a_bigger_batch(impl):
    rate = 0.5
    whole, _ = _mask_from("xla", rate, b=4)
    part, _ = _mask_from(impl, rate, b=2, batch_offset=2)
    np.testing.assert_allclose(part, whole[2:], atol=1e-5)
    assert not np.allclose(part, whole[:2])


def test_bf16_close_to_float32():
    q, k, v, w = _qkv()
    ref_out, ref_grads = _out_and_grads(q, k, v, w, dropout_rate=0.25, seed=SEED, impl="xla")
    qb, kb, vb = (x.astype(jnp.bfloat16) for x in (q, k, v))
    out, grads = _out_and_grads(qb, kb, vb, w, dropout_rate=0.25, seed=SEED, impl="pallas")
    assert out.dtype == jnp.float32 and all(g.dtype == jnp.bfloat16 for g in grads)
    np.testing.assert_allclose(out, ref_out, atol=5e-2, rtol=5e-2)
    for g, ref in zip(grads, ref_grads, strict=True):
        scale = float(jnp.abs(ref).max())
        np.testing.assert_allclose(g.astype(jnp.float32), ref, atol=3e-2 * scale)


def test_no_dropout_without_seed_or_rate():
    q, k, v, _ = _qkv()
    plain = attention(q, k, v, impl="xla", precision=HIGHEST)
    no_seed = attention(q, k, v, dropout_rate=0.5, seed=None, impl="xla", precision=HIGHEST)
    np.testing.assert_array_equal(plain, no_seed)


def test_refusals():
    big = jax.ShapeDtypeStruct((9095, 8, 243, 243), jnp.float32)  # 2**32 / (8 * 243**2) < 9095
    with pytest.raises(ValueError, match="2\\*\\*32"):
        jax.eval_shape(lambda x: attention(x, x, x, dropout_rate=0.1, seed=SEED), big)
    small = jax.ShapeDtypeStruct((9000, 8, 243, 243), jnp.float32)
    jax.eval_shape(lambda x: attention(x, x, x, dropout_rate=0.1, seed=SEED), small)
    with pytest.raises(ValueError, match="2\\*\\*32"):  # the offset counts
        jax.eval_shape(
            lambda x: attention(x, x, x, dropout_rate=0.1, seed=SEED, batch_offset=100), small
        )
    q, k, v, _ = _qkv()
    with pytest.raises(ValueError, match="bfloat16"):
        attention(q, k, v, impl="cudnn")
    qb = q.astype(jnp.bfloat16)
    with pytest.raises(ValueError, match="evaluation only"):
        attention(qb, qb, qb, dropout_rate=0.1, seed=SEED, impl="cudnn")
    with pytest.raises(ValueError, match="impl"):
        attention(q, k, v, impl="flash")
    assert available_impls("cpu") == ("xla", "pallas")
    assert "cudnn" in available_impls("gpu") and available_impls("tpu") == ("xla",)


@pytest.mark.parametrize("impl", ["xla", "pallas"])
def test_shard_map_over_the_data_axis_equals_unsharded(impl):
    mesh = make_mesh()
    assert mesh.devices.size == 8
    q, k, v, _ = _qkv((8, 2, 12, 8))
    kw = dict(dropout_rate=0.3, seed=SEED, impl=impl, precision=HIGHEST)
    rows = NamedSharding(mesh, PartitionSpec("data"))
    qs, ks, vs = (jax.device_put(x, rows) for x in (q, k, v))
    sharded = jax.jit(lambda q, k, v: attention(q, k, v, mesh=mesh, **kw))(qs, ks, vs)
    unsharded = attention(q, k, v, **kw)
    np.testing.assert_allclose(sharded, unsharded, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "dtype, precision, expected",
    [(jnp.float32, HIGHEST, "ieee"), (jnp.float32, jax.lax.Precision.DEFAULT, "tf32"),
     (jnp.bfloat16, None, "bf16")],
)  # fmt: skip
def test_pallas_lowers_to_triton(dtype, precision, expected, monkeypatch, capsys):
    """Without a GPU: export for CUDA runs JAX's Triton lowering of the three kernels (forward,
    dQ, dK/dV); float32 dots are IEEE with HIGHEST (Triton prints no inputPrecision then), TF32
    with DEFAULT; bfloat16 dots take bfloat16 operands. PTX compilation is not covered."""
    from jax.experimental import pallas as pl

    monkeypatch.setattr(pl, "pallas_call", functools.partial(pl.pallas_call, debug=True))
    x = jax.ShapeDtypeStruct((2, 8, 243, 32), dtype)
    w = jax.ShapeDtypeStruct((2, 8, 243, 32), jnp.float32)

    def grads(q, k, v, w):
        def loss(q, k, v):
            out = attention(
                q, k, v, dropout_rate=0.1, seed=SEED, impl="pallas", precision=precision,
                interpret=False,
            )  # fmt: skip
            return jnp.sum(out * w)

        return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

    triton = jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
    exported = jax.export.export(jax.jit(grads), platforms=["cuda"], disabled_checks=[triton])
    text = exported(x, x, x, w).mlir_module()
    assert text.count("__gpu$xla.gpu.triton") == 3
    dots = re.findall(r"tt\.dot [^\n]*", capsys.readouterr().out)
    assert len(dots) == 9  # forward 2, dQ 3, dK/dV 4
    if expected == "ieee":
        assert not any("inputPrecision" in d for d in dots)
    elif expected == "tf32":
        assert all("inputPrecision = tf32" in d for d in dots)
    else:
        assert all("xbf16> *" in d for d in dots)
