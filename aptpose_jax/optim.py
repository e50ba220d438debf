"""Adam with AMSGrad exactly as `torch.optim.Adam(amsgrad=True)` computes it (§4.2).

optax's `scale_by_amsgrad` keeps the running maximum of the *bias-corrected* second moment;
PyTorch keeps the maximum of the raw second moment and bias-corrects it afterwards. The two
differ whenever the maximum was reached at an earlier step, so we write PyTorch's rule:

    m_t = b1 m + (1 - b1) g          v_t = b2 v + (1 - b2) g^2       vmax_t = max(vmax, v_t)
    direction = (m_t / (1 - b1^t)) / (sqrt(vmax_t) / sqrt(1 - b2^t) + eps)

The learning rate is applied by the train step (`params - lr * direction`), so the per-epoch
decay needs no recompilation.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class TorchAmsgradState(NamedTuple):
    count: jax.Array  # () int32, steps taken
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates


def torch_amsgrad(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
    """The unit-learning-rate AMSGrad direction of PyTorch's Adam (weight decay 0)."""

    def init(params):
        # Three distinct trees: the train step donates its state, and a buffer shared by two
        # leaves cannot be donated.
        mu, nu, nu_max = (jax.tree.map(jnp.zeros_like, params) for _ in range(3))
        return TorchAmsgradState(jnp.zeros((), jnp.int32), mu, nu, nu_max)

    def update(grads, state, params=None):
        del params
        count = state.count + 1
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
        nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)
        t = count.astype(jnp.float32)
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        direction = jax.tree.map(
            lambda m, vm: (m / bc1) / (jnp.sqrt(vm) / jnp.sqrt(bc2) + eps), mu, nu_max
        )
        return direction, TorchAmsgradState(count, mu, nu, nu_max)

    return optax.GradientTransformation(init, update)
