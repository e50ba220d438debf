"""Markdown tables from the scaling sweep's rows (written by `scaling_report.py`).

Measured points, per-sample costs, scaling efficiency, the memory fit and the largest batch
that fits, the model's residuals on every measured point, the modelled pods, the time-to-train
tables and the learning-rate evidence. Everything is computed from the JSONL rows and
`scaling_model.py`; nothing is typed in by hand.
"""

from __future__ import annotations

import json
import pathlib
import statistics

import scaling_model as model

GB = 1e9


def series_points(rows: list[dict], series: str) -> list[dict]:
    return sorted(
        (r for r in rows if series in r.get("series", [])), key=lambda r: r["device_count"]
    )


def scaling_series(rows: list[dict]) -> dict:
    """{(stage, dtype, series): [(n, samples/s, efficiency), ...]} for weak*/strong* series."""
    out = {}
    names = {s for r in rows for s in r.get("series", []) if s.startswith(("weak", "strong"))}
    for r0 in {(r["stage"], r["dtype"]) for r in rows}:
        for s in sorted(names):
            pts = series_points([r for r in rows if (r["stage"], r["dtype"]) == r0], s)
            if len(pts) < 2 or pts[0]["device_count"] != 1:
                continue
            base = pts[0]["samples_per_s"]
            out[(*r0, s)] = [
                (
                    p["device_count"],
                    p["samples_per_s"],
                    p["samples_per_s"] / (p["device_count"] * base),
                )
                for p in pts
            ]
    return out


def memory_fit(rows: list[dict]) -> dict:
    """{(stage, dtype): (intercept bytes, bytes per sample, [(b, bytes)])}, one-device rows."""
    out = {}
    for key in {(r["stage"], r["dtype"]) for r in rows}:
        pts = sorted(
            {
                (r["per_device_batch"], r["xla_memory_bytes"])
                for r in rows
                if (r["stage"], r["dtype"]) == key
                and r["device_count"] == 1
                and r.get("xla_memory_bytes")
            }
        )
        if len(pts) < 2:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x in xs)
        out[key] = (my - slope * mx, slope, pts)
    return out


def _f(x, nd=1) -> str:
    return "-" if x is None else f"{x:,.{nd}f}"


def points_table(rows: list[dict]) -> list[str]:
    out = [
        "| stage | dtype | devices | batch/dev | global | samples/s | step ms median [min-max] "
        "| pipelined ms | idle | compile s | GFLOP/sample | util | XLA mem GB | load1 "
        "before/after |",
        "|" + "---|" * 14,
    ]
    steps = sorted(
        (r for r in rows if r["kind"] == "train_step"),
        key=lambda r: (r["stage"], r["dtype"], r["device_count"], r["per_device_batch"]),
    )
    for r in steps:
        mem = r["xla_memory_bytes"] / GB if r.get("xla_memory_bytes") else None
        out.append(
            f"| {r['stage']} | {r['dtype']} | {r['device_count']} | {r['per_device_batch']} | "
            f"{r['global_batch']} | {_f(r['samples_per_s'], 2)} | {_f(r['step_ms'], 0)} "
            f"[{_f(r['step_ms_min'], 0)}-{_f(r['step_ms_max'], 0)}] | {_f(r['pipelined_ms'], 0)} "
            f"| {_f(r['idle_fraction'], 3)} | {_f(r['compile_s'])} | "
            f"{_f(r['flops_per_sample'] / 1e9, 2)} | {_f(r['utilisation'], 3)} | {_f(mem, 2)} | "
            f"{r['loadavg_before'][0]} / {r['loadavg_after'][0]} |"
        )
    return out


def efficiency_table(rows: list[dict]) -> list[str]:
    out = ["| stage | dtype | series | devices: samples/s (efficiency) |", "|---|---|---|---|"]
    for (stage, dtype, s), pts in sorted(scaling_series(rows).items()):
        cells = ", ".join(f"{n}: {sps:.2f} ({eff:.2f})" for n, sps, eff in pts)
        out.append(f"| {stage} | {dtype} | {s} | {cells} |")
    return out


CAPACITY = [
    ("H100 80 GB", 80e9),
    ("H200 141 GB", 141e9),
    ("TPU v5e 16 GiB", 16 * 2**30),
    ("TPU v5p 95 GiB", 95 * 2**30),
    ("this host 23 GiB RAM", 23 * 2**30),
]


