"""experiments/bench_reference.py without the official checkout: its error paths, and its rows.

A stand-in "checkout" (a stub Stage II model with the official call signature and output
shapes, and the two loss helpers) drives the benchmark loop end to end; the rows' field names
are checked against those `bench_train.py` prints.
"""

import ast
import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "experiments" / "bench_reference.py"
SMALL = ["--frames", "9", "--layers", "1", "--channel", "8", "--d_hid", "8", "--batches", "2",
         "--steps", "1", "--warmup", "0", "--impls", "eager", "--device", "cpu"]  # fmt: skip
# Fields only the PyTorch side has (what it ran, and the torch settings it ran with).
REFERENCE_ONLY = {
    "impl", "framework", "official_commit", "torch_version", "allow_tf32", "cudnn_allow_tf32",
    "cudnn_benchmark", "cudnn_deterministic", "threads", "layers", "channel", "d_hid", "error",
    "compiled_frames", "compiled_graphs", "compile_fallbacks",
}  # fmt: skip

STUB_MODEL = """
import torch


class Model(torch.nn.Module):
    def __init__(self, args):
        super().__init__()
        self.j, self.f = args.out_joints, args.frames
        self.lin = torch.nn.Linear(2 * args.n_joints, 6 * args.out_joints - 3)

    def forward(self, x_in, mask, spatial_mask, bone_mask, limb_mask1, limb_mask2):
        assert spatial_mask.shape == bone_mask.shape == (self.f, self.j)
        b = x_in.shape[0]
        x = x_in[..., 0].permute(0, 2, 3, 1).reshape(b, self.f, -1)
        y = self.lin(x)  # (B, F, 3 * (2J - 1))
        pose = y[..., : 3 * self.j].reshape(b, self.f, self.j, 3).permute(0, 3, 1, 2)[..., None]
        bone = y[..., 3 * self.j :].reshape(b, self.f, self.j - 1, 3).permute(0, 3, 1, 2)[..., None]
        c = self.f // 2
        return pose[:, :, c : c + 1], pose, bone[:, :, c : c + 1], bone
"""
STUB_UTILS = """
import torch


def mpjpe_cal(predicted, target):
    assert predicted.shape == target.shape
    return torch.mean(torch.norm(predicted - target, dim=-1))


def get_BoneVecbypose3d(x, num_joints=17):
    return x[:, :, 1:] - x[:, :, :-1]
"""


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench_reference():
    return _load("bench_reference")


@pytest.fixture()
def stub_checkout(tmp_path, monkeypatch):
    """A folder shaped like the APTPose checkout; its modules are forgotten afterwards."""
    (tmp_path / "model" / "stageII").mkdir(parents=True)
    (tmp_path / "common").mkdir()
    (tmp_path / "model" / "stageII" / "stmo_Arc3_Geo1_Freeze3_MaskII.py").write_text(STUB_MODEL)
    (tmp_path / "common" / "utils.py").write_text(STUB_UTILS)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    for name in [m for m in sys.modules if m.split(".")[0] in ("model", "common")]:
        del sys.modules[name]


def test_missing_folder_is_one_line_and_nonzero(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--official", str(tmp_path / "nope"), *SMALL],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such folder" in lines[0], out.stderr
    assert out.stdout == ""


def test_folder_that_is_not_the_checkout(bench_reference, tmp_path):
    (tmp_path / "common").mkdir()
    with pytest.raises(SystemExit) as exc:
        bench_reference.main(["--official", str(tmp_path), *SMALL])
    message = str(exc.value.code)
    assert "not a checkout of wenwen12321/APTPose" in message
    assert "stmo_Arc3_Geo1_Freeze3_MaskII.py" in message and "\n" not in message


def test_rows_and_field_names_match_bench_train(bench_reference, stub_checkout, capsys):
    bench_reference.main(["--official", str(stub_checkout), "--dtypes", "float32,bfloat16",
                          *SMALL])  # fmt: skip
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["dtype"], r["mode"]) for r in rows] == [
        ("float32", "train"), ("float32", "eval"), ("bfloat16", "train"), ("bfloat16", "eval")
    ]  # fmt: skip
    for row in rows:
        assert "error" not in row, row
        assert row["impl"] == "official-eager" and row["framework"] == "torch"
        assert row["samples_per_s"] > 0 and row["allow_tf32"] is False
    assert "h36m_epoch_s" in rows[0] and "h36m_epoch_s" not in rows[1]

    bench_train = _load("bench_train")
    times = dict(step_ms=1.0, busy_ms=1.0, device_ms=1.0, input_ms=0.0, warmup_s=0.0)
    names = set(bench_train._figures("train", 2, (None, None), 0.0, times, 1e9))
    tree = ast.parse((REPO_ROOT / "experiments" / "bench_train.py").read_text())
    names |= {  # the provenance and head fields: keywords of its dict(...) calls
        kw.arg
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "dict"
        for kw in node.keywords
    }
    names.add("load1")
    for row in rows:
        assert set(row) - REFERENCE_ONLY <= names, set(row) - REFERENCE_ONLY - names


def test_a_failing_figure_prints_an_error_row(bench_reference, stub_checkout, capsys):
    path = stub_checkout / "model" / "stageII" / "stmo_Arc3_Geo1_Freeze3_MaskII.py"
    path.write_text(STUB_MODEL.replace("assert spatial_mask", "assert False and spatial_mask"))
    bench_reference.main(["--official", str(stub_checkout), "--modes", "eval", *SMALL])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 1 and rows[0]["error"].startswith("AssertionError")
