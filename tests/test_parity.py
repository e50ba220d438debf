"""Numerical parity of the converted models with the official PyTorch fixtures (F = 27).

Every output and intermediate of `reference_outputs_f27.npz` is compared with a relative error
||ours - ref|| / ||ref|| <= 1e-5 (the fused SEM features are ~1e-3, Q28, so relative errors).
"""

import jax.numpy as jnp
import numpy as np
import pytest

from aptpose_jax.convert import load_pth
from aptpose_jax.convert.mapping import torch_key
from aptpose_jax.masking import Masks
from aptpose_jax.models.io import model_arrays

RTOL = 1e-5
LEFT, RIGHT = [4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16]


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


def ref_to_bfjd(a):
    """Reference layout (B, D, F, J, 1) -> joints-last (B, F, J, D)."""
    return np.asarray(a)[..., 0].transpose(0, 2, 3, 1)


def unflip(a):
    """Inverse of the input flip on joints-last 3D/2D arrays: negate x, swap left/right."""
    a = np.array(a)
    a[..., 0] *= -1
    a[..., LEFT + RIGHT, :] = a[..., RIGHT + LEFT, :]
    return a


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    return dict(np.load(fixtures_dir / "reference_outputs_f27.npz"))


@pytest.fixture(scope="module")
def masks(ref):
    b = {k: jnp.asarray(ref[k] > 0.5) for k in ref if k.startswith("mask_")}
    return Masks(
        b["mask_temporal"], b["mask_spatial"], b["mask_bone"], b["mask_limb"], b["mask_halfbody"]
    )


@pytest.fixture(scope="module")
def stage2(fixtures_dir):
    return load_pth(fixtures_dir / "stage2_f27.pth")


@pytest.fixture(scope="module")
def stage1(fixtures_dir):
    return load_pth(fixtures_dir / "stage1_f27.pth", temporal_ratio=0.5)


def test_inferred_configs(stage1, stage2, ref):
    (m1, c1), (m2, c2) = stage1, stage2
    for c in (c1, c2):
        assert (c.frames, c.layers, c.channel, c.d_hid, c.sem_layers, c.n_joints) == (
            27,
            3,
            64,
            128,
            1,
            17,
        )
    assert (c1.stage, c2.stage) == ("pretrain", "lifter")
    assert c1.n_visible == 14 and not c2.refine
    assert sum(v.size for k, v in model_arrays(m1).items() if k[-1] not in ("mean", "var")) == (
        309_802
    )
    assert sum(v.size for k, v in model_arrays(m2).items() if k[-1] not in ("mean", "var")) == (
        456_654
    )


def test_dataparallel_file_gives_identical_parameters(stage2, fixtures_dir):
    plain = model_arrays(stage2[0])
    dp = model_arrays(load_pth(fixtures_dir / "stage2_f27_dataparallel.pth")[0])
    assert plain.keys() == dp.keys()
    for k in plain:
        np.testing.assert_array_equal(plain[k], dp[k], err_msg=torch_key(k))


def _check_stage2(out, ref, prefix, errs):
    names = {
        "pose": "out_3d",
        "pose_seq": "out_3d_vte",
        "bones": "out_bone",
        "bones_seq": "out_bone_vte",
    }
    for ours, theirs in names.items():
        key = prefix.format(theirs)
        errs[key] = rel_err(out[ours], ref_to_bfjd(ref[key]))


