"""Training-mode parity with the official PyTorch code (`reference_train_f27.{npz,json}`).

One deterministic training step per stage (dropout at p=0, BatchNorm with batch statistics, the
fixture's masks and targets) goes through `steps.make_train_step`, the function training uses,
and is compared array by array with the reference: ||ours - ref|| / ||ref|| <= 1e-5 for the loss
(and the four Stage II terms), the gradient of every parameter, the BatchNorm running statistics
after the forward and every parameter after one AMSGrad step at lr 1e-3. A second test compares
the loss distribution over dropout keys at p=0.1 with the reference's 256 torch seeds.

Two facts shape these tests (both are findings, not tolerances):

* The fixture's Stage II bone terms use bone vectors of the OPPOSITE sign (child - parent) to the
  official `get_BoneVecbypose3d` (parent - child, Q12), which the evaluation fixture and our
  `losses.bone_vectors` follow (`test_losses_metrics.test_lifter_loss_terms`). With the official
  sign every pose term, BatchNorm statistic and pose-head gradient matches, and the bone terms
  do not; with the fixture's sign everything matches. `test_fixture_bone_sign` pins that down;
  the other Stage II tests feed the fixture's sign through `StepConfig.bone_pairs`.
* Some parameters have an exactly zero gradient in training mode: biases feeding a batch-
  statistics BatchNorm (the mean is subtracted), the attention key biases (softmax is shift-
  invariant) and, in Stage II, the bias of the strided transformer's last feed-forward (whose
  output only feeds the BatchNorm heads). Both sides hold float32 rounding noise (~1e-8) there,
  so those are checked to be negligible on both sides, and their AMSGrad step to stay within lr.
"""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aptpose_jax import losses, steps
from aptpose_jax.convert import load_pth
from aptpose_jax.convert.mapping import to_torch_layout, torch_key
from aptpose_jax.datasets.skeleton import H36M_BONE_PAIRS
from aptpose_jax.masking import Masks, MaskSpec
from aptpose_jax.optim import torch_amsgrad

RTOL = 1e-5
# The reference's own float32 rounding exceeds 1e-5 on four small Stage II gradients (the last
# strided layer's V/O biases, layer 1's w_2 bias, a norm bias: 1.1-1.45e-5 from a float64 run of
# our model on the same float32 weights, while our float32 gradients are within 7.1e-6 of it).
GRAD_RTOL = 2e-5
NOISE_FLOOR = 1e-7  # |gradient| below this times the largest one: rounding noise of a zero
LR = 1e-3
B1 = 0.9  # torch_amsgrad's default, as in the reference optimiser
FIXTURE_BONE_PAIRS = tuple((b, a) for a, b in H36M_BONE_PAIRS)  # child - parent (see above)
STAGES = {"stage1": ("stage1_f27.pth", "pretrain"), "stage2": ("stage2_f27.pth", "lifter")}
# Parameters whose exact training-mode gradient is zero (module docstring).
ZERO_GRAD = re.compile(
    r"(encoder\d\.(fc_1|layers\.\d+\.w[12])\.bias"
    r"|self_attn\.linears\.1\.bias"
    r"|Transformer_reduce\.model\.layers\.2\.feed_forward\.w_2\.bias"
    r"|Transformer_dec\.model\.layers\.1\.feed_forward\.w_2\.bias)$"
)


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    return dict(np.load(fixtures_dir / "reference_outputs_f27.npz"))


@pytest.fixture(scope="module")
def train_ref(fixtures_dir):
    npz = dict(np.load(fixtures_dir / "reference_train_f27.npz"))
    return npz, json.loads((fixtures_dir / "reference_train_f27.json").read_text())


@pytest.fixture(scope="module")
def batch(ref):
    m = {k: jnp.asarray(ref[k] > 0.5) for k in ref if k.startswith("mask_")}
    masks = Masks(
        m["mask_temporal"], m["mask_spatial"], m["mask_bone"], m["mask_limb"], m["mask_halfbody"]
    )
    return {
        "input_2d": jnp.asarray(ref["input_2d_bfjc"]),
        "gt_3d": jnp.asarray(ref["stage2_gt_3d"]),
        "masks": masks,
    }


