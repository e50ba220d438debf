"""End-to-end training and evaluation throughput, input pipeline included, for both stages.

Builds the run exactly as training does (`run_builder.build_run` on the H36M configs, synthetic demo
data in the official file formats) and times, per stage, dtype, batch, pipeline and mode:

* compile_s: lowering + XLA compilation of the jitted step (the first step's extra cost);
* step_ms: median over `--steps` end-to-end steps (the pipeline's batch for the step —
  pair indices on the device pipeline, a gathered host batch on the host pipeline — then the
  jitted step, each waited for); samples_per_s = batch / pipelined_ms when measured (that is
  how training runs), else batch / step_ms. Each timed step is split into input_ms (the
  pipeline's batch, waited for) and device_ms (the jitted step, gather included on the
  device pipeline);
* pipelined_ms: mean step of `--steps` more steps fed as the training loop feeds them (the
  pipeline's iterator: host batches from the prefetch thread; no wait between steps);
* busy_ms: mean step of `--steps` steps dispatched back to back on ONE batch already on the
  device: the device's own time per step. device_idle = 1 - busy_ms / pipelined_ms (>= 0),
  the share of a training step the device waits for input or for the host;
* flops_per_sample: XLA's cost analysis of the compiled step (times the device count, for
  SPMD programs report one device's share) / batch;
* utilisation: achieved FLOP/s (flops per step / busy_ms) as a fraction of the throughput of
  a large square matmul in the run's dtype, measured on the same devices right before and
  right after the timed steps (best of 2 x 5 calls): "fraction of measured matmul
  throughput", NOT of a vendor peak;
* h36m_epoch_s (train rows): projected time of one Human3.6M epoch, 2,928,800 training
  windows including flips (F=243, tds 2), at the measured samples/s.

Eval is the evaluation step with flip TTA (one forward pass over 2B). One JSON line per
figure on stdout; `--profile DIR` also writes a `jax.profiler` trace of a few train steps.

  .venv/bin/python experiments/bench_train.py                       # CPU default, B=16
  .venv/bin/python experiments/bench_train.py --frames 27 --steps 2 --channel 32   # smoke run
  # one GPU, every figure of the issue (see experiments/README.md "GPU run"):
  python experiments/bench_train.py --stages finetune --batches 160,1024,4096 \
      --dtypes bfloat16,float32 --pipelines device,host --steps 20 --warmup 3 \
      --frames_per_sequence 3000 --subjects_train S1,S5 --profile /tmp/aptpose_profile
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import itertools
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
for _path in (REPO_ROOT, REPO_ROOT / "experiments"):  # run as a file, or loaded by the tests
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import measure  # noqa: E402

from aptpose_jax import process, run_builder, sharding  # noqa: E402
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
    c.kernels.attention = args.attention
    c.kernels.dropout = args.dropout_rng
    c.optim.batch_size = args.batch
    c.eval.batch_size = args.eval_batch or args.batch
    c.log.tensorboard = False
    c.log.progress_bar = False
    for name in ("frames", "layers", "channel", "d_hid"):
        value = getattr(args, name)
        if value:
            c.model[name] = value
    return c


def _matmul_peak(args) -> float:
    """FLOP/s of the reference matmul in the run's dtype on all the run's devices."""
    return measure.matmul_flops(sharding.make_mesh(), args.dtype, args.matmul_n)


H36M_EPOCH_WINDOWS = measure.H36M_EPOCH_WINDOWS


def _time_steps(batch_of, feed, step, n: int, warmup: int, pipelined: bool) -> dict:
    """Times `step(batch, i)` (see the module docstring for the figures).

    `batch_of(i)` builds batch i synchronously; `feed(start, stop)` iterates batches as the
    training loop does (prefetch thread on the host pipeline). Medians over the `n` steps.
    """
    t0 = time.perf_counter()
    for i in range(warmup):
        jax.block_until_ready(step(batch_of(i), i))
    warmup_s = time.perf_counter() - t0
    inp, dev, tot = [], [], []
    for i in range(warmup, warmup + n):
        t0 = time.perf_counter()
        batch = jax.block_until_ready(batch_of(i))
        t1 = time.perf_counter()
        jax.block_until_ready(step(batch, i))
        t2 = time.perf_counter()
        inp.append(t1 - t0)
        dev.append(t2 - t1)
        tot.append(t2 - t0)
    times = dict(warmup_s=round(warmup_s, 2))
    fixed = jax.block_until_ready(batch_of(0))
    t0 = time.perf_counter()  # the device's own time: one batch, steps back to back
    jax.block_until_ready([step(fixed, i) for i in range(n)])
    busy = (time.perf_counter() - t0) / n
    times["busy_ms"] = round(1e3 * busy, 2)
    if pipelined:
        start = warmup + n
        t0 = time.perf_counter()
        outs = [step(b, start + k) for k, b in enumerate(feed(start, start + n))]
        jax.block_until_ready(outs)
        pipe = (time.perf_counter() - t0) / n
        times["pipelined_ms"] = round(1e3 * pipe, 2)
        times["device_idle"] = round(max(0.0, 1.0 - busy / pipe), 4)
    ms = lambda xs: round(1e3 * statistics.median(xs), 2)  # noqa: E731
    return dict(step_ms=ms(tot), device_ms=ms(dev), input_ms=ms(inp), **times)


def _figures(mode: str, b: int, cost, compile_s: float, times: dict, peak: float) -> dict:
    """The reported row: throughput as training feeds, utilisation from the device's time.

    `cost` = XLA's (FLOPs, bytes accessed) of one step; achieved_gbps = bytes / busy time, to
    hold against the HBM bandwidth (a bound when the step is memory-bound).
    """
    flops, nbytes = cost
    step_ms = times.get("pipelined_ms") or times["step_ms"]
    rate = b / (step_ms / 1e3)
    achieved = None if flops is None else flops / (times["busy_ms"] / 1e3)  # FLOP/s
    row = dict(
        mode=mode,
        samples_per_s=round(rate, 2),
        **times,
        compile_s=round(compile_s, 2),
        flops_per_sample=None if flops is None else round(flops / b),
        achieved_gflops=None if achieved is None else round(achieved / 1e9, 2),
        matmul_gflops=round(peak / 1e9, 2),
        utilisation=None if achieved is None else round(achieved / peak, 4),
        bytes_per_step=None if nbytes is None else round(nbytes),
        achieved_gbps=None if nbytes is None else round(nbytes / (times["busy_ms"] / 1e3) / 1e9, 1),
    )
    if mode == "train":
        row["h36m_epoch_s"] = round(H36M_EPOCH_WINDOWS / rate, 1)
    return row


def _n_batches(n_windows: int, b: int, split: str) -> int:
    if n_windows < b:
        raise ValueError(
            f"the {split} set has {n_windows} windows, fewer than one batch of {b}: lower "
            "--batches or raise --frames_per_sequence / add --subjects_train"
        )
    return n_windows // b


def bench_train(run, args) -> tuple[dict, object]:
    """Times the training step of `run` with its input pipeline (see the module docstring)."""
    cfg, ds = run.config, run.train_ds
    b = cfg.optim.batch_size
    order = epoch_order(cfg.seed, 1, len(ds))
    n_batches = _n_batches(len(ds), b, "training")
    index_of = lambda i: order[(i % n_batches) * b : (i % n_batches + 1) * b]  # noqa: E731
    batch_of = lambda i: run.train_pipe.batch(index_of(i))  # noqa: E731
    feed = lambda start, stop: run.train_pipe.batches(index_of, start, stop)  # noqa: E731
    lr = jnp.float32(learning_rate(cfg.optim, 1))
    key = lambda s: jax.random.fold_in(run.base_key, s)  # noqa: E731
    holder = {"state": run.initial_state()}
    t0 = time.perf_counter()
    compiled = run.train_step.lower(holder["state"], batch_of(0), key(0), lr).compile()
    compile_s = time.perf_counter() - t0
    cost = measure.xla_cost(compiled, len(jax.devices()))
    gemms = measure.gemm_operand_dtypes(compiled)

    def step(batch, i):
        holder["state"], metrics = run.train_step(holder["state"], batch, key(i), lr)
        return metrics  # one executable: its outputs are ready together

    peak = _matmul_peak(args)  # before and after the timed steps: under the same load
    times = _time_steps(batch_of, feed, step, args.steps, args.warmup, args.pipelined)
    peak = max(peak, _matmul_peak(args))
    if args.profile:
        _profile(args.profile, step, batch_of)
    row = _figures("train", b, cost, compile_s, times, peak)
    return {**row, "gemm_operands": gemms}, holder["state"]


def _profile(directory: str, step, batch_of, n: int = 5) -> None:
    """A `jax.profiler` trace of `n` steps (open with TensorBoard / Perfetto)."""
    batches = [jax.block_until_ready(batch_of(i)) for i in range(n)]
    with jax.profiler.trace(directory):
        jax.block_until_ready([step(batch, i) for i, batch in enumerate(batches)])


def bench_eval(run, args, state=None) -> dict:
    """Times the evaluation step (flip TTA) with its input pipeline, as `inference.predict`.

    `state`: the trained state when the train benchmark ran first (it donated `run.params`).
    """
    cfg, ds = run.config, run.test_ds
    params = run.params if state is None else state.params
    stats = run.batch_stats if state is None else state.batch_stats
    b = cfg.eval.batch_size
    n_batches = _n_batches(len(ds), b, "test")
    index_of = lambda i: np.arange((i % n_batches) * b, (i % n_batches + 1) * b)  # noqa: E731
    batch_of = lambda i: run.test_pipe.batch(index_of(i))  # noqa: E731
    feed = lambda start, stop: run.test_pipe.batches(index_of, start, stop)  # noqa: E731
    key = jax.random.fold_in(run.base_key, 2**31 - 1)
    t0 = time.perf_counter()
    compiled = run.eval_step.lower(params, stats, batch_of(0), key).compile()
    compile_s = time.perf_counter() - t0
    cost = measure.xla_cost(compiled, len(jax.devices()))
    peak = _matmul_peak(args)
    times = _time_steps(
        batch_of,
        feed,
        lambda batch, i: run.eval_step(params, stats, batch, key),
        args.steps,
        args.warmup,
        args.pipelined,
    )
    peak = max(peak, _matmul_peak(args))
    return _figures("eval", b, cost, compile_s, times, peak)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="16", help="training batches, e.g. 160,1024,4096")
    p.add_argument("--eval_batch", type=int, default=0, help="0: same as the training batch")
    p.add_argument("--dtypes", default="float32", help="float32,tf32,bfloat16")
    p.add_argument("--attentions", default="auto", help="kernels.attention: auto,xla,pallas,cudnn")
    p.add_argument("--dropouts", default="auto", help="kernels.dropout: auto,hash,threefry")
    p.add_argument("--pipelines", default="device", help="device,host")
    p.add_argument("--stages", default="pretrain,finetune")
    p.add_argument("--modes", default="train,eval")
    p.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after compilation")
    p.add_argument(
        "--pipelined",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time --steps steps fed as the training loop (gives device_idle)",
    )
    p.add_argument("--deterministic", action="store_true", help="GPU: deterministic ops")
    p.add_argument("--profile", default="", help="write a jax.profiler trace here (train)")
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
    choices = (
        ("dtypes", ("float32", "tf32", "bfloat16")),
        ("pipelines", ("device", "host")),
        ("attentions", ("auto", "xla", "pallas", "cudnn")),
        ("dropouts", ("auto", "hash", "threefry")),
    )
    for name, allowed in choices:
        for value in getattr(args, name).split(","):
            if value not in allowed:
                p.error(f"--{name}: unknown {value!r}; choose from {', '.join(allowed)}")
    if args.steps < 1 or min(_ints(args.batches)) < 1:
        p.error("--steps and --batches must be positive")
    return args


def _bench_one(stage, dtype, batch, pipe, args, root, common) -> None:
    args.dtype, args.batch = dtype, batch
    config = bench_config(stage, args, root)
    config.data.subjects_train = args.subjects_train
    config.data.pipeline = pipe
    config.deterministic = args.deterministic
    with tempfile.TemporaryDirectory(prefix="bench_train_") as workdir:
        run = run_builder.build_run(config, pathlib.Path(workdir))
        try:
            state = None
            for mode in args.modes.split(","):
                if mode == "train":
                    row, state = bench_train(run, args)
                else:
                    row = bench_eval(run, args, state)
                load = round(os.getloadavg()[0], 2)
                b = config.optim.batch_size if mode == "train" else config.eval.batch_size
                m = run.model_cfg
                head = dict(stage=stage, dtype=dtype, pipeline=pipe, batch=b,
                            frames=config.model.frames, kernels=m.kernels,
                            attention=m.attention, dropout_rng=m.dropout_rng)  # fmt: skip
                print(json.dumps({**common, **head, **row, "load1": load}), flush=True)
        finally:
            run.close()


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.deterministic:
        process.request_deterministic_gpu_ops()  # before JAX starts its backend
    logging.set_verbosity(logging.WARNING)
    root = pathlib.Path(args.data_root)
    root = root if root.is_absolute() else REPO_ROOT / root
    ensure_demo_data(root, frames_per_sequence=args.frames_per_sequence)
    args.matmul_n = args.matmul_n or measure.default_matmul_n()
    common = dict(
        date=datetime.date.today().isoformat(),
        commit=measure.git_commit(),
        backend=jax.default_backend(),
        device=jax.devices()[0].device_kind,
        device_count=len(jax.devices()),
        matmul_n=args.matmul_n,
        jax_version=jax.__version__,
    )
    grid = itertools.product(
        args.stages.split(","),
        args.dtypes.split(","),
        _ints(args.batches),
        args.pipelines.split(","),
        args.attentions.split(","),
        args.dropouts.split(","),
    )
    for stage, dtype, batch, pipe, attention, dropout in grid:
        args.attention, args.dropout_rng = attention, dropout
        try:
            _bench_one(stage, dtype, batch, pipe, args, root, common)
        except Exception as e:  # one failed figure (e.g. a kernel that does not lower) is a row
            row = dict(stage=stage, dtype=dtype, batch=batch, pipeline=pipe,
                       attention=attention, dropout_rng=dropout, error=repr(e)[:500])  # fmt: skip
            print(json.dumps({**common, **row}), flush=True)


if __name__ == "__main__":
    main()
