"""Scaling sweep: devices x per-device batch x compute dtype, Stage I and Stage II training steps.

One command measures how a data-parallel training step scales on whatever devices JAX has:
fake CPU devices here (`--cpu_devices 8` sets `jax_num_cpu_devices` before the backend starts),
real GPUs or TPUs elsewhere. A point is (stage, dtype, devices n, per-device batch b); its
mesh is the first n devices (`('data',)` axis, parameters replicated, batch sharded) and its
step is `steps.make_train_step` jitted as `run_builder.build_run` does (AMSGrad, masks and dropout
drawn in the step). Batches are synthetic and resident on the devices before timing: the input
side of a step is only picking a prepared batch and key, so what is timed is the device step.

Per point (one JSON line appended to `--out`, see `experiments/README.md` for every field):

* compile_s: lower + compile of the step;
* step_ms median and spread (min, max, all values) over `--steps` steps each waited for;
  samples_per_s = global batch / median step;
* pipelined_ms: mean step of `--steps` steps dispatched back to back (as the training loop);
* device-idle fraction: each timed step is split into input (pick batch + key), dispatch (the
  call returning; XLA:CPU runs a step inline, so there it includes the execution) and wait
  (call returned -> outputs ready). The host's own cost of a call, host_overhead_ms, is
  measured with a trivial jitted function of the same arguments (same pytree and shardings);
  device_ms = step - input - host_overhead. idle_fraction_sync = 1 - device / step (steps
  waited for one by one), idle_fraction = max(0, 1 - device / pipelined) (back to back): the
  share of wall time per step not covered by device execution;
* flops / bytes per sample: XLA cost analysis of the compiled step (x n: SPMD programs report
  one device's share); utilisation = achieved FLOP/s / FLOP/s of an (N, N) matmul per device in
  the same dtype with float32 accumulation, measured on the same n devices in the same run;
* peak memory: `memory_stats()["peak_bytes_in_use"]` where the backend has it (GPU, TPU; None
  on CPU) and XLA's buffer assignment of the step (`memory_analysis()`, per device);
* allreduce_ms: an all-reduce of the gradient size (parameters x 4 bytes) over the n devices;
* load average (1, 5, 15 min) before and after the point.

Series: weak scaling (fixed per-device batch `--weak`), strong scaling (fixed global batch
`--strong`), batch sweep (`--batches` on the fewest devices). `--memory_batches` adds
compile-only memory rows (Stage II, one device) for the largest-batch estimate, and
`--fit_search` (accelerators) doubles the per-device batch until a step runs out of memory.

  python experiments/scaling.py --cpu_devices 8                     # the CPU sweep here
  python experiments/scaling.py --devices 1,2,4,8 --weak 64,160 --strong 1280 \
      --batches 16,64,160,512 --steps 20 --fit_search                # a GPU / TPU host
  python experiments/scaling.py --cpu_devices 2 --devices 1,2 --frames 27 --layers 1 \
      --channel 16 --d_hid 32 --steps 2 --weak 2 --strong 4 --batches 2   # smoke run
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
for _path in (REPO_ROOT, REPO_ROOT / "experiments"):  # run as a file, or loaded by the tests
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import measure  # noqa: E402
from scaling_plan import STAGES, done_points, explicit_points, parse_args, plan  # noqa: E402

from aptpose_jax import sharding, steps  # noqa: E402
from aptpose_jax.datasets import skeleton  # noqa: E402
from aptpose_jax.masking import MaskSpec  # noqa: E402
from aptpose_jax.models import ModelConfig, build_model  # noqa: E402
from aptpose_jax.optim import torch_amsgrad  # noqa: E402


class Stage:
    """The model, optimiser and step of one (stage, dtype), built once for all its points."""

    def __init__(self, stage: str, dtype: str, args):
        facts = STAGES[stage]
        self.name, self.dtype, self.lr = stage, dtype, facts["lr"]
        ratio = facts["temporal_ratio"]
        if stage == "pretrain" and args.temporal_ratio >= 0:
            ratio = args.temporal_ratio  # 3DHP Stage I: 0.7
        self.cfg = ModelConfig(stage, args.frames, args.layers, args.channel, args.d_hid,
                               temporal_ratio=ratio, dtype=dtype)  # fmt: skip
        spec = MaskSpec(frames=args.frames, temporal_ratio=ratio,
                        joints_per_frame=facts["joints_per_frame"])  # fmt: skip
        left, right = skeleton.H36M_JOINTS_LEFT, skeleton.H36M_JOINTS_RIGHT
        self.step_cfg = steps.StepConfig(stage=stage, mask_spec=spec,
                                         bone_pairs=skeleton.H36M_BONE_PAIRS,
                                         joints_left=left, joints_right=right)  # fmt: skip
        model = build_model(self.cfg, nnx.Rngs(params=0, dropout=1))
        model.train()
        self.graphdef, self.params, self.stats, self.rest = nnx.split(
            model, nnx.Param, nnx.BatchStat, ...
        )
        self.tx = torch_amsgrad()
        self.n_params = int(sum(x.size for x in jax.tree.leaves(self.params)))

    def jitted_step(self, mesh: Mesh):
        rep = sharding.replicated(mesh)
        fn = steps.make_train_step(self.graphdef, self.rest, self.step_cfg, self.tx)
        return jax.jit(fn, donate_argnums=0, out_shardings=(rep, rep))

    def state(self, mesh: Mesh) -> steps.TrainState:
        params, stats = jax.tree.map(jnp.copy, (self.params, self.stats))
        state = steps.TrainState(params, stats, self.tx.init(params), jnp.int32(0))
        return sharding.put_replicated(state, mesh)

    def batches(self, mesh: Mesh, batch: int, count: int) -> list[dict]:
        """`count` synthetic batches made on the devices (nothing crosses from the host)."""
        f, j = self.cfg.frames, self.cfg.n_joints
        shard = sharding.batch_sharded(mesh)

        @jax.jit
        def make(key):
            k2, k3 = jax.random.split(key)
            out = {"input_2d": jax.random.uniform(k2, (batch, f, j, 2), jnp.float32, -1, 1)}
            if self.name != "pretrain":
                out["gt_3d"] = 0.3 * jax.random.normal(k3, (batch, f, j, 3), jnp.float32)
            return jax.lax.with_sharding_constraint(out, shard)  # (B, F, J, 2|3) sharded on B

        return [make(jax.random.key(i)) for i in range(count)]


def time_steps(compiled, state, batches, keys, lr, n: int, warmup: int):
    """Runs `warmup` then `n` waited-for then `n` back-to-back steps; returns (times, state)."""
    for i in range(warmup):
        state, metrics = compiled(state, batches[i % len(batches)], keys[i], lr)
    jax.block_until_ready(state)
    inp, disp, wait, tot, losses = [], [], [], [], []
    for i in range(warmup, warmup + n):
        t0 = time.perf_counter()
        batch, key = batches[i % len(batches)], keys[i]
        t1 = time.perf_counter()
        state, metrics = compiled(state, batch, key, lr)
        t2 = time.perf_counter()
        jax.block_until_ready((state, metrics))
        t3 = time.perf_counter()
        inp.append(t1 - t0), disp.append(t2 - t1), wait.append(t3 - t2), tot.append(t3 - t0)
        losses.append(float(metrics["loss"]))
    t0 = time.perf_counter()
    for i in range(warmup + n, warmup + 2 * n):
        state, metrics = compiled(state, batches[i % len(batches)], keys[i], lr)
    jax.block_until_ready((state, metrics))
    pipelined = (time.perf_counter() - t0) / n
    host = host_overhead_s(state, batches[0], keys[0], lr)
    return dict(input=inp, dispatch=disp, wait=wait, step=tot, pipelined=pipelined,
                host_overhead=host, losses=losses), state  # fmt: skip


def host_overhead_s(state, batch, key, lr, reps: int = 5) -> float:
    """Median host time of calling a trivial jitted function of the step's arguments."""
    probe = jax.jit(lambda s, b, k, r: s.step + 1)
    jax.block_until_ready(probe(state, batch, key, lr))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(probe(state, batch, key, lr))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _summary(t: dict, global_batch: int) -> dict:
    ms = lambda xs: round(1e3 * statistics.median(xs), 3)  # noqa: E731
    step, host = statistics.median(t["step"]), t["host_overhead"]
    device = max(0.0, step - statistics.median(t["input"]) - host)
    return dict(
        step_ms=ms(t["step"]),
        step_ms_min=round(1e3 * min(t["step"]), 3),
        step_ms_max=round(1e3 * max(t["step"]), 3),
        step_ms_all=[round(1e3 * x, 3) for x in t["step"]],
        samples_per_s=round(global_batch / step, 3),
        pipelined_ms=round(1e3 * t["pipelined"], 3),
        pipelined_samples_per_s=round(global_batch / t["pipelined"], 3),
        input_ms=ms(t["input"]),
        dispatch_ms=ms(t["dispatch"]),
        wait_ms=ms(t["wait"]),
        host_overhead_ms=round(1e3 * host, 3),
        device_ms=round(1e3 * device, 3),
        idle_fraction_sync=round(1 - device / step, 5),
        idle_fraction=round(max(0.0, 1 - device / t["pipelined"]), 5),
        loss_finite=bool(np.all(np.isfinite(t["losses"]))),
    )


