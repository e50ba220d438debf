"""End-to-end training and evaluation throughput, input pipeline included, for both stages.

Builds the run exactly as training does (`setup.build_run` on the H36M configs, synthetic demo
data in the official file formats) and times, per stage and mode:

* compile_s: lowering + XLA compilation of the jitted step (the first step's extra cost);
* step_ms: median over `--steps` end-to-end steps (batch assembly with `get_batch`,
  host-to-device `put_batch`, the jitted step, each waited for); samples_per_s = batch /
  step_ms. Each timed step is split into input_ms (get_batch + put_batch, waited for) and
  device_ms (the jitted step), medians reported;
* pipelined_ms: mean step of `--steps` more steps dispatched as the training loop does (no wait
  between steps, so the host may prepare batch i+1 while the device runs step i);
* flops_per_sample: XLA's cost analysis of the compiled step (times the device count, for
  SPMD programs report one device's share) / batch;
* utilisation: achieved FLOP/s (flops per step / device_ms) as a fraction of the throughput of
  a large square matmul in the run's dtype, measured on the same devices right before and
  right after the timed steps (best of 2 x 5 calls): "fraction of measured matmul
  throughput", NOT of a vendor peak.

Eval is the evaluation step with flip test-time augmentation: two forward passes per sample.
One JSON line per figure on stdout.

  .venv/bin/python experiments/bench_train.py                       # CPU default, B=16
  .venv/bin/python experiments/bench_train.py --batch 160 --dtype bfloat16 --steps 20   # GPU
  .venv/bin/python experiments/bench_train.py --frames 27 --steps 2 --channel 32   # smoke run
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a file (`python experiments/bench_train.py`)
    sys.path.insert(0, str(REPO_ROOT))

from aptpose_jax import setup, sharding  # noqa: E402
from aptpose_jax.datasets.demo import ensure_demo_data  # noqa: E402
from aptpose_jax.train import epoch_order, learning_rate  # noqa: E402

CONFIGS = {"pretrain": "h36m_pretrain", "finetune": "h36m_finetune"}


def load_config(name: str):
    """`get_config()` of `configs/<name>.py` (configs are files, not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"cfg_{name}", REPO_ROOT / "configs" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def bench_config(stage: str, args, data_root: pathlib.Path):
    """The stage's H36M configuration on the demo data, sized by the flags."""
    c = load_config(CONFIGS[stage])
    c.data.root = str(data_root)
    c.data.demo = False  # generated beforehand with the requested length
    c.compute_dtype = args.dtype
    c.optim.batch_size = args.batch
    c.eval.batch_size = args.eval_batch or args.batch
    c.log.tensorboard = False
    c.log.progress_bar = False
    for name in ("frames", "layers", "channel", "d_hid"):
        value = getattr(args, name)
        if value:
            c.model[name] = value
    return c


def flops_of(compiled) -> float | None:
    """Total FLOPs of one call of a compiled function, from XLA's cost analysis.

    jax returns a dict (0.4.3x and later) or a list of one dict per program (older versions);
    some backends return None or omit the key. SPMD programs report one device's share.
    """
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"]) * len(jax.devices())


def measure_matmul(dtype: str, n: int, reps: int = 5) -> float:
    """FLOP/s of an (n, n) @ (n, n) matmul of `dtype` inputs, best of `reps`, all devices.

    Each device multiplies its own pair (the matrices are sharded along a leading device axis),
    so the figure is comparable with a data-parallel step. Best rather than median: it is the
    ceiling the step is compared with.
    """
    mesh = sharding.make_mesh()
    k = mesh.devices.size
    shard = sharding.batch_sharded(mesh)
    a = jax.device_put(jnp.full((k, n, n), 0.5, dtype), shard)  # (D, n, n)
    b = jax.device_put(jnp.full((k, n, n), 0.25, dtype), shard)
    # float32 accumulation, as the model's layers compute bf16 products (XLA:CPU then uses
    # AMX/oneDNN for bf16: about 6x the bf16-output matmul on Sapphire Rapids).
    mm = jax.jit(
        lambda x, y: jnp.einsum("dij,djk->dik", x, y, preferred_element_type=jnp.float32)
    )  # (D, n, n)
    jax.block_until_ready(mm(a, b))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(mm(a, b))
        times.append(time.perf_counter() - t0)
    return 2.0 * k * n**3 / min(times)


def _time_steps(device_batch, step, n: int, warmup: int, pipelined: bool) -> dict:
    """Times `step(batch, i)` on `device_batch(i)` (see the module docstring for the figures).

    Each timed step first waits for its batch (input_ms), then for the step (device_ms); their
    sum is step_ms. Medians over the `n` steps. The pipelined loop waits only at the end.
    """
    t0 = time.perf_counter()
    for i in range(warmup):
        jax.block_until_ready(step(device_batch(i), i))
    warmup_s = time.perf_counter() - t0
    inp, dev, tot = [], [], []
    for i in range(warmup, warmup + n):
        t0 = time.perf_counter()
        batch = jax.block_until_ready(device_batch(i))
        t1 = time.perf_counter()
        jax.block_until_ready(step(batch, i))
        t2 = time.perf_counter()
        inp.append(t1 - t0)
        dev.append(t2 - t1)
        tot.append(t2 - t0)
    pipelined_ms = None
    if pipelined:
        t0 = time.perf_counter()
        outs = [step(device_batch(i), i) for i in range(warmup + n, warmup + 2 * n)]
        jax.block_until_ready(outs)
        pipelined_ms = round(1e3 * (time.perf_counter() - t0) / n, 2)
    ms = lambda xs: round(1e3 * statistics.median(xs), 2)  # noqa: E731
    return dict(
        step_ms=ms(tot),
        pipelined_ms=pipelined_ms,
        device_ms=ms(dev),
        input_ms=ms(inp),
        warmup_s=round(warmup_s, 2),
    )


def _figures(mode: str, b: int, flops, compile_s: float, times: dict, peak: float) -> dict:
    """The reported row: throughput from the end-to-end step, utilisation from the device step."""
    achieved = None if flops is None else flops / (times["device_ms"] / 1e3)  # FLOP/s
    return dict(
        mode=mode,
        samples_per_s=round(b / (times["step_ms"] / 1e3), 2),
        **times,
        compile_s=round(compile_s, 2),
        flops_per_sample=None if flops is None else round(flops / b),
        achieved_gflops=None if achieved is None else round(achieved / 1e9, 2),
        matmul_gflops=round(peak / 1e9, 2),
        utilisation=None if achieved is None else round(achieved / peak, 4),
    )


def _n_batches(n_windows: int, b: int, split: str) -> int:
    if n_windows < b:
        raise ValueError(
            f"the {split} set has {n_windows} windows, fewer than one batch of {b}: lower "
            "--batch/--eval_batch or raise --frames_per_sequence"
        )
    return n_windows // b


def bench_train(run, args) -> tuple[dict, object]:
    """Times the training step of `run` with its input pipeline (see the module docstring)."""
    cfg, ds, mesh = run.config, run.train_ds, run.mesh
    b = cfg.optim.batch_size
    order = epoch_order(cfg.seed, 1, len(ds))
    n_batches = _n_batches(len(ds), b, "training")

    def device_batch(i):
        j = i % n_batches
        return sharding.put_batch(run.train_inputs(ds.get_batch(order[j * b : (j + 1) * b])), mesh)

    lr = jnp.float32(learning_rate(cfg.optim, 1))
    key = lambda s: jax.random.fold_in(run.base_key, s)  # noqa: E731
    first = device_batch(0)
    holder = {"state": run.initial_state()}
    t0 = time.perf_counter()
    compiled = run.train_step.lower(holder["state"], first, key(0), lr).compile()
    compile_s = time.perf_counter() - t0
    flops = flops_of(compiled)

    def step(batch, i):
        holder["state"], metrics = run.train_step(holder["state"], batch, key(i), lr)
        return metrics  # one executable: its outputs are ready together

    peak = measure_matmul(args.dtype, args.matmul_n)  # before and after: under the same load
    times = _time_steps(device_batch, step, args.steps, args.warmup, args.pipelined)
    peak = max(peak, measure_matmul(args.dtype, args.matmul_n))
    return _figures("train", b, flops, compile_s, times, peak), holder["state"]


def bench_eval(run, args, state=None) -> dict:
    """Times the evaluation step (flip TTA) with its input pipeline, as `inference.predict`.

    `state`: the trained state when the train benchmark ran first (it donated `run.params`).
    """
    cfg, ds, mesh = run.config, run.test_ds, run.mesh
    params = run.params if state is None else state.params
    stats = run.batch_stats if state is None else state.batch_stats
    b = cfg.eval.batch_size
    n_batches = _n_batches(len(ds), b, "test")
    keys = ["input_2d", "input_2d_flip"] + ([] if cfg.model.stage == "pretrain" else ["gt_3d"])

    def device_batch(i):
        j = i % n_batches
        batch = ds.get_batch(np.arange(j * b, (j + 1) * b))
        return sharding.put_batch({k: batch[k] for k in keys}, mesh)

    key = jax.random.fold_in(run.base_key, 2**31 - 1)
    first = device_batch(0)
    t0 = time.perf_counter()
    compiled = run.eval_step.lower(params, stats, first, key).compile()
    compile_s = time.perf_counter() - t0
    flops = flops_of(compiled)
    peak = measure_matmul(args.dtype, args.matmul_n)
    times = _time_steps(
        device_batch,
        lambda batch, i: run.eval_step(params, stats, batch, key),
        args.steps,
        args.warmup,
        args.pipelined,
    )
    peak = max(peak, measure_matmul(args.dtype, args.matmul_n))
    return _figures("eval", b, flops, compile_s, times, peak)


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16, help="training batch (reference: 160)")
    p.add_argument("--eval_batch", type=int, default=0, help="0: same as --batch")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--stages", default="pretrain,finetune")
    p.add_argument("--modes", default="train,eval")
    p.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after compilation")
    p.add_argument(
        "--pipelined",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time --steps steps dispatched without waiting (as the training loop)",
    )
    p.add_argument("--frames", type=int, default=0, help="0: the config's (243)")
    p.add_argument("--layers", type=int, default=0, help="0: the config's (4)")
    p.add_argument("--channel", type=int, default=0, help="0: the config's (256)")
    p.add_argument("--d_hid", type=int, default=0, help="0: the config's (512)")
    p.add_argument("--data_root", default="data/demo_bench", help="demo data folder")
    p.add_argument("--frames_per_sequence", type=int, default=600, help="demo sequence length")
    p.add_argument("--subjects_train", default="S1", help="training subjects to load")
    p.add_argument("--matmul_n", type=int, default=0, help="peak matmul size; 0: by backend")
    args = p.parse_args(argv)
    for stage in args.stages.split(","):
        if stage not in CONFIGS:
            p.error(f"unknown stage {stage!r}; choose from {', '.join(CONFIGS)}")
    for mode in args.modes.split(","):
        if mode not in ("train", "eval"):
            p.error(f"unknown mode {mode!r}; choose from train, eval")
    if args.steps < 1 or args.batch < 1:
        p.error("--steps and --batch must be positive")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.set_verbosity(logging.WARNING)
    root = pathlib.Path(args.data_root)
    root = root if root.is_absolute() else REPO_ROOT / root
    ensure_demo_data(root, frames_per_sequence=args.frames_per_sequence)
    args.matmul_n = args.matmul_n or (2048 if jax.default_backend() == "cpu" else 8192)
    common = dict(
        date=datetime.date.today().isoformat(),
        commit=_git_commit(),
        backend=jax.default_backend(),
        device=jax.devices()[0].device_kind,
        device_count=len(jax.devices()),
        dtype=args.dtype,
        matmul_n=args.matmul_n,
    )
    for stage in args.stages.split(","):
        config = bench_config(stage, args, root)
        config.data.subjects_train = args.subjects_train
        with tempfile.TemporaryDirectory(prefix="bench_train_") as workdir:
            run = setup.build_run(config, pathlib.Path(workdir))
            try:
                state = None
                for mode in args.modes.split(","):
                    if mode == "train":
                        row, state = bench_train(run, args)
                    else:
                        row = bench_eval(run, args, state)
                    load = round(os.getloadavg()[0], 2)
                    b = config.optim.batch_size if mode == "train" else config.eval.batch_size
                    head = dict(stage=stage, batch=b, frames=config.model.frames)
                    print(json.dumps({**common, **head, **row, "load1": load}), flush=True)
            finally:
                run.close()


if __name__ == "__main__":
    main()