def _train_step(fixtures_dir, stage: str, dropout: float, bone_pairs=FIXTURE_BONE_PAIRS):
    """(initial TrainState, un-jitted train step) for the fixture weights of `stage`."""
    pth, kind = STAGES[stage]
    ratio = {"temporal_ratio": 0.5} if kind == "pretrain" else {}
    model, _ = load_pth(fixtures_dir / pth, dropout=dropout, **ratio)
    model.train()
    graphdef, params, batch_stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    spec = MaskSpec(frames=27, temporal_ratio=0.5 if kind == "pretrain" else 0.0)
    cfg = steps.StepConfig(stage=kind, mask_spec=spec, bone_pairs=tuple(bone_pairs))
    tx = torch_amsgrad()
    state = steps.TrainState(params, batch_stats, tx.init(params), jnp.zeros((), jnp.int32))
    return state, steps.make_train_step(graphdef, rest, cfg, tx)


def _torch_flat(tree) -> dict[str, np.ndarray]:
    """NNX state -> {torch key: array in torch layout} (the converter's key map)."""
    return {
        torch_key(tuple(p)): to_torch_layout(torch_key(tuple(p)), np.asarray(v.get_value()))
        for p, v in nnx.to_flat_state(tree)
    }


@pytest.fixture(scope="module", params=["stage1", "stage2"])
def one_step(request, fixtures_dir, batch):
    stage = request.param
    state, train_step = _train_step(fixtures_dir, stage, dropout=0.0)
    before = _torch_flat(state.params)
    new, metrics = jax.jit(train_step)(state, batch, jax.random.key(0), LR)
    # One AMSGrad step from zero moments leaves mu = (1 - b1) * grad: the gradient the step used.
    grads = {k: v / (1 - B1) for k, v in _torch_flat(new.opt_state.mu).items()}
    return stage, before, new, metrics, grads


def _section(npz, prefix: str) -> dict:
    """The fixture arrays under `prefix`, keyed by the rest of their name (a torch key)."""
    return {k[len(prefix) :]: v for k, v in npz.items() if k.startswith(prefix)}


def test_loss_and_terms(one_step, train_ref):
    stage, _, _, metrics, _ = one_step
    npz, _ = train_ref
    errs = {"loss": rel_err(metrics["loss"], npz[f"{stage}_train_loss"])}
    if stage == "stage2":
        names = ("pose_seq", "pose", "bones_seq", "bones")
        for i, name in enumerate(names):
            errs[name] = rel_err(metrics[f"loss_{name}"], npz["stage2_train_loss_terms"][i])
    print(f"\n{stage} loss relative errors:", {k: f"{v:.1e}" for k, v in errs.items()})
    assert max(errs.values()) <= RTOL, errs


def test_gradients(one_step, train_ref):
    stage, _, _, _, grads = one_step
    npz, meta = train_ref
    ref_grads = _section(npz, f"{stage}_grad/")
    no_grad = set(meta[stage]["params_without_grad"])  # the never-applied final norms (Q6)
    assert set(ref_grads) | no_grad == set(grads) and not set(ref_grads) & no_grad
    for k in no_grad:
        assert not np.any(grads[k]), k
    scale = max(np.abs(g).max() for g in ref_grads.values())
    errs, zero = {}, []
    for k, g in ref_grads.items():
        if ZERO_GRAD.search(k):  # exactly zero: rounding noise on both sides
            zero.append(k)
            assert np.abs(g).max() <= 1e-6 * scale and np.abs(grads[k]).max() <= 1e-6 * scale, k
        else:
            errs[k] = rel_err(grads[k], g)
    worst = sorted(errs.items(), key=lambda kv: -kv[1])[:3]
    print(f"\n{stage}: {len(errs)} gradients, worst {worst}; {len(zero)} exactly-zero ones")
    assert len(zero) == (18 if stage == "stage1" else 19)  # K biases, SEM biases, 1 more
    assert max(errs.values()) <= GRAD_RTOL, worst


def test_batchnorm_statistics_after_forward(one_step, train_ref):
    stage, _, new, _, _ = one_step
    npz, _ = train_ref
    ours = _torch_flat(new.batch_stats)
    ref_stats = _section(npz, f"{stage}_bn_after/")
    assert set(ours) == set(ref_stats)
    errs = {k: rel_err(ours[k], v) for k, v in ref_stats.items()}
    assert max(errs.values()) <= RTOL, max(errs.items(), key=lambda kv: kv[1])


