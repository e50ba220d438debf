"""A step-time model for data-parallel training of the APTPose stages on hardware we cannot run.

Every figure it prints for a GPU or TPU is MODELLED, not measured. Inputs (see
`experiments/SCALING.md` for the derivation, the sources and every assumption):

* measured per-sample FLOPs and bytes of the compiled training step (XLA cost analysis, rows
  of `experiments/scaling.py`);
* the gradient all-reduce volume: parameters x 4 bytes (fp32 gradients);
* published chip peaks, HBM bandwidths and interconnect bandwidths (`HARDWARE`, cited).

Step time of n devices at per-device batch b:

    t(n, b) = t_host + b * max(flops / (eta * peak), bytes / hbm) + allreduce(n) + k alpha
    allreduce(n) = 2 (n - 1) / n * 4 P / bw_allreduce          (ring / torus all-reduce)

with eta the fraction of the vendor peak that the step reaches (assumed, ETA), t_host the
host's dispatch cost per step (assumed, T_HOST_S) and, for n > 1, k collectives (counted in the
compiled step) of an assumed latency alpha each. No overlap of the
all-reduce with the backward pass is assumed (a pessimistic bound on communication).

For the fake CPU devices of this machine the same formula is checked against every measured
point with peak = the matmul FLOP/s measured on the same n devices in the same run (the fake
devices share the same cores, so the aggregate peak does not grow with n), bw from the measured
all-reduce, and eta calibrated on one point per (stage, dtype): every other point is out of
sample.
"""

from __future__ import annotations

import dataclasses
import statistics

# H36M recipe (issue 11): windows per epoch including flips, epochs per stage.
H36M_EPOCH = 2_928_800
EPOCHS_PER_STAGE = 80
# MPI-INF-3DHP training frames per (subject, sequence), official counts (P-STMO / APTPose
# `common/utils_3dhp.py`), 8 cameras, one window per frame, flip augmentation doubles it.
MPI3DHP_FRAMES = (6416, 12430, 6502, 6081, 12488, 12283, 6171, 6675,
                  12820, 12312, 6188, 6145, 6239, 6320, 6468, 6054)  # fmt: skip
MPI3DHP_EPOCH = sum(MPI3DHP_FRAMES) * 8 * 2
PAPER_BATCH = 160
# Assumed fraction of the bf16 vendor peak a training step reaches on an accelerator: a range,
# not a measurement (see SCALING.md, assumption A3).
ETA = {"low": 0.15, "mid": 0.30, "high": 0.50}
T_HOST_S = 1e-3  # assumed host dispatch cost per step on an accelerator host (A5)


@dataclasses.dataclass(frozen=True)
class Chip:
    """Published per-chip figures (sources in SOURCES, keyed by `source`)."""

    name: str
    bf16_flops: float  # dense, FLOP/s
    fp32_flops: float  # what an fp32 matmul runs at (A4), FLOP/s
    hbm_bytes: float  # capacity
    hbm_bw: float  # bytes/s
    allreduce_bw: float  # bytes/s per chip available to an all-reduce (A2)
    alpha: float  # assumed latency per collective, s (A6)
    source: str


SOURCES = {
    "h100": "NVIDIA H100 SXM5 figures as collected from NVIDIA's Hopper documents at "
    "https://glennklockwood.com/garden/processors/h100 (BF16 dense 989.4 TFLOP/s, TF32 dense "
    "494.7, FP32 66.9; 80 GB HBM3, 3.35 TB/s; NVLink 900 GB/s)",
    "h200": "NVIDIA H200 SXM: same GH100 compute as H100, 141 GB HBM3e at 4.8 TB/s, NVLink 4 "
    "900 GB/s bidirectional (450 GB/s per direction): https://aiwiki.ai/wiki/nvidia_h200 , "
    "https://www.saulelectric.com/nvidia-h200.html , https://glennklockwood.com/garden/processors/h100",
    "v5e": "Google Cloud TPU v5e: https://docs.cloud.google.com/tpu/docs/v5e (197 TFLOP/s "
    "bf16, 16 GiB HBM, 819 GB/s, ICI 400 GB/s bidirectional per chip, 4 ports, 2D torus, 8 "
    "chips per host, 256 chips per pod, all-reduce bandwidth per pod 51.2 TB/s)",
    "v5p": "Google Cloud TPU v5p: https://cloud.google.com/tpu/docs/v5p-training (459 TFLOP/s "
    "bf16, 95 GiB HBM2e, 2765 GB/s, ICI 1200 GB/s bidirectional per chip, 3D torus, 2 "
    "TensorCores per chip: v5p-128 = 4x4x4 = 64 chips)",
}

H100 = Chip("H100 SXM", 989.4e12, 494.7e12, 80e9, 3.35e12, 450e9, 10e-6, "h100")
H200 = Chip("H200 SXM", 989.4e12, 494.7e12, 141e9, 4.8e12, 450e9, 10e-6, "h200")
# v5e: 51.2 TB/s all-reduce per 256-chip pod = 200 GB/s per chip (published); v5p: half its
# bidirectional ICI, by the same ratio as v5e (400 -> 200), assumption A2.
V5E = Chip("TPU v5e", 197e12, 197e12, 16 * 2**30, 819e9, 200e9, 5e-6, "v5e")
V5P = Chip("TPU v5p", 459e12, 459e12, 95 * 2**30, 2765e9, 600e9, 5e-6, "v5p")

