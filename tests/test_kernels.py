"""Per-backend kernels: the CPU formulations and the plain ones give the same values."""

import os

import jax
import jax.extend.core  # noqa: F401  (jaxprs_in_params)
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aptpose_jax.masking import no_masks
from aptpose_jax.models import ModelConfig, build_model, kernels, layers


def test_resolve_picks_the_backend_defaults_and_the_override_is_checked(monkeypatch):
    monkeypatch.delenv("APTPOSE_KERNELS", raising=False)
    cpu = kernels.resolve()
    assert jax.default_backend() == "cpu"
    assert (cpu.matmul, cpu.dropout, cpu.attention, cpu.tta_two_passes) == (
        "transposed",
        "hash",
        "xla",
        True,
    )
    gpu = kernels.resolve(backend="gpu")
    assert gpu.matmul == "plain" and not gpu.tta_two_passes
    assert kernels.resolve(kernel_set="plain").matmul == "plain"
    monkeypatch.setenv("APTPOSE_KERNELS", "plain")  # the override wins over kernels.set
    assert kernels.resolve(kernel_set="cpu").matmul == "plain"
    monkeypatch.setenv("APTPOSE_KERNELS", "gpu")
    with pytest.raises(ValueError, match="APTPOSE_KERNELS"):
        kernels.resolve()
    monkeypatch.delenv("APTPOSE_KERNELS")
    with pytest.raises(ValueError, match="kernels.attention"):
        kernels.resolve(attention="flash")
    with pytest.raises(ValueError, match="compute_dtype"):
        kernels.resolve(dtype="float16")


def test_precision_means_what_it_says():
    assert kernels.Compute(dtype="float32").precision == jax.lax.Precision.HIGHEST
    assert kernels.Compute(dtype="tf32").precision is None  # the backend's fast dot
    assert kernels.Compute(dtype="tf32").operand_dtype == jnp.float32
    assert kernels.Compute(dtype="bfloat16").operand_dtype == jnp.bfloat16
    x = jnp.ones((2, 8))
    text = str(jax.make_jaxpr(lambda x: kernels.matmul(x, x.T, kernels.Compute()))(x))
    assert "HIGHEST" in text


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("fn", ["transposed_residual_matmul", "cast_matmul"])
def test_custom_vjp_matmuls_equal_the_plain_matmul_and_its_gradients(dtype, fn):
    x = jax.random.normal(jax.random.key(11), (3, 7, 24))
    w = jax.random.normal(jax.random.key(12), (24, 40))
    g = jax.random.normal(jax.random.key(13), (3, 7, 40))
    outs = []
    for f in (getattr(kernels, fn), kernels.plain_matmul):
        y, vjp = jax.vjp(lambda x, w, f=f: f(x, w, dtype), x, w)
        outs.append((y, *vjp(g)))
    np.testing.assert_array_equal(np.asarray(outs[0][0]), np.asarray(outs[1][0]))  # same op
    # float32: the gradient GEMMs may block differently. bfloat16: both round to bf16 at
    # different places (the custom VJPs round the cotangent, autodiff the products), so they
    # agree to bf16 resolution (2^-8) of the largest entry.
    for a, b in zip(outs[0][1:], outs[1][1:], strict=True):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        tol = 1e-5 if dtype == jnp.float32 else 2**-6 * np.abs(b).max()
        np.testing.assert_allclose(a, b, rtol=1e-5 if dtype == jnp.float32 else 0, atol=tol)


