"""Tests for aptpose_jax.masking: counts, allowed joints, groups, shapes, determinism, jit."""

import dataclasses
import itertools

import jax
import numpy as np
import pytest

from aptpose_jax.datasets.skeleton import (
    H36M_BONE_PAIRS,
    H36M_JOINTS_LEFT,
    H36M_JOINTS_RIGHT,
    MPI3DHP_JOINTS_LEFT,
    MPI3DHP_JOINTS_RIGHT,
)
from aptpose_jax.masking import MaskSpec, draw_masks, masks_from_arrays, no_masks

F = 27
SPEC = MaskSpec(frames=F, temporal_ratio=0.5, joints_per_frame=2, bones_per_frame=1)
LIMBS = [
    frozenset(H36M_JOINTS_LEFT[:3]),
    frozenset(H36M_JOINTS_LEFT[3:]),
    frozenset(H36M_JOINTS_RIGHT[:3]),
    frozenset(H36M_JOINTS_RIGHT[3:]),
]
HALVES = [frozenset(H36M_JOINTS_LEFT), frozenset(H36M_JOINTS_RIGHT)]
BONES = [frozenset(p) for p in H36M_BONE_PAIRS]


def _np(masks):
    return jax.tree.map(np.asarray, masks)


# Jitted once per spec: much faster than eager op-by-op dispatch on CPU.
_draw = jax.jit(draw_masks, static_argnums=(1, 2))


@pytest.fixture(scope="module")
def shared():
    return _np(draw_masks(jax.random.key(0), SPEC))


@pytest.fixture(scope="module")
def many():
    """400 frames: enough draws to see every joint, bone, limb and half-body."""
    return _np(_draw(jax.random.key(1), dataclasses.replace(SPEC, frames=400)))


def test_shapes_and_dtypes(shared):
    assert shared.temporal.shape == (F,)
    for m in (shared.joint, shared.bone, shared.limb, shared.half_body):
        assert m.shape == (F, 17)
        assert m.dtype == np.bool_


def test_temporal_count(shared):
    assert shared.temporal.sum() == int(F * 0.5) == 13
    m = _np(_draw(jax.random.key(3), MaskSpec(frames=243, temporal_ratio=0.8)))
    assert m.temporal.sum() == 194  # §2.2 table: F=243, tmr 0.8 -> 194 masked


def test_joint_mask_counts_and_allowed_joints(many):
    m = many
    np.testing.assert_array_equal(m.joint.sum(-1), 2)
    assert not m.joint[:, 16].any()  # Q4: last joint never joint-masked
    # Every other joint is reachable (400 frames x 2 draws from 16 joints).
    assert m.joint[:, :16].any(0).all()


def test_joint_mask_zero_and_max():
    m0 = _np(_draw(jax.random.key(1), dataclasses.replace(SPEC, joints_per_frame=0)))
    assert not m0.joint.any()
    m16 = _np(_draw(jax.random.key(1), dataclasses.replace(SPEC, joints_per_frame=16)))
    np.testing.assert_array_equal(m16.joint[:, :16], True)
    assert not m16.joint[:, 16].any()


def test_bone_mask_is_one_pair_per_frame(many):
    m = many
    seen = set()
    for row in m.bone:
        joints = frozenset(np.flatnonzero(row).tolist())
        assert joints in BONES
        seen.add(joints)
    assert len(seen) == 16  # all bones reachable, including (15, 16)


def test_bone_mask_several_bones_distinct():
    spec = dataclasses.replace(SPEC, bones_per_frame=3, frames=100)
    m = _np(_draw(jax.random.key(5), spec))
    for row in m.bone:
        joints = frozenset(np.flatnonzero(row).tolist())
        inside = [b for b in BONES if b <= joints]
        # The row is the union of 3 distinct bones (random.sample draws without replacement).
        assert any(a | b | c == joints for a, b, c in itertools.combinations(inside, 3))


def test_limb_and_half_body_groups(many):
    big = many
    limbs_seen, halves_seen = set(), set()
    for lrow, hrow in zip(big.limb, big.half_body, strict=True):
        limb = frozenset(np.flatnonzero(lrow).tolist())
        half = frozenset(np.flatnonzero(hrow).tolist())
        assert limb in LIMBS
        assert half in HALVES
        limbs_seen.add(limb)
        halves_seen.add(half)
    assert len(limbs_seen) == 4 and len(halves_seen) == 2


def test_3dhp_lists_give_3dhp_groups():
    spec = MaskSpec(frames=50, joints_left=MPI3DHP_JOINTS_LEFT, joints_right=MPI3DHP_JOINTS_RIGHT)
    m = _np(_draw(jax.random.key(0), spec))
    allowed = {frozenset(MPI3DHP_JOINTS_LEFT), frozenset(MPI3DHP_JOINTS_RIGHT)}
    assert all(frozenset(np.flatnonzero(r).tolist()) in allowed for r in m.half_body)


def test_per_sample_shapes_and_variation():
    spec = dataclasses.replace(SPEC, per_sample=True)
    m = _np(_draw(jax.random.key(0), spec, 4))
    assert m.temporal.shape == (F,)
    for field in ("joint", "bone", "limb", "half_body"):
        arr = getattr(m, field)
        assert arr.shape == (4, F, 17)
        assert not all(np.array_equal(arr[0], arr[b]) for b in range(1, 4)), field
    np.testing.assert_array_equal(m.joint.sum(-1), 2)
    np.testing.assert_array_equal(m.limb.sum(-1), 3)
    np.testing.assert_array_equal(m.half_body.sum(-1), 6)


def test_determinism_and_key_dependence(shared):
    again = _np(_draw(jax.random.key(0), SPEC))
    other = _np(_draw(jax.random.key(1), SPEC))
    leaves = (jax.tree.leaves(shared), jax.tree.leaves(again), jax.tree.leaves(other))
    for a, b, c in zip(*leaves, strict=True):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_jit_matches_eager(shared):
    jitted = jax.jit(draw_masks, static_argnums=(1, 2))
    out = _np(jitted(jax.random.key(0), SPEC, None))
    for a, b in zip(jax.tree.leaves(shared), jax.tree.leaves(out), strict=True):
        np.testing.assert_array_equal(a, b)


def test_no_masks_and_from_arrays():
    m = _np(no_masks(9))
    assert m.temporal.shape == (9,) and m.joint.shape == (9, 17)
    assert not any(x.any() for x in jax.tree.leaves(m))
    f = masks_from_arrays(np.array([0.0, 1.0]), *[np.eye(2, dtype=np.float32)] * 4)
    np.testing.assert_array_equal(np.asarray(f.temporal), [False, True])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"joints_per_frame": 17}, "joints_per_frame"),
        ({"temporal_ratio": 1.0}, "temporal_ratio"),
        ({"limbs_per_frame": 2}, "Q17"),
        ({"half_bodies_per_frame": 2}, "Q17"),
        ({"bones_per_frame": 17}, "bones_per_frame"),
        ({"joints_left": (1, 2, 3)}, "joints_left"),
    ],
)
def test_bad_spec_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MaskSpec(frames=F, **kwargs)


def test_per_sample_needs_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        draw_masks(jax.random.key(0), dataclasses.replace(SPEC, per_sample=True))
