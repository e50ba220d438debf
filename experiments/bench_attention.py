"""Attention implementations (models/attention.py): correctness against "xla", then speed and
memory of each available one.

1. Correctness: every available impl against "xla" in float32 with Precision.HIGHEST, forward
   and gradients of sum(out * w) wrt q, k, v, at dropout 0 and 0.1 (`--check-batch` samples).
2. Timing: fwd+bwd (train: jax.grad of sum(out * w)) and fwd only (eval), at `--batch`, H=8,
   T=`--frames`, D=`--dim`, per dtype ("bf16"; "fp32" = float32 with HIGHEST, true fp32 dots;
   "tf32" = float32 with DEFAULT, the backend's choice) and dropout rate (train 0.1, eval 0):
   median of `--steps` calls after `--warmup`, with block_until_ready. Each figure also holds
   XLA's memory analysis of the compiled computation (temporaries, arguments, outputs) beside
   the size of one float32 (B, H, T, T) tensor, so one sees whether such a tensor is live.

One JSON line per figure (failures, e.g. a Triton lowering error, are lines with an "error"
field), a short table last.

  .venv/bin/python experiments/bench_attention.py                     # GPU: B=1024, T=243
  .venv/bin/python experiments/bench_attention.py --batch 2 --frames 27 --steps 2   # CPU smoke
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import statistics
import sys
import time
import traceback
import warnings

import jax
import jax.numpy as jnp
import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
for _path in (REPO_ROOT, REPO_ROOT / "experiments"):  # run as a file
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from aptpose_jax.models.attention import attention, available_impls  # noqa: E402

HEADS = 8
SEED = np.array([0x12345678, 0x9ABCDEF0], np.uint32)
DTYPES = {  # name: (operand dtype, precision of the float32 dots)
    "bf16": (jnp.bfloat16, jax.lax.Precision.DEFAULT),
    "fp32": (jnp.float32, jax.lax.Precision.HIGHEST),
    "tf32": (jnp.float32, jax.lax.Precision.DEFAULT),
}


def _commit() -> str:
    try:
        import measure

        return measure.git_commit()
    except Exception:  # noqa: BLE001 - the figure matters more than its provenance
        return "unknown"


def _inputs(batch: int, frames: int, dim: int, dtype, seed: int = 0):
    """q (scaled by 1/sqrt(D) like the model), k, v in `dtype`; w float32 (B, H, T, D)."""
    keys = jax.random.split(jax.random.key(seed), 4)
    shape = (batch, HEADS, frames, dim)
    q, k, v, w = (jax.random.normal(key, shape, jnp.float32) for key in keys)
    q = q / np.sqrt(dim)
    return q.astype(dtype), k.astype(dtype), v.astype(dtype), w


def _fns(impl: str, rate: float, precision, block):
    """(eval_fn(q, k, v, seed), train_fn(q, k, v, w, seed)) for jax.jit."""

    def fwd(q, k, v, seed):
        return attention(
            q, k, v, dropout_rate=rate, seed=seed if rate else None, impl=impl,
            precision=precision, block=block,
        )  # fmt: skip

    def train(q, k, v, w, seed):
        return jax.grad(lambda q, k, v: jnp.sum(fwd(q, k, v, seed) * w), argnums=(0, 1, 2))(q, k, v)

    return fwd, train


def _max_err(a, b) -> float:
    return float(jnp.max(jnp.abs(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32))))


def check(impl: str, args, emit) -> None:
    """impl vs "xla" (float32, HIGHEST): forward and q, k, v gradients, dropout 0 and 0.1."""
    q, k, v, w = _inputs(args.check_batch, args.frames, args.dim, jnp.float32, seed=1)
    seed = jnp.asarray(SEED)
    for rate in (0.0, 0.1):
        row = {"kind": "check", "impl": impl, "rate": rate, "batch": args.check_batch}
        try:
            errs = {}
            for fn_of in (0, 1):  # forward, gradients
                ref_fn = jax.jit(_fns("xla", rate, jax.lax.Precision.HIGHEST, None)[fn_of])
                fn = jax.jit(_fns(impl, rate, jax.lax.Precision.HIGHEST, args.block)[fn_of])
                call = (q, k, v, seed) if fn_of == 0 else (q, k, v, w, seed)
                ref, out = ref_fn(*call), fn(*call)
                if fn_of == 0:
                    errs["fwd"] = _max_err(out, ref)
                else:
                    for n, g, r in zip("qkv", out, ref, strict=True):
                        errs[f"d{n}"] = _max_err(g, r)
                        errs[f"d{n}_scale"] = float(jnp.max(jnp.abs(r)))
            row.update(errs)
            row["ok"] = all(errs[x] <= 1e-4 * max(1.0, errs.get(x + "_scale", 1.0))
                            for x in ("fwd", "dq", "dk", "dv"))  # fmt: skip
        except Exception as e:  # noqa: BLE001 - report per impl and go on
            row["error"] = _error(e)
        emit(row)


def _error(e: BaseException) -> str:
    tb = traceback.format_exception(type(e), e, e.__traceback__)
    return (f"{type(e).__name__}: {e}"[:3000] + " | " + "".join(tb[-3:])[-1500:]).strip()


def _memory(compiled) -> dict:
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - some backends have none
        return {}
    if m is None:
        return {}
    return {
        "temp_bytes": int(m.temp_size_in_bytes),
        "argument_bytes": int(m.argument_size_in_bytes),
        "output_bytes": int(m.output_size_in_bytes),
    }


def time_one(impl: str, dtype_name: str, rate: float, mode: str, args) -> dict:
    """One figure: compile, warm up, median of `--steps` timed calls, memory analysis."""
    dtype, precision = DTYPES[dtype_name]
    q, k, v, w = _inputs(args.batch, args.frames, args.dim, dtype)
    seed = jnp.asarray(SEED)
    fwd, train = _fns(impl, rate, precision, args.block)
    fn, call = (fwd, (q, k, v, seed)) if mode == "eval" else (train, (q, k, v, w, seed))
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*call).compile()
    compile_s = time.perf_counter() - t0
    for _ in range(args.warmup):
        jax.block_until_ready(compiled(*call))
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*call))
        times.append(time.perf_counter() - t0)
    bhtt = args.batch * HEADS * args.frames * args.frames * 4
    mem = _memory(compiled)
    row = {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times),
           "compile_s": round(compile_s, 2), "bhtt_f32_bytes": bhtt, **mem}  # fmt: skip
    if "temp_bytes" in mem:
        row["temp_over_bhtt"] = round(mem["temp_bytes"] / bhtt, 3)
    return row


def _skip_reason(impl: str, dtype_name: str, rate: float) -> str | None:
    if impl == "cudnn" and rate > 0:
        return "cudnn: evaluation only (no dropout)"
    if impl == "cudnn" and dtype_name != "bf16":
        return "cudnn: needs bfloat16"
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--frames", type=int, default=243)
    p.add_argument("--dim", type=int, default=32, help="head dim D = C / 8")
    p.add_argument("--steps", type=int, default=20, help="timed calls per figure")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--check-batch", type=int, default=4)
    p.add_argument("--impls", default="", help="comma list; default: available_impls(backend)")
    p.add_argument("--dtypes", default="bf16,fp32,tf32")
    p.add_argument("--block", type=int, default=None, help="pallas rows per program")
    p.add_argument("--no-check", action="store_true")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*Pallas Triton backend is deprecated.*")

    backend = jax.default_backend()
    impls = args.impls.split(",") if args.impls else list(available_impls(backend))
    command = " ".join([pathlib.Path(__file__).name, *(argv or sys.argv[1:])])
    base = {
        "date": datetime.date.today().isoformat(),
        "commit": _commit(),
        "backend": backend,
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "command": command,
    }
    rows = []

    def emit(row):
        row = {**base, **row}
        rows.append(row)
        print(json.dumps(row), flush=True)

    if not args.no_check:
        for impl in impls:
            if impl != "xla":
                check(impl, args, emit)
    shape = {"batch": args.batch, "heads": HEADS, "frames": args.frames, "dim": args.dim}
    for impl in impls:
        for dtype_name in args.dtypes.split(","):
            for mode, rate in (("train", 0.1), ("eval", 0.0)):
                row = {"kind": "time", "impl": impl, "dtype": dtype_name, "mode": mode,
                       "rate": rate, **shape}  # fmt: skip
                reason = _skip_reason(impl, dtype_name, rate)
                if reason:
                    row["skipped"] = reason
                else:
                    try:
                        row.update(time_one(impl, dtype_name, rate, mode, args))
                    except Exception as e:  # noqa: BLE001 - report per impl and go on
                        row["error"] = _error(e)
                emit(row)
    _table(rows)
    return 0


def _table(rows) -> None:
    print("\nimpl    dtype mode  rate  median_ms  temp_MB  temp/BHTT  compile_s  note")
    for r in rows:
        if r["kind"] == "check":
            note = r.get("error", "")[:60] or ("ok" if r.get("ok") else "MISMATCH")
            errs = " ".join(f"{x}={r[x]:.1e}" for x in ("fwd", "dq", "dk", "dv") if x in r)
            print(f"{r['impl']:7s} check      {r['rate']:<4}  {errs}  {note}")
            continue
        note = r.get("skipped") or r.get("error", "")[:60]
        ms = f"{r['median_ms']:9.3f}" if "median_ms" in r else " " * 9
        mb = f"{r['temp_bytes'] / 2**20:8.2f}" if "temp_bytes" in r else " " * 8
        ratio = f"{r['temp_over_bhtt']:9.3f}" if "temp_over_bhtt" in r else " " * 9
        cs = f"{r['compile_s']:9.2f}" if "compile_s" in r else " " * 9
        print(f"{r['impl']:7s} {r['dtype']:5s} {r['mode']:5s} {r['rate']:<4}  {ms}  {mb}  "
              f"{ratio}  {cs}  {note}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
