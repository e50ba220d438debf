"""Model throughput benchmark: forward (eval) and full train step, both stages.

Prints one JSON line per figure: backend, device kind, batch, frames, stage, mode, samples/s
(median of `--reps` timed repetitions of `--iters` steps each), compile_s (first call, separate).
The train step is forward + loss + backward + AMSGrad (optax) + BatchNorm statistics update,
jitted as one function over `nnx.split` state (the form `aptpose_jax/steps.py` uses); masks are
drawn inside the step as in training.

  .venv/bin/python experiments/bench_model.py --batch 16 --dtype fp32
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from aptpose_jax import losses
from aptpose_jax.masking import MaskSpec, draw_masks
from aptpose_jax.models import ModelConfig, build_model
from aptpose_jax.models.layers import draw_dropout_seeds


def _loss(stage: str, out: dict, batch: dict, masks) -> jax.Array:
    if stage == "pretrain":
        return losses.pretrain_loss(out["recon"], batch["x"], masks.temporal)
    return losses.lifter_loss(out, batch["gt"])[0]


def make_steps(model, cfg: ModelConfig, spec: MaskSpec, tx, jit: str, batch: dict):
    """Returns (eval_fn(key), train_fn(key)) closures over the model / optimizer state.

    `jit="split"`: `nnx.split` once, then `jax.jit` of pure functions of the state (what
    `aptpose_jax/steps.py` does). `jit="nnx"`: `nnx.jit` over the live module and an
    `nnx.Optimizer`-free functional update (graph traversal on every call).
    """
    x, gt = batch["x"], batch["gt"]
    if jit == "nnx":

        @nnx.jit
        def eval_nnx(m, key):
            return m(x, draw_masks(key, spec))

        @nnx.jit
        def train_nnx(m, opt_state, key):
            mkey, dkey = jax.random.split(key)
            masks = draw_masks(mkey, spec)
            draw_dropout_seeds(m, dkey)

            def loss_fn(m):
                return _loss(cfg.stage, m(x, masks), {"x": x, "gt": gt}, masks)

            loss, grads = nnx.value_and_grad(loss_fn)(m)
            params = nnx.state(m, nnx.Param)
            updates, opt_state = tx.update(grads, opt_state, params)
            nnx.update(m, optax.apply_updates(params, updates))
            return loss, opt_state

        eval_model = nnx.clone(model)
        eval_model.eval()
        model.train()
        state = {"opt": tx.init(nnx.state(model, nnx.Param))}

        def train_call(key):
            loss, state["opt"] = train_nnx(model, state["opt"], key)
            return loss

        return lambda key: eval_nnx(eval_model, key), train_call

    model.eval()
    eval_graph = nnx.split(model, nnx.Param, nnx.BatchStat, ...)[0]
    model.train()
    graph, params, stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)

    @jax.jit
    def eval_fn(params, stats, key):
        m = nnx.merge(eval_graph, params, stats, rest)
        return m(x, draw_masks(key, spec))

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def train_fn(params, stats, opt_state, key):
        mkey, dkey = jax.random.split(key)
        masks = draw_masks(mkey, spec)

        def loss_fn(p):
            m = nnx.merge(graph, p, stats, rest, copy=True)  # copy: RNG counters mutate under grad
            draw_dropout_seeds(m, dkey)
            loss = _loss(cfg.stage, m(x, masks), {"x": x, "gt": gt}, masks)
            return loss, nnx.state(m, nnx.BatchStat)

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, loss

    state = {"p": params, "s": stats, "o": tx.init(params)}

    def train_call(key):
        state["p"], state["s"], state["o"], loss = train_fn(state["p"], state["s"], state["o"], key)
        return loss

    return lambda key: eval_fn(state["p"], state["s"], key), train_call


def _time(fn, iters: int, reps: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(iters):
            out = fn()
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / iters)
    return statistics.median(times), compile_s


def bench(args, stage: str) -> None:
    ratio = 0.8 if stage == "pretrain" else 0.0
    cfg = ModelConfig(
        stage,
        args.frames,
        args.layers,
        args.channel,
        args.d_hid,
        temporal_ratio=ratio,
        dtype="bfloat16" if args.dtype == "bf16" else "float32",
    )
    spec = MaskSpec(frames=cfg.frames, temporal_ratio=ratio, joints_per_frame=0)
    model = build_model(cfg, nnx.Rngs(params=0, dropout=1))
    rng = np.random.default_rng(0)
    b, f, j = args.batch, cfg.frames, cfg.n_joints
    batch = {
        "x": jnp.asarray(rng.uniform(-1, 1, (b, f, j, 2)), jnp.float32),
        "gt": jnp.asarray(rng.normal(size=(b, f, j, 3)), jnp.float32),
    }
    eval_call, train_call = make_steps(model, cfg, spec, optax.amsgrad(1e-3), args.jit, batch)
    keys = iter(jax.random.split(jax.random.key(0), 1000))
    common = dict(
        backend=jax.default_backend(),
        device=jax.devices()[0].device_kind,
        batch=b,
        frames=f,
        layers=cfg.layers,
        channel=cfg.channel,
        dtype=args.dtype,
        jit=args.jit,
        stage=stage,
    )
    modes = {"eval": lambda: eval_call(next(keys)), "train": lambda: train_call(next(keys))}
    for mode in args.modes.split(","):
        sec, compile_s = _time(modes[mode], args.iters, args.reps)
        load = os.getloadavg()[0]
        row = dict(
            common,
            mode=mode,
            samples_per_s=round(b / sec, 2),
            step_ms=round(1e3 * sec, 1),
            compile_s=round(compile_s, 2),
            load1=round(load, 2),
        )
        print(json.dumps(row), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--frames", type=int, default=243)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--channel", type=int, default=256)
    p.add_argument("--d_hid", type=int, default=512)
    p.add_argument("--stages", default="lifter,pretrain")
    p.add_argument("--modes", default="eval,train")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--jit", choices=("split", "nnx"), default="split")
    args = p.parse_args()
    for stage in args.stages.split(","):
        bench(args, stage)


if __name__ == "__main__":
    main()
