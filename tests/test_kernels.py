"""Per-backend kernels: the CPU formulations and the plain ones give the same values."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aptpose_jax.masking import no_masks
from aptpose_jax.models import ModelConfig, build_model, kernels, layers


def test_auto_choice_is_the_cpu_kernels_on_cpu_and_the_override_is_checked(monkeypatch):
    monkeypatch.delenv("APTPOSE_KERNELS", raising=False)
    assert jax.default_backend() == "cpu" and kernels.kernel_choice() == "cpu"
    monkeypatch.setenv("APTPOSE_KERNELS", "plain")
    assert kernels.kernel_choice() == "plain"
    monkeypatch.setenv("APTPOSE_KERNELS", "gpu")
    with pytest.raises(ValueError, match="APTPOSE_KERNELS"):
        kernels.kernel_choice()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_custom_vjp_matmul_equals_plain_matmul_and_its_gradients(dtype):
    x = jax.random.normal(jax.random.key(11), (3, 7, 24))
    w = jax.random.normal(jax.random.key(12), (24, 40))
    g = jax.random.normal(jax.random.key(13), (3, 7, 40))
    outs = []
    for fn in (kernels.transposed_residual_matmul, kernels.plain_matmul):
        y, vjp = jax.vjp(lambda x, w, fn=fn: fn(x, w, dtype), x, w)
        outs.append((y, *vjp(g)))
    np.testing.assert_array_equal(np.asarray(outs[0][0]), np.asarray(outs[1][0]))  # same op
    # float32: the gradient GEMMs may block differently. bfloat16: autodiff of the plain
    # matmul rounds the gradients to bf16 (the custom VJP keeps float32 accumulations), so
    # they agree to bf16 resolution (2^-8) of the largest entry.
    for a, b in zip(outs[0][1:], outs[1][1:], strict=True):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        tol = 1e-5 if dtype == jnp.float32 else 2**-7 * np.abs(b).max()
        np.testing.assert_allclose(a, b, rtol=1e-5 if dtype == jnp.float32 else 0, atol=tol)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_both_dropout_masks_keep_one_minus_rate_and_scale_alike(rate):
    shape = (1000, 1000)
    x = jnp.ones(shape)
    for choice in ("cpu", "plain"):
        keep = kernels.dropout_keep_mask(jax.random.key(5), shape, rate, choice)
        assert keep.dtype == jnp.bool_ and keep.shape == shape
        n = keep.size
        frac = float(keep.mean())
        sigma = np.sqrt(rate * (1 - rate) / n)
        assert abs(frac - (1 - rate)) < 6 * sigma, (choice, frac)
        # Independent of position: rows and columns keep alike.
        assert abs(float(keep[:, :500].mean()) - float(keep[:, 500:].mean())) < 12 * sigma
    for choice in ("cpu", "plain"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("APTPOSE_KERNELS", choice)
            drop = layers.Dropout(rate, rngs=nnx.Rngs(dropout=0))
            y = np.asarray(drop(x))
        kept = y[y != 0]
        np.testing.assert_array_equal(kept, np.float32(1.0) * np.float32(1.0 / (1.0 - rate)))
        assert abs(kept.size / y.size - (1 - rate)) < 6 * np.sqrt(rate * (1 - rate) / y.size)


def test_model_gradients_are_the_same_with_either_kernel_set(monkeypatch):
    cfg = ModelConfig(stage="lifter", frames=27, layers=2, channel=16, d_hid=32, dropout=0.0)
    model = build_model(cfg, nnx.Rngs(params=0, dropout=1))
    model.eval()  # BatchNorm on running statistics: nothing is written while tracing
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jax.random.normal(jax.random.key(2), (4, 27, 17, 2))
    masks = no_masks(27)

    def loss(p):
        m = nnx.merge(graphdef, p, rest)
        return jnp.mean(m(x, masks)["pose"] ** 2)

    grads = []
    for choice in ("cpu", "plain"):
        monkeypatch.setenv("APTPOSE_KERNELS", choice)
        grads.append(jax.jit(jax.value_and_grad(loss))(params))  # traced anew: new choice
    (la, ga), (lb, gb) = grads
    assert float(la) == pytest.approx(float(lb), rel=1e-6)
    for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_deterministic_option_adds_the_gpu_flags_only_before_the_backend_starts(monkeypatch):
    from jax._src import xla_bridge

    from aptpose_jax import sharding

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    monkeypatch.setattr(xla_bridge, "backends_are_initialized", lambda: False)
    sharding.request_deterministic_gpu_ops()
    flags = os.environ["XLA_FLAGS"].split()
    assert flags[0] == "--xla_force_host_platform_device_count=8"
    assert set(sharding.DETERMINISTIC_XLA_FLAGS) <= set(flags)
    sharding.request_deterministic_gpu_ops()  # idempotent
    assert len(os.environ["XLA_FLAGS"].split()) == len(flags)
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setattr(xla_bridge, "backends_are_initialized", lambda: True)
    sharding.request_deterministic_gpu_ops()  # too late: warns, changes nothing
    assert os.environ["XLA_FLAGS"] == ""
