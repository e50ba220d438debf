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

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a file (`python experiments/scaling.py`)
    sys.path.insert(0, str(REPO_ROOT))

from aptpose_jax import sharding, steps  # noqa: E402
from aptpose_jax.datasets import skeleton  # noqa: E402
from aptpose_jax.masking import MaskSpec  # noqa: E402
from aptpose_jax.models import ModelConfig, build_model  # noqa: E402
from aptpose_jax.optim import torch_amsgrad  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "experiments" / "results" / "scaling.jsonl"
# Stage facts of the H36M recipes (configs/h36m_pretrain.py, configs/h36m_finetune.py).
STAGES = {
    "pretrain": dict(temporal_ratio=0.8, joints_per_frame=2, lr=1e-4),
    "lifter": dict(temporal_ratio=0.0, joints_per_frame=0, lr=7e-4),
    "lifter_nomask": dict(temporal_ratio=0.0, joints_per_frame=0, lr=7e-4),  # 3DHP Stage II
}


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        )
        return (out.stdout.strip() or "unknown") + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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


def _cost(compiled, n: int) -> tuple[float | None, float | None]:
    """(FLOPs, bytes accessed) of one call, summed over the n devices (XLA cost analysis)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
        analysis = analysis[0] if analysis else None
    if not analysis:
        return None, None
    flops, nbytes = analysis.get("flops"), analysis.get("bytes accessed")
    return (None if flops is None else float(flops) * n,
            None if nbytes is None else float(nbytes) * n)  # fmt: skip


def xla_memory_bytes(compiled) -> int | None:
    """Per-device bytes XLA assigned to the step: arguments + outputs + temporaries - aliased."""
    try:
        m = compiled.memory_analysis()
    except (NotImplementedError, AttributeError, RuntimeError):
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)  # fmt: skip


def collectives(compiled) -> dict | None:
    """Cross-device collectives in the optimised HLO of the step: {"all-reduce": count, ...}."""
    try:
        text = compiled.as_text()
    except Exception:  # noqa: BLE001 - some backends cannot print their executable
        return None
    ops = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
    return {op: len(re.findall(rf"= [^=]*\b{op}(?:-start)?\(", text)) for op in ops}


def peak_device_memory(devices) -> int | None:
    """Largest `peak_bytes_in_use` over `devices`, or None where the backend has no stats."""
    peaks = []
    for d in devices:
        stats = d.memory_stats() if hasattr(d, "memory_stats") else None
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(int(stats["peak_bytes_in_use"]))
    return max(peaks) if peaks else None


def matmul_flops(mesh: Mesh, dtype: str, n: int, reps: int = 3) -> float:
    """FLOP/s of one (n, n) @ (n, n) matmul per device of `mesh` (dtype in, float32 acc), best."""
    k = mesh.devices.size
    shard = sharding.batch_sharded(mesh)
    a = jax.device_put(jnp.full((k, n, n), 0.5, dtype), shard)  # (D, n, n)
    b = jax.device_put(jnp.full((k, n, n), 0.25, dtype), shard)
    mm = jax.jit(lambda x, y: jnp.einsum("dij,djk->dik", x, y, preferred_element_type=jnp.float32))
    jax.block_until_ready(mm(a, b))
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(mm(a, b))
        best = min(best, time.perf_counter() - t0)
    return 2.0 * k * n**3 / best


def allreduce_ms(mesh: Mesh, n_params: int, reps: int = 3) -> float:
    """Median time of an all-reduce (sum over devices) of `n_params` float32 values."""
    k = mesh.devices.size
    x = jax.device_put(jnp.ones((k, n_params), jnp.float32), sharding.batch_sharded(mesh))
    reduce = jax.jit(lambda v: v.sum(axis=0), out_shardings=sharding.replicated(mesh))  # (P,)
    jax.block_until_ready(reduce(x))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(reduce(x))
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


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
            self._matmul[key] = matmul_flops(mesh, dtype, self.args.matmul_n)
        return self._matmul[key]

    def allreduce(self, mesh: Mesh, n_params: int) -> float:
        key = (mesh.devices.size, n_params)
        if key not in self._allreduce:
            self._allreduce[key] = allreduce_ms(mesh, n_params)
        return self._allreduce[key]

    def head(self, st: Stage, n: int, b: int, series) -> dict:
        a = self.args
        return dict(self.common, kind="train_step", stage=st.name, dtype=st.dtype,
                    device_count=n, per_device_batch=b, global_batch=n * b,
                    series=sorted(series), frames=a.frames, layers=a.layers,
                    channel=a.channel, d_hid=a.d_hid, n_params=st.n_params,
                    allreduce_bytes=4 * st.n_params, loadavg_before=_loadavg())  # fmt: skip

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
        flops, nbytes = _cost(compiled, n)
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
            peak_memory_bytes=peak_device_memory(mesh.devices.flat),
            xla_memory_bytes=xla_memory_bytes(compiled),
            collectives=collectives(compiled),
            allreduce_ms=round(self.allreduce(mesh, st.n_params), 3),
        )
        del state
        return {**head, **row, "loadavg_after": _loadavg()}

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
        flops, nbytes = _cost(compiled, 1)
        return dict(head, kind="memory", compile_s=round(compile_s, 3),
                    xla_memory_bytes=xla_memory_bytes(compiled),
                    flops_per_sample=None if flops is None else round(flops / b),
                    bytes_per_sample=None if nbytes is None else round(nbytes / b),
                    loadavg_after=_loadavg())  # fmt: skip

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
                    error=error, peak_memory_bytes=peak_device_memory(mesh.devices.flat),
                    loadavg_after=_loadavg())  # fmt: skip


def plan(args, n_available: int) -> tuple[list[tuple[str, str, int, int, set]], int]:
    """The (stage, dtype, devices, per-device batch, series) points, deduplicated, in order of
    priority: every (stage, dtype) gets its fewest- and most-device points of the first weak
    series first, then its other fewest-device points (batch sweep), then the remaining weak
    and strong points, so that a sweep cut short by `--budget_s` still covers every stage and
    dtype. Also returns how many points
    that first block has (the memory rows run after it).
    """
    counts = [n for n in args.devices if n <= n_available]
    if not counts:
        raise SystemExit(f"--devices {args.devices}: only {n_available} devices available")
    points: dict[tuple[int, int], set] = {}
    for b in args.weak:
        for n in counts:
            points.setdefault((n, b), set()).add(f"weak{b}")
    for g in args.strong:
        for n in counts:
            if g % n == 0:
                points.setdefault((n, g // n), set()).add(f"strong{g}")
    for b in args.batches:
        points.setdefault((counts[0], b), set()).add("batch")
    first = [(n, args.weak[0]) for n in dict.fromkeys((counts[0], counts[-1]))] if args.weak else []
    single = [k for k in sorted(points) if k not in first and k[0] == counts[0]]
    rest = [k for k in sorted(points) if k not in first and k not in single]
    combos = [(st, dt) for dt in args.dtypes.split(",") for st in args.stages.split(",")]
    ordered = [(st, dt, *k) for k in first + single for st, dt in combos]
    ordered += [(st, dt, *k) for st, dt in combos for k in rest]
    return [(st, dt, n, b, points[(n, b)]) for st, dt, n, b in ordered], len(first) * len(combos)


def explicit_points(args, n_available: int):
    """`--points stage:dtype:devices:batch,...` in the given order, tagged with their series."""
    tags = {(n, b): series for _, _, n, b, series in plan(args, n_available)[0]}
    out = []
    for spec in args.points.split(","):
        stage, dtype, n, b = spec.split(":")
        if stage not in STAGES or dtype not in ("float32", "bfloat16") or int(n) > n_available:
            raise SystemExit(f"--points: bad point {spec!r} (stage:dtype:devices:batch)")
        out.append((stage, dtype, int(n), int(b), tags.get((int(n), int(b)), {"custom"})))
    return out


def done_points(path: pathlib.Path, common: dict, args) -> set:
    """Points already in `path` for this backend, device kind and model size (`--resume`)."""
    if not path.is_file():
        return set()
    done = set()
    for line in path.read_text().splitlines():
        r = json.loads(line) if line.strip() else {}
        same = [r.get(k) == common[k] for k in ("backend", "device_kind")]
        same += [r.get(k) == getattr(args, k) for k in ("frames", "layers", "channel", "d_hid")]
        if r.get("kind") == "train_step" and all(same):
            done.add((r["stage"], r["dtype"], r["device_count"], r["per_device_batch"]))
    return done


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu_devices", type=int, default=0, help="fake CPU devices (0: as JAX has)")
    p.add_argument("--devices", type=_ints, default=[1, 2, 4, 8], help="device counts")
    p.add_argument("--weak", type=_ints, default=[2], help="per-device batches (weak scaling)")
    p.add_argument("--strong", type=_ints, default=[16], help="global batches (strong scaling)")
    p.add_argument("--batches", type=_ints, default=[2, 4, 8, 16], help="batch sweep, 1 device")
    p.add_argument("--stages", default="lifter,pretrain", help="lifter (II), pretrain (I)")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--steps", type=int, default=3, help="timed steps per point (and pipelined)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after compilation")
    p.add_argument("--frames", type=int, default=243)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--channel", type=int, default=256)
    p.add_argument("--d_hid", type=int, default=512)
    p.add_argument("--temporal_ratio", type=float, default=-1, help="Stage I; -1: 0.8 (H36M)")
    p.add_argument("--matmul_n", type=int, default=0, help="matmul size; 0: 2048 CPU, 8192 else")
    p.add_argument("--memory_batches", type=_ints, default=[], help="compile-only, Stage II")
    p.add_argument("--fit_search", action="store_true", help="largest Stage II batch that runs")
    p.add_argument("--fit_limit", type=int, default=65536)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSONL file to append to")
    p.add_argument("--label", default="", help="free text stored in every row")
    p.add_argument("--points", default="", help="stage:dtype:devices:batch,... (this order)")
    p.add_argument("--resume", action="store_true", help="skip points already in --out")
    p.add_argument(
        "--budget_s", type=float, default=0, help="start no point after this (0: no limit)"
    )
    args = p.parse_args(argv)
    for s in args.stages.split(","):
        if s not in STAGES:
            p.error(f"unknown stage {s!r}; choose from {', '.join(STAGES)}")
    for d in args.dtypes.split(","):
        if d not in ("float32", "bfloat16"):
            p.error(f"unknown dtype {d!r}; choose float32 or bfloat16")
    if args.steps < 1 or min(args.devices + args.weak + args.strong + args.batches) < 1:
        p.error("--steps, --devices, --weak, --strong and --batches must be positive")
    return args


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
    args.matmul_n = args.matmul_n or (2048 if jax.default_backend() == "cpu" else 8192)
    dev = jax.devices()
    common = dict(
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        commit=_git_commit(), jax=jax.__version__, backend=jax.default_backend(),
        device_kind=dev[0].device_kind, devices_available=len(dev), host=platform.node(),
        cpu=_cpu_model(), cpu_count=os.cpu_count(), label=args.label,
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