def memory_table(rows: list[dict]) -> list[str]:
    out = [
        "| stage | dtype | fixed GB | MB per sample | points (batch: GB) | "
        + " | ".join(f"largest batch, {name} (modelled)" for name, _ in CAPACITY)
        + " |",
        "|" + "---|" * (5 + len(CAPACITY)),
    ]
    for (stage, dtype), (a, c, pts) in sorted(memory_fit(rows).items()):
        fit = [str(int((cap - a) // c)) if c > 0 else "-" for _, cap in CAPACITY]
        cells = ", ".join(f"{b}: {y / GB:.2f}" for b, y in pts)
        out.append(
            f"| {stage} | {dtype} | {a / GB:.2f} | {c / 1e6:.1f} | {cells} | "
            + " | ".join(fit)
            + " |"
        )
    return out


def inputs_table(rows: list[dict]) -> list[str]:
    """The model's measured inputs per (stage, dtype, frames), medians over the points."""
    out = [
        "| stage | dtype | F, layers | parameters | gradient all-reduce MB | GFLOP/sample "
        "| MB accessed/sample | collectives (multi-device step) | host overhead ms "
        "| matmul GFLOP/s (1 device) | utilisation (1 device) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    steps = [r for r in rows if r["kind"] == "train_step"]
    for (stage, dtype, frames), c in sorted(model.stage_costs(steps).items()):
        group = [
            r for r in steps if (r["stage"], r["dtype"], r["frames"]) == (stage, dtype, frames)
        ]
        one = [r for r in group if r["device_count"] == 1]
        med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
        host = [r["host_overhead_ms"] for r in group if "host_overhead_ms" in r]
        out.append(
            f"| {stage} | {dtype} | {frames}, {c['layers']} | {c['n_params']:,} | "
            f"{4 * c['n_params'] / 1e6:.1f} | {c['flops'] / 1e9:.2f} | {c['bytes'] / 1e6:.0f} | "
            f"{c['collectives'] or '-'} | {_f(med(host), 2)} | "
            f"{_f(med([r['matmul_gflops'] for r in one]), 0)} | "
            f"{_f(med([r['utilisation'] for r in one]), 3)} |"
        )
    return out


def residual_table(rows: list[dict]) -> list[str]:
    out = [
        "| stage | dtype | devices | batch/dev | role | eta | measured ms | model ms "
        "| residual % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    preds = sorted(
        model.cpu_predictions(rows),
        key=lambda r: (r["stage"], r["dtype"], r["device_count"], r["per_device_batch"]),
    )
    for r in preds:
        role = "calibration" if r["calibration"] else "out of sample"
        out.append(
            f"| {r['stage']} | {r['dtype']} | {r['device_count']} | {r['per_device_batch']} "
            f"| {role} | {r['eta']:.3f} | {r['step_ms']:,.0f} | {r['model_ms']:,.0f} | "
            f"{r['residual_pct']:+.1f} |"
        )
    tested = [abs(r["residual_pct"]) for r in preds if not r["calibration"]]
    if tested:
        out += ["", f"Out of sample: {len(tested)} points, median |residual| "
                f"{statistics.median(tested):.1f}%, largest {max(tested):.1f}%."]  # fmt: skip
    return out


def pod_table(rows: list[dict]) -> list[str]:
    out = [
        "| stage | dtype | pod (MODELLED) | batch/dev | global | step ms compute-bound, eta "
        "0.15 / 0.30 / 0.50 | step ms roofline with XLA:CPU bytes (eta 0.30) | samples/s "
        "(compute-bound, eta 0.30) | all-reduce ms | weak-scaling efficiency (roofline) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    costs = model.stage_costs([r for r in rows if r["kind"] == "train_step" and r["frames"] == 243])
    for p in model.pod_predictions(costs):
        t = p["step_ms"]
        out.append(
            f"| {p['stage']} F={p['frames']} | {p['dtype']} | {p['pod']} | "
            f"{p['per_device_batch']} | "
            f"{p['global_batch']} | {t['low']:.2f} / {t['mid']:.2f} / {t['high']:.2f} | "
            f"{t['roofline']:.2f} | "
            f"{p['samples_per_s']:,.0f} | {p['allreduce_ms']:.3f} | {p['efficiency']:.3f} |"
        )
    return out


EPOCHS = {243: ("H36M", model.H36M_EPOCH), 81: ("3DHP", model.MPI3DHP_EPOCH)}
RECIPES = {243: ("pretrain", "lifter"), 81: ("pretrain", "lifter_nomask")}


def ttt_measured(rows: list[dict]) -> list[str]:
    """Time to train from the best measured samples/s of each (machine, stage, dtype, devices)."""
    out = [
        "| machine (MEASURED throughput) | data | stage | dtype | devices | best point "
        "(batch/dev) | samples/s | 80 epochs: days | device-hours |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    best: dict = {}
    for r in rows:
        if r["kind"] != "train_step" or r["frames"] not in EPOCHS:
            continue
        if r["backend"] == "cpu" and r["device_count"] > 1:  # fake devices share the same cores
            continue
        machine = r["cpu"] if r["backend"] == "cpu" else r["device_kind"]
        key = (f"{r['backend']} {machine}", r["frames"], r["stage"], r["dtype"], r["device_count"])
        if key not in best or r["samples_per_s"] > best[key]["samples_per_s"]:
            best[key] = r
    for (machine, frames, stage, dtype, n), r in sorted(best.items()):
        data, epoch = EPOCHS[frames]
        hours, dev_hours = model.time_to_train(r["samples_per_s"], n, epoch=epoch)
        out.append(
            f"| {machine} | {data} F={frames} | {stage} | {dtype} | {n} | {r['per_device_batch']}"
            f" | {r['samples_per_s']:.2f} | {hours / 24:,.0f} | {dev_hours:,.0f} |"
        )
    return out


def ttt_modelled(rows: list[dict], global_batch: int = model.PAPER_BATCH) -> list[str]:
    """Modelled Stage I + II time at the paper's global batch and at 8x it (eta 0.30)."""
    costs = model.stage_costs([r for r in rows if r["kind"] == "train_step"])
    out = [
        "| data | pod (MODELLED, eta 0.30) | dtype | global batch | Stage I h | Stage II h "
        "| I + II wall h | device-hours | I + II wall h, compute-bound |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    dtypes = sorted({k[1] for k in costs})
    for frames, (data, epoch) in EPOCHS.items():
        for dtype in dtypes:
            keys = [(st, dtype, frames) for st in RECIPES[frames]]
            # a stage measured in fp32 only: its fp32 per-sample cost (bf16 differs by <1%)
            keys = [k if k in costs else (k[0], "float32", k[2]) for k in keys]
            if not all(k in costs for k in keys):
                continue
            label_dtype = dtype + ("*" if any(k[1] != dtype for k in keys) else "")
            for label, chip, n in model.PODS:
                for g in (global_batch, 8 * global_batch):
                    if g % n:
                        continue
                    b = g // n
                    h = [
                        model.time_to_train(
                            g / model.step_time(chip, n, b, costs[k], dtype, model.ETA["mid"]),
                            n,
                            epoch=epoch,
                        )[0]
                        for k in keys
                    ]
                    c = [
                        model.time_to_train(
                            g / model.step_time(chip, n, b, costs[k], dtype, 0.3, memory=False),
                            n,
                            epoch=epoch,
                        )[0]
                        for k in keys
                    ]
                    out.append(
                        f"| {data} | {label} | {label_dtype} | {g} | {h[0]:.2f} | {h[1]:.2f} | "
                        f"{sum(h):.2f} | {sum(h) * n:.1f} | {sum(c):.2f} |"
                    )
    return out


def lr_table(path: pathlib.Path) -> list[str]:
    """The learning-rate runs of experiments/lr_scaling.py (demo data), if any."""
    out = [
        "| batch | rule | lr | warm-up steps | steps | samples | final train loss | P1 mm | P2 mm "
        "| model (F, layers, C, H) | wall s | load1 before/after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path else []
    for r in rows:
        out.append(
            f"| {r['batch']} | {r['rule']} | {r['lr']:.2e} | {r['warmup_steps']} | {r['steps']} "
            f"| {r['samples']:,} | {r['final_train_loss']:.3f} | {r['p1']:.1f} | {r['p2']:.1f} | "
            f"{r['frames']}, {r['layers']}, {r['channel']}, {r['d_hid']} | {r['wall_s']:.0f} | "
            f"{r['loadavg'][0]} / {r['loadavg'][1]} |"
        )
    return out


def write_tables(rows: list[dict], path: pathlib.Path, lr_path=None) -> None:
    sections = [
        ("Measured points", points_table(rows)),
        ("Per-sample cost and other model inputs (measured)", inputs_table(rows)),
        ("Scaling efficiency (measured)", efficiency_table(rows)),
        (
            "Memory per device and the largest batch that fits (XLA buffer assignment, linear fit)",
            memory_table(rows),
        ),
        (
            "Model vs every measured point (residual = (measured - model) / model)",
            residual_table(rows),
        ),
        ("Modelled pods (per-sample cost measured here, chip figures published)", pod_table(rows)),
        (
            "Time to train from measured throughput (H36M: 2,928,800 windows x 80 epochs)",
            ttt_measured(rows),
        ),
        (
            "Time to train, modelled pods (H36M Stage I + Stage II, 80 epochs each)",
            ttt_modelled(rows),
        ),
        ("Learning rate beyond batch 160 (Stage II, demo data, small model)", lr_table(lr_path)),
    ]
    text = "".join(f"### {title}\n\n" + "\n".join(lines) + "\n\n" for title, lines in sections)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