def test_parameters_after_one_amsgrad_step(one_step, train_ref):
    stage, before, new, _, grads = one_step
    npz, meta = train_ref
    ours = _torch_flat(new.params)
    ref_after = _section(npz, f"{stage}_param_after/")
    no_grad = set(meta[stage]["params_without_grad"])  # torch's Adam skips them; so do we
    assert set(ours) == set(ref_after) | no_grad
    for k in no_grad:
        np.testing.assert_array_equal(ours[k], before[k], err_msg=k)
    floor = NOISE_FLOOR * max(np.abs(npz[f"{stage}_grad/{k}"]).max() for k in ref_after)
    errs, step_errs, n_noise = {}, {}, 0
    for k, theirs in ref_after.items():
        g_ref = npz[f"{stage}_grad/{k}"]
        # Entries whose exact gradient is zero hold rounding noise, which AMSGrad normalises
        # into a step of arbitrary sign: only its size (<= lr) is defined, on both sides.
        noise = (np.abs(g_ref) <= floor) & (np.abs(grads[k]) <= floor)
        if ZERO_GRAD.search(k):
            noise[...] = True
        n_noise += int((noise & ((g_ref != 0) | (grads[k] != 0))).sum())
        for after in (ours[k], theirs):
            assert np.all(np.abs(after - before[k])[noise] <= LR * (1 + 1e-3)), k
        ours_k, theirs_k = (np.where(noise, before[k], a) for a in (ours[k], theirs))
        errs[k] = rel_err(ours_k, theirs_k)
        if not noise.all():  # the step itself (after - before), not only the parameters
            step_errs[k] = rel_err(ours_k - before[k], theirs_k - before[k])
    worst = max(step_errs.items(), key=lambda kv: kv[1])
    print(f"\n{stage}: {n_noise} noise entries; worst step error {worst}")
    assert max(errs.values()) <= RTOL, max(errs.items(), key=lambda kv: kv[1])
    assert worst[1] <= 1e-3, worst


def test_fixture_bone_sign(fixtures_dir, batch, train_ref):
    """The train fixture's bone terms follow child - parent, the official code parent - child."""
    npz, _ = train_ref
    want = npz["stage2_train_loss_terms"]
    model, _ = load_pth(fixtures_dir / "stage2_f27.pth", dropout=0.0)
    model.train()
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda st: nnx.merge(graphdef, st)(batch["input_2d"], batch["masks"]))
    out = forward(state)  # training mode: BatchNorm with batch statistics
    for pairs, name in ((H36M_BONE_PAIRS, "official"), (FIXTURE_BONE_PAIRS, "fixture")):
        _, terms = losses.lifter_loss(out, batch["gt_3d"], bone_pairs=pairs)
        got = np.array([terms[k] for k in ("pose_seq", "pose", "bones_seq", "bones")])
        assert rel_err(got[:2], want[:2]) <= RTOL  # the pose terms do not depend on the sign
        if name == "fixture":
            assert rel_err(got[2:], want[2:]) <= RTOL
        else:  # fails once the fixture is regenerated with the official sign
            assert rel_err(got[2:], want[2:]) > 1e-3


def _dropout_losses(fixtures_dir, batch, stage: str, rate: float, n_keys: int) -> np.ndarray:
    state, train_step = _train_step(fixtures_dir, stage, dropout=rate)
    keys = jax.random.split(jax.random.key(8), n_keys)
    loss = jax.jit(jax.vmap(lambda k: train_step(state, batch, k, LR)[1]["loss"]))
    return np.asarray(loss(keys), np.float64)


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_dropout_loss_statistics(fixtures_dir, batch, train_ref, stage):
    """Dropout sites, rate and scaling: the mean loss over 256 keys agrees with 256 torch seeds.

    Checked by hand with wrong rates (256 keys): Stage I fails at 0.2 (z = -5.2). The Stage II
    mean hardly depends on the rate (z = -0.3 at 0.2, -1.3 at 0.3, -3.3 at 0.5, while the
    reference's own standard error is 0.0045), so there only a grossly wrong rate fails, and
    the spread check below catches dropout switched off.
    """
    npz, _ = train_ref
    theirs = np.asarray(npz[f"{stage}_dropout_losses"], np.float64)
    ours = _dropout_losses(fixtures_dir, batch, stage, 0.1, 256)
    se = np.sqrt(ours.var(ddof=1) / ours.size + theirs.var(ddof=1) / theirs.size)
    z = (ours.mean() - theirs.mean()) / se
    print(f"\n{stage}: ours {ours.mean():.5f} +- {ours.std():.5f}, ref {theirs.mean():.5f} "
          f"+- {theirs.std():.5f}, z = {z:.2f}")  # fmt: skip
    assert abs(z) < 3
    # Dropout is really on: the spread is the reference's, not that of a deterministic model.
    assert 0.5 < ours.std() / theirs.std() < 2.0
