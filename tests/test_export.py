"""`aptpose_jax.export`: the StableHLO artifact equals `Predictor`, and loads with jax alone."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from infer_helpers import FRAMES, save_converted

from aptpose_jax import export
from aptpose_jax.predictor import Predictor


@pytest.fixture(scope="module", params=["lifter", "lifter_nomask"])
def exported(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"export_{request.param}")
    weights = save_converted(root / "weights", request.param)
    export.main(["--weights", str(weights), "--out", str(root / "served"), "--batch-size", "16"])
    return Predictor.load(weights, batch_size=16), root / "served"


@pytest.mark.parametrize("n_frames", [5, 40], ids=["shorter_than_window", "several_batches"])
def test_artifact_equals_predictor(exported, n_frames):
    predictor, directory = exported
    assert n_frames < FRAMES or n_frames > 2 * 16
    kp = np.random.default_rng(n_frames).normal(0, 0.3, (n_frames, 17, 2)).astype(np.float32)
    served = export.load(directory)
    want, got = predictor(kp), served(kp)
    assert got.shape == (n_frames, 17, 3) and got.dtype == np.float32
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-6 * scale, np.abs(got - want).max() / scale


def test_contract_describes_the_artifact(exported):
    predictor, directory = exported
    contract = json.loads((directory / export.CONTRACT).read_text())
    assert contract["input"]["shape"] == ["T", 17, 2]
    assert contract["output"]["shape"] == ["T", 17, 3]
    assert contract["artifact_signature"]["args"][0] == ["b", FRAMES, 17, 2]
    assert contract["seq2frame"]["frames"] == FRAMES
    assert contract["input"]["joint_order"] == predictor.input_layout
    assert "width" in contract["input"]["normalisation"]
    assert contract["saved_model"] is False or (directory / "saved_model").is_dir()
    exp = export.load(directory).exported
    assert "b" in str(exp.in_avals[0].shape[0])  # symbolic batch dimension


def test_loading_needs_neither_flax_nor_the_model_classes(exported):
    _, directory = exported
    code = (
        "import sys, numpy as np\n"
        "from aptpose_jax import export\n"
        f"f = export.load({str(directory)!r})\n"
        "out = f(np.zeros((3, 17, 2), np.float32))\n"
        "assert out.shape == (3, 17, 3), out.shape\n"
        "bad = [m for m in sys.modules if m.startswith(('flax', 'aptpose_jax.models'))]\n"
        "assert not bad, bad\n"
    )
    repo = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_export_refuses_an_existing_directory(tmp_path, capsys):
    (tmp_path / "served").mkdir()
    with pytest.raises(SystemExit) as exc:
        export.main(["--weights", str(tmp_path), "--out", str(tmp_path / "served")])
    assert exc.value.code == 2 and "already exists" in capsys.readouterr().err