def test_stage2_outputs_and_intermediates(stage2, ref, masks):
    model, _ = stage2
    x = jnp.asarray(ref["input_2d_bfjc"])
    out = model(x, masks, return_intermediates=True)
    inter, errs = out["intermediates"], {}
    for k in range(1, 5):  # SEM tensors are channels-first (B, chan, F) in the fixtures
        errs[f"stage2_sem{k}_in"] = rel_err(
            inter[f"sem{k}_in"].transpose(0, 2, 1), ref[f"stage2_sem{k}_in"]
        )
        errs[f"stage2_sem{k}_out"] = rel_err(
            inter[f"sem{k}_out"].transpose(0, 2, 1), ref[f"stage2_sem{k}_out"]
        )
    for k in ("fused", "vte_features", "strided_features"):
        errs[f"stage2_{k}"] = rel_err(inter[k], ref[f"stage2_{k}"])
    _check_stage2(out, ref, "stage2_{}", errs)
    # Flipped input with the same masks, and flip TTA of the two pose outputs (plain numpy).
    flip = model(jnp.asarray(ref_to_bfjd(ref["input_2d_flip"])), masks)
    _check_stage2(flip, ref, "stage2_{}_on_flip", errs)
    for ours, theirs in (("pose", "out_3d"), ("pose_seq", "out_3d_vte")):
        tta = (np.asarray(out[ours]) + unflip(flip[ours])) / 2
        errs[f"stage2_{theirs}_tta"] = rel_err(tta, ref_to_bfjd(ref[f"stage2_{theirs}_tta"]))
    # Joint mask all False (fine-tuning with -smn 0): the joint token never appears.
    smn0 = masks.replace(joint=jnp.zeros_like(masks.joint))
    _check_stage2(model(x, smn0), ref, "stage2_smn0_{}", errs)
    print("\nstage II relative errors:", {k: f"{v:.1e}" for k, v in errs.items()})
    assert len(errs) == 25
    assert max(errs.values()) <= RTOL, errs


def test_stage1_outputs_and_intermediates(stage1, ref, masks):
    model, _ = stage1
    out = model(jnp.asarray(ref["input_2d_bfjc"]), masks, return_intermediates=True)
    inter, errs = out["intermediates"], {}
    for k in range(1, 5):
        errs[f"stage1_sem{k}_in"] = rel_err(
            inter[f"sem{k}_in"].transpose(0, 2, 1), ref[f"stage1_sem{k}_in"]
        )
        errs[f"stage1_sem{k}_out"] = rel_err(
            inter[f"sem{k}_out"].transpose(0, 2, 1), ref[f"stage1_sem{k}_out"]
        )
    for k in ("fused", "enc_out", "enc_ln", "enc_to_dec", "dec_in", "dec_out"):
        errs[f"stage1_{k}"] = rel_err(inter[k], ref[f"stage1_{k}"])
    errs["stage1_output_2d"] = rel_err(out["recon"], ref_to_bfjd(ref["stage1_output_2d"]))
    flip = model(jnp.asarray(ref_to_bfjd(ref["input_2d_flip"])), masks)["recon"]
    errs["stage1_output_2d_on_flip"] = rel_err(flip, ref_to_bfjd(ref["stage1_output_2d_on_flip"]))
    tta = (np.asarray(out["recon"]) + unflip(flip)) / 2
    errs["stage1_output_2d_tta"] = rel_err(tta, ref_to_bfjd(ref["stage1_output_2d_tta"]))
    print("\nstage I relative errors:", {k: f"{v:.1e}" for k, v in errs.items()})
    assert len(errs) == 17
    assert max(errs.values()) <= RTOL, errs


def test_stage1_rejects_temporal_mask_of_other_size(stage1, ref, masks):
    model, _ = stage1
    wrong = masks.replace(temporal=jnp.zeros_like(masks.temporal))
    with pytest.raises(ValueError, match="n_visible"):
        model(jnp.asarray(ref["input_2d_bfjc"]), wrong)


def test_per_sample_masks_equal_shared_masks(stage2, ref, masks):
    model, _ = stage2
    x = jnp.asarray(ref["input_2d_bfjc"])
    tile = lambda m: jnp.broadcast_to(m, (x.shape[0], *m.shape))  # noqa: E731
    per_sample = masks.replace(
        joint=tile(masks.joint),
        bone=tile(masks.bone),
        limb=tile(masks.limb),
        half_body=tile(masks.half_body),
    )
    a, b = model(x, masks), model(x, per_sample)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7)