def test_batched_matmul_gradients_equal_autodiff():
    a = jax.random.normal(jax.random.key(1), (2, 3, 5, 4))
    b = jax.random.normal(jax.random.key(2), (2, 3, 4, 6))
    g = jax.random.normal(jax.random.key(3), (2, 3, 5, 6))
    ours = jax.vjp(lambda a, b: kernels.batched_matmul(a, b, jnp.float32), a, b)[1](g)
    plain = jax.vjp(lambda a, b: jnp.matmul(a, b, precision="highest"), a, b)[1](g)
    for x, y in zip(ours, plain, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rate", [0.1, 0.5])
@pytest.mark.parametrize("kind", ["hash", "threefry"])
def test_dropout_keeps_one_minus_rate_scales_and_differs_per_seed_and_stream(rate, kind):
    shape = (1000, 1000)
    seed = jnp.array([5, 7], jnp.uint32)
    keep = kernels.dropout_keep_mask(seed, shape, rate, kind)
    assert keep.dtype == jnp.bool_ and keep.shape == shape
    sigma = np.sqrt(rate * (1 - rate) / keep.size)
    assert abs(float(keep.mean()) - (1 - rate)) < 6 * sigma
    # Independent of position: rows and columns keep alike.
    assert abs(float(keep[:, :500].mean()) - float(keep[:, 500:].mean())) < 12 * sigma
    drop = layers.Dropout(rate, compute=kernels.Compute(dropout=kind))
    drop.seed[...] = seed
    x = jnp.ones(shape)
    y = np.asarray(drop(x))
    kept = y[y != 0]
    np.testing.assert_array_equal(kept, np.float32(1.0) * np.float32(1.0 / (1.0 - rate)))
    assert abs(kept.size / y.size - (1 - rate)) < 6 * sigma
    y1 = np.asarray(drop(x, stream=1))  # a second application of the site: a fresh mask
    agree = np.mean((y1 != 0) == (y != 0))
    assert abs(agree - ((1 - rate) ** 2 + rate**2)) < 12 * sigma
    drop.seed[...] = jnp.array([5, 8], jnp.uint32)
    assert not np.array_equal(np.asarray(drop(x)) != 0, y != 0)


def test_hash_dropout_gradient_is_the_same_mask_recomputed():
    x = jax.random.normal(jax.random.key(0), (64, 33))
    seed = jnp.array([3, 9], jnp.uint32)
    y, vjp = jax.vjp(lambda x: layers.hash_dropout(x, seed, 0.25), x)
    (dx,) = vjp(jnp.ones_like(x))
    keep = np.asarray(kernels.hash_keep_mask(seed, x.shape, 0.25))
    np.testing.assert_array_equal(np.asarray(dx), np.where(keep, np.float32(1 / 0.75), 0))
    np.testing.assert_array_equal(
        np.asarray(y), np.where(keep, np.asarray(x) * np.float32(1 / 0.75), 0)
    )


def test_draw_dropout_seeds_gives_every_site_its_own_seed_in_one_call():
    cfg = ModelConfig(stage="lifter", frames=27, layers=2, channel=16, d_hid=32)
    model = build_model(cfg, nnx.Rngs(params=0))
    layers.draw_dropout_seeds(model, jax.random.key(4))
    seeds = np.stack([np.asarray(v) for v in jax.tree.leaves(nnx.state(model, layers.DropoutSeed))])
    assert len(seeds) > 20 and len({tuple(s) for s in seeds}) == len(seeds)
    graphdef, state = nnx.split(model)

    def draw(key):
        m = nnx.merge(graphdef, jax.tree.map(lambda v: v, state))  # fresh Variables here
        layers.draw_dropout_seeds(m, key)

    assert str(jax.make_jaxpr(draw)(jax.random.key(4))).count("random_bits") == 1


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_model_gradients_are_the_same_with_either_kernel_set(dtype):
    x = jax.random.normal(jax.random.key(2), (4, 27, 17, 2))
    masks = no_masks(27)
    results = []
    for choice in ("cpu", "plain"):
        cfg = ModelConfig(stage="lifter", frames=27, layers=2, channel=16, d_hid=32,
                          dropout=0.0, kernels=choice, dtype=dtype)  # fmt: skip
        model = build_model(cfg, nnx.Rngs(params=0))
        model.eval()  # BatchNorm on running statistics: nothing is written while tracing
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss(p, graphdef=graphdef, rest=rest):
            m = nnx.merge(graphdef, p, rest)
            return jnp.mean(m(x, masks)["pose"] ** 2)

        results.append(jax.jit(jax.value_and_grad(loss))(params))
    (la, ga), (lb, gb) = results
    tol = 1e-6 if dtype == "float32" else 1e-2
    assert float(la) == pytest.approx(float(lb), rel=tol)
    for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb), strict=True):
        scale = float(np.abs(np.asarray(b)).max()) or 1.0
        atol = 1e-6 if dtype == "float32" else 2e-2 * scale
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=atol)


def _dot_operand_dtypes(jaxpr) -> list[tuple[str, str]]:
    """Operand dtypes of every dot_general in `jaxpr` and the jaxprs nested in it."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(tuple(str(v.aval.dtype) for v in eqn.invars))
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found += _dot_operand_dtypes(sub)
    return found


def test_bf16_training_step_has_no_float32_dot():
    """compute_dtype=bfloat16: every dot of the forward AND backward pass has bf16 operands."""
    cfg = ModelConfig(stage="lifter", frames=27, layers=2, channel=16, d_hid=32,
                      dtype="bfloat16", kernels="plain")  # fmt: skip
    model = build_model(cfg, nnx.Rngs(params=0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jax.random.normal(jax.random.key(2), (4, 27, 17, 2))

    def loss(p):
        m = nnx.merge(graphdef, p, jax.tree.map(lambda v: v, rest))  # fresh Variables here
        layers.draw_dropout_seeds(m, jax.random.key(0))
        return jnp.mean(m(x, no_masks(27))["pose"] ** 2)

    dots = _dot_operand_dtypes(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
    assert len(dots) > 20
    f32_dots = [d for d in dots if d != ("bfloat16", "bfloat16")]
    assert not f32_dots, f32_dots[:3]


def test_deterministic_option_adds_the_gpu_flags_once(monkeypatch):
    from aptpose_jax import process

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    process.request_deterministic_gpu_ops()
    flags = os.environ["XLA_FLAGS"].split()
    assert flags[0] == "--xla_force_host_platform_device_count=8"
    assert set(process.DETERMINISTIC_XLA_FLAGS) <= set(flags)
    process.request_deterministic_gpu_ops()  # idempotent
    assert len(os.environ["XLA_FLAGS"].split()) == len(flags)


def test_compile_cache_setting(monkeypatch, tmp_path):
    from aptpose_jax import process

    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "env"))
    assert process.compile_cache_dir("auto") == tmp_path / "env"
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert process.compile_cache_dir("auto") == tmp_path / "xdg" / "aptpose_jax" / "xla"
    assert process.compile_cache_dir("off") is None
    assert process.compile_cache_dir(str(tmp_path / "mine")) == tmp_path / "mine"
