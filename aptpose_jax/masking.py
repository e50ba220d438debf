"""The five APTPose masks (temporal, joint, bone, limb, half-body) drawn from a JAX PRNG key.

The reference (§2.2, APTPose repo: `run.py`) builds the masks per batch with numpy / Python
`random`. Here they are drawn with `jax.random` inside the jitted step, vectorised over frames
(no Python loop over frames), with static shapes:

* temporal `(F,)`: exactly `int(F * temporal_ratio)` True entries at random positions.
* joint `(F, J)`: `joints_per_frame` distinct joints per frame from joints `0..J-2`; joint J-1
  (the right wrist for H36M) is never joint-masked, as in the reference (Q4).
* bone `(F, J)`: `bones_per_frame` distinct bones per frame out of the bone pairs; both
  endpoints are set (bones can share a joint, so the joint count per frame may be < 2*bones).
* limb `(F, J)`: one of the four groups `left[:3], left[3:], right[:3], right[3:]` per frame
  (for H36M: left leg, left arm, right leg, right arm — the reference comment calls the first
  one "arm", Q22).
* half-body `(F, J)`: the whole left or the whole right list per frame.

True = masked. By default one mask set is shared by the whole batch (Q1, reference); with
`MaskSpec.per_sample` the four spatial masks get a leading batch axis `(B, F, J)`. The temporal
mask is always batch-shared `(F,)`, because Stage I gathers the visible frames with one static
index for the whole batch.

The distribution of each mask matches the reference; the exact random stream does not (the
reference uses numpy/Python RNGs seeded once, §2.2), so evaluation under random masks (Q2)
reproduces the reference statistically, not draw for draw.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from aptpose_jax.datasets.skeleton import H36M_BONE_PAIRS, H36M_JOINTS_LEFT, H36M_JOINTS_RIGHT


@flax.struct.dataclass
class Masks:
    """Boolean masks for one batch; True = masked.

    Attributes:
      temporal: (F,) frames hidden from the Stage I encoder (Stage II ignores it, Q3).
      joint: (F, J) or (B, F, J) joint mask (encoder 1).
      bone: (F, J) or (B, F, J) bone mask (encoder 2).
      limb: (F, J) or (B, F, J) limb mask (encoder 3).
      half_body: (F, J) or (B, F, J) half-body mask (encoder 4).
    """

    temporal: jax.Array
    joint: jax.Array
    bone: jax.Array
    limb: jax.Array
    half_body: jax.Array


@dataclasses.dataclass(frozen=True)
class MaskSpec:
    """What to mask; validated on construction.

    Attributes:
      frames: F, the window length.
      temporal_ratio: fraction of masked frames; `int(F * ratio)` frames are masked (static).
        Must be in [0, 1) so that at least one frame stays visible.
      joints_per_frame: joint-mask count per frame (`-smn`), drawn from joints 0..J-2 (Q4);
        0 gives an all-False joint mask.
      bones_per_frame: bone-mask count per frame (`-bmn`), distinct bones per frame; 0 = none.
      limbs_per_frame: 1 (reference) or 0 (all-False limb mask). Other values are refused:
        the reference selection logic only works for one limb per frame (Q17).
      half_bodies_per_frame: 1 (reference) or 0 (all-False half-body mask); see Q17.
      joints_left: the six left joints; limbs are `left[:3]`, `left[3:]`.
      joints_right: the six right joints; limbs are `right[:3]`, `right[3:]`.
      bone_pairs: (parent, child) pairs for the bone mask (the H36M pairs also on 3DHP, Q22).
      n_joints: J.
      per_sample: False = one set per batch (Q1, reference); True = spatial masks (B, F, J).
    """

    frames: int
    temporal_ratio: float = 0.0
    joints_per_frame: int = 0
    bones_per_frame: int = 1
    limbs_per_frame: int = 1
    half_bodies_per_frame: int = 1
    joints_left: tuple = H36M_JOINTS_LEFT
    joints_right: tuple = H36M_JOINTS_RIGHT
    bone_pairs: tuple = H36M_BONE_PAIRS
    n_joints: int = 17
    per_sample: bool = False

    def __post_init__(self):
        j = self.n_joints
        if self.frames < 1:
            raise ValueError(f"MaskSpec.frames must be >= 1, got {self.frames}")
        if not 0.0 <= self.temporal_ratio < 1.0:
            raise ValueError(
                f"MaskSpec.temporal_ratio must be in [0, 1) so that some frames stay visible, "
                f"got {self.temporal_ratio}"
            )
        if not 0 <= self.joints_per_frame <= j - 1:
            raise ValueError(
                f"MaskSpec.joints_per_frame must be in [0, {j - 1}] (drawn from joints "
                f"0..{j - 2}, Q4), got {self.joints_per_frame}"
            )
        if not 0 <= self.bones_per_frame <= len(self.bone_pairs):
            raise ValueError(
                f"MaskSpec.bones_per_frame must be in [0, {len(self.bone_pairs)}] (number of "
                f"bone pairs), got {self.bones_per_frame}"
            )
        for name in ("limbs_per_frame", "half_bodies_per_frame"):
            if getattr(self, name) not in (0, 1):
                raise ValueError(
                    f"MaskSpec.{name} must be 0 or 1, got {getattr(self, name)}: the reference "
                    "only supports one limb / one half-body per frame (Q17)"
                )
        sides = tuple(self.joints_left) + tuple(self.joints_right)
        if len(self.joints_left) != 6 or len(self.joints_right) != 6 or len(set(sides)) != 12:
            raise ValueError(
                "MaskSpec.joints_left / joints_right must be two disjoint lists of 6 joints "
                f"(3 per limb), got {self.joints_left} and {self.joints_right}"
            )
        flat = sides + tuple(i for pair in self.bone_pairs for i in pair)
        if any(not 0 <= i < j for i in flat):
            raise ValueError(
                f"MaskSpec joint indices must be in [0, {j - 1}]: got left/right {sides} and "
                f"bone pairs {self.bone_pairs}"
            )


def no_masks(frames: int, n_joints: int = 17) -> Masks:
    """All-False masks: (F,) temporal and (F, J) spatial (mask-free evaluation, §2.7)."""
    spatial = jnp.zeros((frames, n_joints), dtype=bool)
    return Masks(
        temporal=jnp.zeros((frames,), dtype=bool),
        joint=spatial,
        bone=spatial,
        limb=spatial,
        half_body=spatial,
    )


def _groups_matrix(groups: list[tuple[int, ...]], n_joints: int) -> np.ndarray:
    """(G, J) bool: row g is True on the joints of group g."""
    m = np.zeros((len(groups), n_joints), dtype=bool)
    for g, joints in enumerate(groups):
        m[g, list(joints)] = True
    return m


def _choose_k(key: jax.Array, lead: tuple[int, ...], n: int, k: int) -> jax.Array:
    """(*lead, n) bool with exactly k distinct True entries per row, uniformly at random.

    Uniform random subset without replacement (what `random.sample` draws): the k smallest of
    n i.i.d. uniforms form a uniformly random k-subset.
    """
    if k == 0:
        return jnp.zeros((*lead, n), dtype=bool)
    u = jax.random.uniform(key, (*lead, n))
    ranks = jnp.argsort(jnp.argsort(u, axis=-1), axis=-1)  # (*lead, n) rank of each entry
    return ranks < k


def _pick_group(key: jax.Array, lead: tuple[int, ...], groups: np.ndarray) -> jax.Array:
    """(*lead, J) bool: one uniformly chosen row of `groups` (G, J) per frame."""
    choice = jax.random.randint(key, lead, 0, groups.shape[0])  # (*lead,)
    return jnp.asarray(groups)[choice]  # (*lead, J)


def draw_masks(key: jax.Array, spec: MaskSpec, batch_size: int | None = None) -> Masks:
    """Draws one set of masks (§2.2) from `key`; jit-compatible (spec and batch_size static).

    Args:
      key: a `jax.random` key.
      spec: what to mask (hashable, so it can be a static argument of `jax.jit`).
      batch_size: B; required when `spec.per_sample`, ignored otherwise.

    Returns:
      `Masks` with temporal (F,) and spatial (F, J) — or (B, F, J) when `spec.per_sample`.
    """
    f, j = spec.frames, spec.n_joints
    if spec.per_sample:
        if batch_size is None or batch_size < 1:
            raise ValueError(f"draw_masks: per_sample masks need batch_size >= 1, got {batch_size}")
        lead = (batch_size, f)
    else:
        lead = (f,)
    k_t, k_j, k_b, k_l, k_h = jax.random.split(key, 5)

    n_masked = int(f * spec.temporal_ratio)
    temporal = jax.random.permutation(k_t, f) < n_masked  # (F,) exactly n_masked True

    # Q4: only joints 0..J-2 can be joint-masked; joint J-1 column stays False.
    joint = _choose_k(k_j, lead, j - 1, spec.joints_per_frame)  # (*lead, J-1)
    joint = jnp.concatenate([joint, jnp.zeros((*lead, 1), dtype=bool)], axis=-1)  # (*lead, J)

    pairs = _groups_matrix(list(spec.bone_pairs), j)  # (P, J) both endpoints of each bone
    bones = _choose_k(k_b, lead, pairs.shape[0], spec.bones_per_frame)  # (*lead, P)
    bone = jnp.any(bones[..., :, None] & jnp.asarray(pairs), axis=-2)  # (*lead, P, J) -> (*lead, J)

    left, right = tuple(spec.joints_left), tuple(spec.joints_right)
    limbs = _groups_matrix([left[:3], left[3:], right[:3], right[3:]], j)  # (4, J)
    halves = _groups_matrix([left, right], j)  # (2, J)
    limb = _pick_group(k_l, lead, limbs)
    half_body = _pick_group(k_h, lead, halves)
    if spec.limbs_per_frame == 0:
        limb = jnp.zeros_like(limb)
    if spec.half_bodies_per_frame == 0:
        half_body = jnp.zeros_like(half_body)
    return Masks(temporal=temporal, joint=joint, bone=bone, limb=limb, half_body=half_body)


def masks_from_arrays(temporal, joint, bone, limb, half_body, threshold: float = 0.5) -> Masks:
    """Builds `Masks` from float/int/bool arrays (e.g. the fixtures' 1.0/0.0 masks), `> 0.5`."""
    conv = [jnp.asarray(a) > threshold for a in (temporal, joint, bone, limb, half_body)]
    return Masks(*conv)
