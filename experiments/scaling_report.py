"""Plots and tables from the scaling sweep's JSONL (experiments/scaling.py).

Writes into `--out_dir` (default experiments/results/):

* throughput_vs_devices.png: samples/s against device count, weak and strong series, with the
  ideal line (n x the one-device figure of the series);
* efficiency.png: scaling efficiency samples/s(n) / (n x samples/s(1)) of every series;
* throughput_vs_batch.png: samples/s against the per-device batch (batch series);
* fp32_vs_bf16.png: the two compute dtypes side by side at every batch of the batch series;
* memory_vs_batch.png: per-device memory against the per-device batch (XLA's buffer assignment,
  and the backend's peak where it reports one), with a straight-line fit;
* tables.md (`scaling_tables.py`): the measured points, the memory fit and the largest batch
  that fits, the model's residuals on every measured point, the modelled pods, and the
  time-to-train tables.

  python experiments/scaling_report.py [--inputs experiments/results/scaling.jsonl]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "experiments") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "experiments"))

from scaling_tables import memory_fit, scaling_series, write_tables  # noqa: E402

RESULTS = REPO_ROOT / "experiments" / "results"
MARK = {"float32": "o-", "bfloat16": "s--"}
GB = 1e9


def load(paths: list[str]) -> list[dict]:
    """All rows of the JSONL files; a point measured twice keeps its latest row."""
    rows: dict = {}
    for path in paths:
        for line in pathlib.Path(path).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                key = (
                    r["backend"],
                    r["device_kind"],
                    r["kind"],
                    r["stage"],
                    r["dtype"],
                    r["frames"],
                    r["layers"],
                    r["channel"],
                    r["device_count"],
                    r["per_device_batch"],
                )
                rows[key] = r
    return list(rows.values())


def _axes(plt, n: int, title: str):
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4), squeeze=False)
    fig.suptitle(title, fontsize=10)
    return fig, axes[0]


def _save(fig, path: pathlib.Path, written: list) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    written.append(path)


def plot_scaling(plt, rows, out_dir, written) -> None:
    series = scaling_series(rows)
    stages = sorted({k[0] for k in series}) or ["(none)"]
    fig, axes = _axes(plt, len(stages), "samples/s vs devices (measured; dotted: ideal)")
    fig2, axes2 = _axes(plt, len(stages), "scaling efficiency samples/s(n) / (n samples/s(1))")
    for ax, ax2, stage in zip(axes, axes2, stages, strict=True):
        for (st, dtype, s), pts in sorted(series.items()):
            if st != stage:
                continue
            n, sps, eff = zip(*pts, strict=True)
            (line,) = ax.plot(n, sps, MARK[dtype], label=f"{dtype} {s}")
            ax.plot(n, [sps[0] * k for k in n], ":", color=line.get_color())
            ax2.plot(n, eff, MARK[dtype], label=f"{dtype} {s}")
        for a, ylabel in ((ax, "samples/s"), (ax2, "efficiency")):
            a.set(title=stage, xlabel="devices", ylabel=ylabel)
            a.set_xscale("log", base=2)
            a.legend(fontsize=7)
        ax2.axhline(1.0, color="grey", lw=0.5)
    _save(fig, out_dir / "throughput_vs_devices.png", written)
    _save(fig2, out_dir / "efficiency.png", written)


def plot_batch(plt, rows, out_dir, written) -> None:
    pts = [r for r in rows if "batch" in r.get("series", [])]
    stages = sorted({r["stage"] for r in pts}) or ["(none)"]
    fig, axes = _axes(plt, len(stages), "samples/s vs per-device batch (fewest devices)")
    fig2, axes2 = _axes(plt, len(stages), "fp32 vs bf16 samples/s (batch series)")
    for ax, ax2, stage in zip(axes, axes2, stages, strict=True):
        dtypes = sorted({r["dtype"] for r in pts if r["stage"] == stage})
        batches = sorted({r["per_device_batch"] for r in pts if r["stage"] == stage})
        width = 0.8 / max(len(dtypes), 1)
        for i, dtype in enumerate(dtypes):
            sel = sorted(
                (r for r in pts if (r["stage"], r["dtype"]) == (stage, dtype)),
                key=lambda r: r["per_device_batch"],
            )
            b = [r["per_device_batch"] for r in sel]
            ax.plot(b, [r["samples_per_s"] for r in sel], MARK[dtype], label=dtype)
            lo = [r["samples_per_s"] - r["global_batch"] / (r["step_ms_min"] / 1e3) for r in sel]
            hi = [r["global_batch"] / (r["step_ms_max"] / 1e3) - r["samples_per_s"] for r in sel]
            ax.errorbar(
                b,
                [r["samples_per_s"] for r in sel],
                yerr=[[-x for x in lo], [-x for x in hi]],
                fmt="none",
                ecolor="grey",
                capsize=2,
            )
            by_b = {r["per_device_batch"]: r["samples_per_s"] for r in sel}
            ax2.bar(
                [j + i * width for j in range(len(batches))],
                [by_b.get(x, 0) for x in batches],
                width,
                label=dtype,
            )
        ax.set(title=stage, xlabel="per-device batch", ylabel="samples/s")
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
        ax2.set_xticks(
            [j + 0.4 - width / 2 for j in range(len(batches))], [str(x) for x in batches]
        )
        ax2.set(title=stage, xlabel="per-device batch", ylabel="samples/s")
        ax2.legend(fontsize=7)
    _save(fig, out_dir / "throughput_vs_batch.png", written)
    _save(fig2, out_dir / "fp32_vs_bf16.png", written)


def plot_memory(plt, rows, out_dir, written) -> None:
    fits = memory_fit(rows)
    fig, axes = _axes(plt, 1, "per-device memory vs batch (one device)")
    ax = axes[0]
    for (stage, dtype), (a, c, pts) in sorted(fits.items()):
        xs = [p[0] for p in pts]
        (line,) = ax.plot(xs, [p[1] / GB for p in pts], MARK[dtype][0], label=f"{stage} {dtype}")
        ax.plot(xs, [(a + c * x) / GB for x in xs], "-", lw=0.7, color=line.get_color())
    peaks = [r for r in rows if r.get("peak_memory_bytes") and r["device_count"] == 1]
    for r in peaks:
        ax.plot(r["per_device_batch"], r["peak_memory_bytes"] / GB, "k^", ms=4)
    ax.set(xlabel="per-device batch", ylabel="GB (XLA buffer assignment; ^ backend peak)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    _save(fig, out_dir / "memory_vs_batch.png", written)


def main(argv=None) -> list[pathlib.Path]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", nargs="+", default=[str(RESULTS / "scaling.jsonl")])
    p.add_argument("--out_dir", default=str(RESULTS))
    p.add_argument("--lr_input", default=str(RESULTS / "lr_scaling.jsonl"))
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = load(args.inputs)
    out_dir = pathlib.Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[pathlib.Path] = []
    steps = [r for r in rows if r["kind"] == "train_step"]
    plot_scaling(plt, steps, out_dir, written)
    plot_batch(plt, steps, out_dir, written)
    plot_memory(plt, [r for r in rows if r["kind"] in ("train_step", "memory")], out_dir, written)
    lr_path = pathlib.Path(args.lr_input)
    write_tables(rows, out_dir / "tables.md", lr_path if lr_path.is_file() else None)
    written.append(out_dir / "tables.md")
    plt.close("all")
    return written


if __name__ == "__main__":
    for path in main():
        print(path)
