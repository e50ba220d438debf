"""The scaling sweep (experiments/scaling.py) and its report script run end to end at a tiny size.

No timing is asserted: the test keeps the scripts from rotting (fields present, series tagged,
one JSON line per point, plots and tables written from the JSONL).
"""

import importlib.util
import json
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = ["--frames", "9", "--layers", "1", "--channel", "16", "--d_hid", "32", "--steps", "2",
        "--matmul_n", "256"]  # fmt: skip


@pytest.fixture(scope="module")
def sweep_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("scaling") / "points.jsonl"
    scaling = _load("scaling")
    argv = TINY + [
        "--devices",
        "1,2",
        "--weak",
        "2",
        "--strong",
        "4",
        "--batches",
        "2",
        "--stages",
        "lifter",
        "--dtypes",
        "float32",
        "--memory_batches",
        "4",
        "--out",
        str(out),
    ]
    rows = scaling.main(argv)
    return rows, out


def test_scaling_sweep_writes_one_line_per_point(sweep_rows):
    rows, out = sweep_rows
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines == rows
    steps = [r for r in rows if r["kind"] == "train_step"]
    # weak2: (1 device, b=2), (2, 2); strong4: (1, 4), (2, 2); batch: (1, 2)
    points = sorted((r["stage"], r["device_count"], r["per_device_batch"]) for r in steps)
    assert points == [("lifter", 1, 2), ("lifter", 1, 4), ("lifter", 2, 2)]
    two = next(r for r in steps if r["stage"] == "lifter" and r["device_count"] == 2)
    assert two["series"] == ["strong4", "weak2"] and two["global_batch"] == 4
    for r in steps:
        for key in (
            "date",
            "commit",
            "jax",
            "backend",
            "device_kind",
            "loadavg_before",
            "loadavg_after",
            "compile_s",
            "step_ms",
            "step_ms_min",
            "step_ms_max",
            "samples_per_s",
            "idle_fraction",
            "utilisation",
            "matmul_gflops",
            "allreduce_ms",
        ):
            assert r[key] is not None, key
        assert len(r["step_ms_all"]) == 2
        assert r["step_ms_min"] <= r["step_ms"] <= r["step_ms_max"]
        assert 0.0 <= r["idle_fraction"] <= 1.0
        assert r["loss_finite"]
        assert r["flops_per_sample"] > 0 and r["bytes_per_sample"] > 0
        assert "peak_memory_bytes" in r  # None on CPU: no memory_stats()
    memory = [r for r in rows if r["kind"] == "memory"]
    assert [(r["stage"], r["per_device_batch"]) for r in memory] == [("lifter", 4)]
    assert memory[0]["xla_memory_bytes"] > 0


def test_scaling_report_makes_plots_and_tables(sweep_rows, tmp_path):
    _, out = sweep_rows
    report = _load("scaling_report")
    written = report.main(["--inputs", str(out), "--out_dir", str(tmp_path)])
    names = {p.name for p in written}
    assert {
        "throughput_vs_devices.png",
        "efficiency.png",
        "throughput_vs_batch.png",
        "fp32_vs_bf16.png",
        "memory_vs_batch.png",
        "tables.md",
    } <= names
    assert all((tmp_path / n).stat().st_size > 0 for n in names)
    assert "| stage |" in (tmp_path / "tables.md").read_text()


def test_learning_rate_warmup_is_linear_then_the_epoch_schedule():
    from aptpose_jax.defaults import base_config
    from aptpose_jax.train import learning_rate

    optim = base_config().optim
    optim.lr, optim.lr_decay = 1e-3, 0.5
    assert optim.warmup_steps == 0  # off by default: the reference schedule
    assert learning_rate(optim, 2, step=0) == pytest.approx(5e-4)
    optim.warmup_steps = 4
    got = [learning_rate(optim, 1, step=s) for s in range(6)]
    assert got == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert learning_rate(optim, 2, step=1) == pytest.approx(0.5 * 5e-4)  # decay x warm-up
    assert learning_rate(optim, 2) == pytest.approx(5e-4)  # no step: the epoch's lr
