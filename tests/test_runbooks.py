"""The run books: every config holds the values of its reference command (reference §4.4), and
P-MPJPE agrees with an independently computed alignment on ordinary poses."""

from __future__ import annotations

import numpy as np
import pytest
from test_train import load_config

from aptpose_jax import metrics

# Reference §4.4 (APTPose README commands), transcribed by hand. None: not part of the command
# (an evaluation). 3DHP evaluation: the README passes no --layers (default 4) while training
# used 3 (§8, unresolved); the config says 3 and a .pth's own sizes win anyway.
RUN_BOOKS = {
    # config[:arg]: (stage, frames, tds, layers, tmr, smn, batch, lr, lrd, keypoints)
    "h36m_pretrain": ("pretrain", 243, 2, 4, 0.8, 2, 160, 1e-4, 0.97, "cpn_ft_h36m_dbb"),
    "h36m_finetune": ("lifter", 243, 2, 4, 0.0, 0, 160, 7e-4, 0.97, "cpn_ft_h36m_dbb"),
    "h36m_finetune:gt": ("lifter", 243, 2, 4, 0.0, 0, 160, 7e-4, 0.97, "gt"),
    "h36m_eval": ("lifter", 243, 2, 8, 0.0, 0, None, None, None, "cpn_ft_h36m_dbb"),
    "h36m_eval:gt": ("lifter", 243, 2, 8, 0.0, 0, None, None, None, "gt"),
    "3dhp_pretrain": ("pretrain", 81, 1, 3, 0.7, 2, 160, 1e-4, 0.97, "gt"),
    "3dhp_finetune": ("lifter_nomask", 81, 1, 3, 0.0, 0, 160, 7e-4, 0.97, "gt"),
    "3dhp_eval": ("lifter_nomask", 81, 1, 3, 0.0, 0, None, None, None, "gt"),
    "wild_pretrain": ("pretrain", 243, 2, 4, 0.7, 2, 160, 1e-4, 0.97, "detectron_pt_coco"),
    "wild_finetune": ("lifter_nomask", 243, 2, 4, 0.0, 0, 160, 1e-3, 0.97, "detectron_pt_coco"),
}


@pytest.mark.parametrize("name", sorted(RUN_BOOKS))
def test_config_holds_the_reference_command_values(name):
    stem, _, arg = name.partition(":")
    c = load_config(stem, arg or None)
    stage, frames, tds, layers, tmr, smn, batch, lr, lrd, keypoints = RUN_BOOKS[name]
    assert c.model.stage == stage
    assert (c.model.frames, c.data.tds, c.model.layers) == (frames, tds, layers)
    assert (c.masks.temporal_ratio, c.masks.joints_per_frame) == (tmr, smn)
    assert c.data.keypoints == keypoints
    assert c.model.n_joints == 17 and c.model.channel == 256 and c.model.d_hid == 512
    if batch is not None:  # training commands
        assert c.mode == "train"
        assert (c.optim.batch_size, c.optim.lr, c.optim.lr_decay) == (batch, lr, lrd)
        assert c.optim.num_epochs == 79  # nepoch 80, epochs 1..79 (§4.2)
    else:
        assert c.mode == "eval"


def _horn_rotation(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation Q (column vectors) maximising sum target_i . (Q source_i), by Horn's
    unit-quaternion method (J. Opt. Soc. Am. A 4, 1987): another route than the SVD."""
    s = source.T @ target  # S[a, b] = sum source_a target_b
    (sxx, sxy, sxz), (syx, syy, syz), (szx, szy, szz) = s
    n = np.array(
        [[sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
         [syz - szy, sxx - syy - szz, sxy + syx, szx + sxz],
         [szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy],
         [sxy - syx, szx + sxz, syz + szy, -sxx - syy + szz]]
    )  # fmt: skip
    w, vec = np.linalg.eigh(n)
    q0, qx, qy, qz = vec[:, np.argmax(w)]
    return np.array(
        [[q0**2 + qx**2 - qy**2 - qz**2, 2 * (qx * qy - q0 * qz), 2 * (qx * qz + q0 * qy)],
         [2 * (qy * qx + q0 * qz), q0**2 - qx**2 + qy**2 - qz**2, 2 * (qy * qz - q0 * qx)],
         [2 * (qz * qx - q0 * qy), 2 * (qz * qy + q0 * qx), q0**2 - qx**2 - qy**2 + qz**2]]
    )  # fmt: skip


def _aligned(pred, target, rotation):
    """The residuals (J, 3) after the best scale and translation for a given rotation."""
    y0, x0 = pred - pred.mean(0), target - target.mean(0)
    rotated = y0 @ rotation.T
    scale = (x0 * rotated).sum() / (rotated**2).sum()
    return scale * rotated - x0


def _aligned_error(pred, target, rotation):
    return np.linalg.norm(_aligned(pred, target, rotation), axis=-1).mean()


def _small_rotation(rng, angle):
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k  # Rodrigues


def test_p_mpjpe_matches_an_independent_alignment_on_ordinary_poses():
    rng = np.random.default_rng(7)
    target = rng.normal(0, 0.25, (6, 17, 3))  # ordinary poses: not transformed copies
    pred = target + rng.normal(0, 0.08, target.shape)  # a noisy prediction
    pred[3] = rng.normal(0, 0.25, (17, 3))  # and an unrelated one
    ours = metrics.p_mpjpe(pred, target)
    for i in range(len(target)):
        q = _horn_rotation(pred[i] - pred[i].mean(0), target[i] - target[i].mean(0))
        assert np.linalg.det(q) == pytest.approx(1.0)  # a rotation, never a reflection
        independent = _aligned_error(pred[i], target[i], q)
        assert ours[i] == pytest.approx(independent, rel=1e-7)
        # Horn's rotation is the least-squares optimum: no nearby rotation has a smaller
        # sum of squared residuals (the check of the independent route itself)
        best = (_aligned(pred[i], target[i], q) ** 2).sum()
        for _ in range(5):
            nearby = _small_rotation(rng, 0.02) @ q
            assert (_aligned(pred[i], target[i], nearby) ** 2).sum() >= best
    assert np.all(ours < metrics.mpjpe_per_pose(pred, target))  # alignment only helps
