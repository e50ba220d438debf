"""Short Stage II training run on the demo data with fixed batches and keys (issue 8).

Uses only APIs that also exist at commit f655a7e (before issue 8), so the same script measures
the old and the new code: run it once with `PYTHONPATH=.` and once with `PYTHONPATH` pointing
at a `git worktree add /tmp/old f655a7e` checkout. Every run starts from the same weights, the
converted fixture state_dict `stage2_f27.pth` (F=27, layers 3, C 64, H 128), draws its batches
from one numpy seed and its masks/dropout from `fold_in(key(0), step)`, so two runs of the same
code are bit-identical on CPU and any difference between two checkouts comes from the code.

`--fresh cloned|independent` starts instead from a fresh initialisation with the given
`cloned_init` (new code only; Q9).

    PYTHONPATH=. python experiments/train_compare.py --steps 300 --out /tmp/new.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from aptpose_jax import defaults, steps
from aptpose_jax.convert import load_pth
from aptpose_jax.datasets import load_sequences, skeleton
from aptpose_jax.datasets.windows import WindowDataset
from aptpose_jax.masking import MaskSpec
from aptpose_jax.optim import torch_amsgrad

FIXTURE = pathlib.Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "stage2_f27.pth"


def initial_model(fresh: str):
    if not fresh:
        model, _ = load_pth(FIXTURE)
        return model
    from aptpose_jax.models import ModelConfig, build_model

    cfg = ModelConfig("lifter", 27, layers=3, channel=64, d_hid=128, cloned_init=fresh == "cloned")
    return build_model(cfg, nnx.Rngs(params=0, dropout=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--fresh", choices=["", "cloned", "independent"], default="")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    config = defaults.apply_demo(defaults.base_config())
    train = WindowDataset(load_sequences(config.data, "train"), frames=27, train=True)
    model = initial_model(args.fresh)
    model.train()
    graphdef, params, batch_stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    spec = MaskSpec(frames=27, joints_per_frame=0, bones_per_frame=1)
    cfg = steps.StepConfig(stage="lifter", mask_spec=spec, bone_pairs=skeleton.H36M_BONE_PAIRS)
    tx = torch_amsgrad()
    state = steps.TrainState(params, batch_stats, tx.init(params), jnp.zeros((), jnp.int32))
    train_step = jax.jit(steps.make_train_step(graphdef, rest, cfg, tx), donate_argnums=0)
    rng, base = np.random.default_rng(0), jax.random.key(0)
    losses, t0 = [], time.perf_counter()
    for step in range(args.steps):
        if step == 1:
            t1 = time.perf_counter()  # after the first step (compilation)
        batch = train.get_batch(rng.integers(0, len(train), args.batch))
        inputs = {k: jnp.asarray(batch[k]) for k in ("input_2d", "gt_3d")}
        state, metrics = train_step(state, inputs, jax.random.fold_in(base, step), 1e-3)
        losses.append(float(metrics["loss"]))
    compile_s, seconds = t1 - t0, time.perf_counter() - t1
    last = float(np.mean(losses[-20:]))
    result = {"steps": args.steps, "batch": args.batch, "fresh": args.fresh, "losses": losses,
              "first": losses[0], "final_mean_last20": last, "first_step_s": compile_s,
              "seconds_after_first": seconds,
              "loadavg": pathlib.Path("/proc/loadavg").read_text().split()[:3]}  # fmt: skip
    pathlib.Path(args.out).write_text(json.dumps(result))
    print(f"first {losses[0]:.6f} final(last 20) {last:.6f}; {compile_s:.0f} s + {seconds:.0f} s")


if __name__ == "__main__":
    main()