# (label, chip, chips): the pod configurations the issue asks about.
PODS = (
    ("8xH100 (NVLink)", H100, 8),
    ("8xH200 (NVLink)", H200, 8),
    ("TPU v5e-8", V5E, 8),
    ("TPU v5e-64", V5E, 64),
    ("TPU v5e-256", V5E, 256),
    ("TPU v5p-128", V5P, 64),
)


def allreduce_s(n: int, n_params: int, bw: float) -> float:
    """Ring all-reduce time of n_params fp32 gradients over n devices at `bw` bytes/s each."""
    return 0.0 if n == 1 else 2 * (n - 1) / n * 4 * n_params / bw


def step_time(chip: Chip, n: int, b: int, cost: dict, dtype: str, eta: float,
              t_host: float = T_HOST_S, memory: bool = True) -> float:  # fmt: skip
    """Modelled step time (s) of n chips at per-device batch b (see the module docstring).

    `memory=False` drops the HBM roofline term (compute-bound at eta; A8).
    """
    peak = chip.bf16_flops if dtype == "bfloat16" else chip.fp32_flops
    hbm = cost["bytes"] / chip.hbm_bw if memory else 0.0
    compute = b * max(cost["flops"] / (eta * peak), hbm)
    latency = cost.get("collectives", 0) * chip.alpha if n > 1 else 0.0
    return t_host + compute + allreduce_s(n, cost["n_params"], chip.allreduce_bw) + latency


def stage_costs(rows: list[dict]) -> dict:
    """Per (stage, dtype, frames): median FLOPs and bytes per sample, parameters, collectives."""
    groups: dict = {}
    for r in rows:
        if r.get("flops_per_sample") and r.get("bytes_per_sample"):
            groups.setdefault((r["stage"], r["dtype"], r["frames"]), []).append(r)
    # Collectives per step do not depend on the dtype: count them per (stage, frames), and
    # where a stage has no multi-device point, take the largest count of any stage (A6).
    count = lambda r: sum((r.get("collectives") or {}).values())  # noqa: E731
    multi = [r for r in rows if r["device_count"] > 1 and r.get("collectives")]
    fallback = max((count(r) for r in multi), default=0)
    coll = {}
    for r in multi:
        coll[(r["stage"], r["frames"])] = max(coll.get((r["stage"], r["frames"]), 0), count(r))
    return {
        k: dict(
            flops=statistics.median(r["flops_per_sample"] for r in v),
            bytes=statistics.median(r["bytes_per_sample"] for r in v),
            n_params=v[0]["n_params"],
            collectives=coll.get((k[0], k[2]), fallback),
            frames=v[0]["frames"],
            layers=v[0]["layers"],
        )
        for k, v in groups.items()
    }


def cpu_predictions(rows: list[dict]) -> list[dict]:
    """The model against every measured train-step row: prediction, residual (measured - model).

    Calibration: eta per (stage, dtype, frames) = the utilisation of ONE point, the
    fewest-device point with the smallest batch (`calibration=True`); every other point of the
    group is out of sample: its residual tests the model's batch and device dependence.
    """
    steps = [r for r in rows if r["kind"] == "train_step" and r.get("utilisation")]
    ident = lambda r: (r["stage"], r["dtype"], r["frames"])  # noqa: E731
    anchor = {}
    for r in sorted(steps, key=lambda r: (r["device_count"], r["per_device_batch"])):
        anchor.setdefault(ident(r), r)
    out = []
    for r in steps:
        a = anchor[ident(r)]
        e = a["utilisation"]
        compute = r["global_batch"] * r["flops_per_sample"] / (e * r["matmul_gflops"] * 1e9)
        allreduce = r["allreduce_ms"] / 1e3 if r["device_count"] > 1 else 0.0  # n=1: no reduce
        pred = r.get("host_overhead_ms", 0.0) / 1e3 + compute + allreduce
        meas = r["step_ms"] / 1e3
        out.append(dict(r, eta=e, calibration=r is a, model_ms=round(1e3 * pred, 1),
                        residual_pct=round(100 * (meas - pred) / pred, 1)))  # fmt: skip
    return out


def pod_predictions(costs: dict, per_device_batches=(20, 64, 160)) -> list[dict]:
    """Modelled step time, samples/s and weak-scaling efficiency for every pod in PODS."""
    out = []
    for (stage, dtype, frames), cost in sorted(costs.items()):
        for label, chip, n in PODS:
            for b in per_device_batches:
                t = {k: step_time(chip, n, b, cost, dtype, e, memory=False) for k, e in ETA.items()}
                t["roofline"] = step_time(chip, n, b, cost, dtype, ETA["mid"])
                t1 = step_time(chip, 1, b, cost, dtype, ETA["mid"])
                out.append(dict(
                    stage=stage, dtype=dtype, frames=frames, pod=label, chips=n, per_device_batch=b,
                    global_batch=n * b, step_ms={k: 1e3 * v for k, v in t.items()},
                    samples_per_s=n * b / t["mid"], efficiency=t1 / t["roofline"],
                    allreduce_ms=1e3 * allreduce_s(n, cost["n_params"], chip.allreduce_bw),
                ))  # fmt: skip
    return out


def time_to_train(samples_per_s: float, devices: int, epoch: int = H36M_EPOCH,
                  epochs: int = EPOCHS_PER_STAGE) -> tuple[float, float]:  # fmt: skip
    """(wall hours, device hours) of `epochs` epochs of `epoch` windows at `samples_per_s`."""
    hours = epochs * epoch / samples_per_s / 3600
    return hours, hours * devices