class Sweep:
    """Runs points, caching per-mesh measurements (matmul FLOP/s, all-reduce time)."""

    def __init__(self, args, common: dict):
        self.args, self.common = args, common
        self._stages: dict = {}
        self._matmul: dict = {}
        self._allreduce: dict = {}

    def stage(self, name: str, dtype: str) -> Stage:
        if (name, dtype) not in self._stages:
            self._stages[(name, dtype)] = Stage(name, dtype, self.args)
        return self._stages[(name, dtype)]

    def mesh(self, n: int) -> Mesh:
        return Mesh(np.asarray(jax.devices()[:n]), (sharding.DATA_AXIS,))

    def matmul(self, mesh: Mesh, dtype: str) -> float:
        key = (mesh.devices.size, dtype)
        if key not in self._matmul:
            self._matmul[key] = measure.matmul_flops(mesh, dtype, self.args.matmul_n)
        return self._matmul[key]

    def allreduce(self, mesh: Mesh, n_params: int) -> float:
        key = (mesh.devices.size, n_params)
        if key not in self._allreduce:
            self._allreduce[key] = measure.allreduce_ms(mesh, n_params)
        return self._allreduce[key]

    def head(self, st: Stage, n: int, b: int, series) -> dict:
        a = self.args
        return dict(self.common, kind="train_step", stage=st.name, dtype=st.dtype,
                    device_count=n, per_device_batch=b, global_batch=n * b,
                    series=sorted(series), frames=a.frames, layers=a.layers,
                    channel=a.channel, d_hid=a.d_hid, n_params=st.n_params,
                    allreduce_bytes=4 * st.n_params, loadavg_before=measure.loadavg())  # fmt: skip

    def point(self, name: str, dtype: str, n: int, b: int, series) -> dict:
        """Measures one point; returns its JSON row."""
        st, mesh = self.stage(name, dtype), self.mesh(n)
        head = self.head(st, n, b, series)
        step, state = st.jitted_step(mesh), st.state(mesh)
        total = self.args.warmup + 2 * self.args.steps
        batches = st.batches(mesh, n * b, min(total, 4))
        keys = [jax.random.fold_in(jax.random.key(0), i) for i in range(total)]
        lr = jnp.float32(st.lr)
        jax.block_until_ready((state, batches, keys))
        t0 = time.perf_counter()
        compiled = step.lower(state, batches[0], keys[0], lr).compile()
        compile_s = time.perf_counter() - t0
        flops, nbytes = measure.xla_cost(compiled, n)
        peak = self.matmul(mesh, dtype)
        times, state = time_steps(compiled, state, batches, keys, lr, self.args.steps,
                                  self.args.warmup)  # fmt: skip
        row = _summary(times, n * b)
        achieved = None if flops is None else flops / max(row["device_ms"] / 1e3, 1e-9)
        g = n * b
        row.update(
            compile_s=round(compile_s, 3),
            flops_per_sample=None if flops is None else round(flops / g),
            bytes_per_sample=None if nbytes is None else round(nbytes / g),
            achieved_gflops=None if achieved is None else round(achieved / 1e9, 3),
            matmul_gflops=round(peak / 1e9, 3),
            utilisation=None if achieved is None else round(achieved / peak, 5),
            peak_memory_bytes=measure.peak_device_memory(mesh.devices.flat),
            xla_memory_bytes=measure.xla_memory_bytes(compiled),
            collectives=measure.collectives(compiled),
            allreduce_ms=round(self.allreduce(mesh, st.n_params), 3),
        )
        del state
        return {**head, **row, "loadavg_after": measure.loadavg()}

    def memory_row(self, name: str, dtype: str, b: int) -> dict:
        """Compile-only: XLA's per-device memory for a one-device step at batch b."""
        st, mesh = self.stage(name, dtype), self.mesh(1)
        head = self.head(st, 1, b, ["memory"])
        state = jax.eval_shape(lambda: st.state(mesh))
        batch = jax.eval_shape(lambda: st.batches(mesh, b, 1)[0])
        key = jax.eval_shape(lambda: jax.random.key(0))
        t0 = time.perf_counter()
        compiled = st.jitted_step(mesh).lower(state, batch, key, jnp.float32(st.lr)).compile()
        compile_s = time.perf_counter() - t0
        flops, nbytes = measure.xla_cost(compiled, 1)
        return dict(head, kind="memory", compile_s=round(compile_s, 3),
                    xla_memory_bytes=measure.xla_memory_bytes(compiled),
                    flops_per_sample=None if flops is None else round(flops / b),
                    bytes_per_sample=None if nbytes is None else round(nbytes / b),
                    loadavg_after=measure.loadavg())  # fmt: skip

    def fit_search(self, name: str, dtype: str, start: int, limit: int) -> dict:
        """Doubles the one-device batch from `start` while a real step runs (accelerators)."""
        st, mesh = self.stage(name, dtype), self.mesh(1)
        fits, b, error = None, start, ""
        while b <= limit:
            try:
                state, batch = st.state(mesh), st.batches(mesh, b, 1)[0]
                out = st.jitted_step(mesh)(state, batch, jax.random.key(0), jnp.float32(st.lr))
                jax.block_until_ready(out)
                fits, b = b, 2 * b
                del state, batch, out
            except Exception as e:  # noqa: BLE001 - XlaRuntimeError: RESOURCE_EXHAUSTED
                error = str(e).splitlines()[0][:200]
                break
        return dict(self.head(st, 1, fits or 0, ["fit_search"]), kind="fit_search",
                    largest_fitting_batch=fits, first_failing_batch=b if error else None,
                    error=error, peak_memory_bytes=measure.peak_device_memory(mesh.devices.flat),
                    loadavg_after=measure.loadavg())  # fmt: skip


