"""Our AMSGrad equals torch.optim.Adam(amsgrad=True) step for step."""

import jax.numpy as jnp
import numpy as np
import torch

from aptpose_jax.optim import torch_amsgrad


def test_torch_amsgrad_matches_pytorch_over_many_steps():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(5, 3)).astype(np.float32)
    # Gradients whose scale first grows then shrinks, so the running maximum of the second
    # moment is reached early: where optax's bias-corrected maximum would differ.
    grads = [
        (rng.normal(size=(5, 3)) * (10.0 if k < 3 else 0.1)).astype(np.float32) for k in range(12)
    ]
    lrs = [1e-2 * 0.97**k for k in range(12)]

    w_t = torch.nn.Parameter(torch.tensor(w0))
    opt = torch.optim.Adam([w_t], lr=lrs[0], amsgrad=True)
    tx = torch_amsgrad()
    w_j = jnp.asarray(w0)
    state = tx.init(w_j)
    for g, lr in zip(grads, lrs, strict=True):
        for group in opt.param_groups:
            group["lr"] = lr
        w_t.grad = torch.tensor(g)
        opt.step()
        direction, state = tx.update(jnp.asarray(g), state)
        w_j = w_j - lr * direction
    np.testing.assert_allclose(np.asarray(w_j), w_t.detach().numpy(), rtol=1e-5, atol=1e-6)
