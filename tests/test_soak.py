"""Soak (slow, deselected by default; run with `pytest -m slow tests/test_soak.py`): ten
`kill -9`s at random moments of a small demo training run end bitwise equal to an
uninterrupted run (`experiments/soak_kill.py`, which also runs on its own)."""

import importlib.util
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "soak_kill.py"


@pytest.mark.slow
def test_ten_random_kill9s_end_bitwise_equal(tmp_path):
    spec = importlib.util.spec_from_file_location("soak_kill", SCRIPT)
    soak_kill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak_kill)
    result = soak_kill.soak(kills=10, seed=0, out=tmp_path)
    assert result["bitwise_equal"], result["differences"]