def memory_rows(args, sweep: Sweep, emit, over) -> None:
    """Compile-only Stage II memory rows and the (accelerator) fit search."""
    for dtype in args.dtypes.split(",") if "lifter" in args.stages.split(",") else []:
        for b in args.memory_batches:
            if not over():
                emit(sweep.memory_row("lifter", dtype, b))
        if args.fit_search:
            emit(sweep.fit_search("lifter", dtype, max(args.batches), args.fit_limit))


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.cpu_devices:
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)  # before the backend starts
    args.matmul_n = args.matmul_n or measure.default_matmul_n()
    dev = jax.devices()
    common = dict(
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        commit=measure.git_commit(), jax=jax.__version__, backend=jax.default_backend(),
        device_kind=dev[0].device_kind, devices_available=len(dev), host=platform.node(),
        cpu=measure.cpu_model(), cpu_count=os.cpu_count(), label=args.label,
        steps=args.steps, warmup=args.warmup, matmul_n=args.matmul_n,
    )  # fmt: skip
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep, rows = Sweep(args, common), []

    def emit(row: dict) -> None:
        rows.append(row)
        with out.open("a") as fh:  # one line per point, appended as soon as it is measured
            fh.write(json.dumps(row) + "\n")
        print(json.dumps({k: v for k, v in row.items() if k != "step_ms_all"}), flush=True)

    t_start = time.perf_counter()
    over = lambda: args.budget_s and time.perf_counter() - t_start > args.budget_s  # noqa: E731
    points, n_first = plan(args, len(dev))
    if args.points:
        points = explicit_points(args, len(dev))
        n_first = len(points)
    done = done_points(out, common, args) if args.resume else set()
    for i, (name, dtype, n, b, series) in enumerate(points):
        if i == n_first:
            memory_rows(args, sweep, emit, over)
        if (name, dtype, n, b) in done:
            continue
        if over():
            print(f"budget of {args.budget_s} s spent: skipped {name} {dtype} {n}x{b}", flush=True)
            continue
        emit(sweep.point(name, dtype, n, b, series))
    if n_first >= len(points):
        memory_rows(args, sweep, emit, over)
    return rows


if __name__ == "__main__":
    main()
