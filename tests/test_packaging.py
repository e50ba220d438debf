"""The installed package stands on its own: configs by name and by installed path, from any
directory (the package is built offline from a copy of the checkout, without dependencies)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from aptpose_jax import config_files
from aptpose_jax.errors import ConfigError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

_CHECK = """
import sys, aptpose_jax
from aptpose_jax import config_files as cf
target = sys.argv[1]
assert aptpose_jax.__file__.startswith(target), aptpose_jax.__file__
for spec in ("h36m_eval:demo", "h36m_eval.py:demo", "configs/h36m_eval.py:demo",
             target + "/aptpose_jax/configs/h36m_eval.py:demo"):
    c = cf.load(spec)
    assert c.mode == "eval" and c.data.demo and c.init.from_workdir == "{workdir}/../finetune"
print(" ".join(cf.names()))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`pip install --no-deps --target` of a copy of the checkout (offline, no isolation)."""
    root = tmp_path_factory.mktemp("pkg")
    src = root / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO_ROOT / "aptpose_jax", src / "aptpose_jax", ignore=ignore)
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(REPO_ROOT / name, src / name)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
           "--no-index", "--target", str(root / "target"), str(src)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return root / "target"


def _run(target, cwd, *args):
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_installed_configs_resolve_by_name_and_path_from_any_directory(installed, tmp_path):
    proc = _run(installed, tmp_path, "-c", _CHECK, str(installed))
    assert proc.returncode == 0, proc.stderr
    assert "h36m_eval" in proc.stdout.split() and "wild_finetune" in proc.stdout.split()
    # The command line: the config loads by name (it reaches the override check), one line.
    proc = _run(installed, tmp_path, "-m", "aptpose_jax.main", "--config=h36m_eval:demo",
                "--workdir=w", "--config.optim.lrr=1")  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and 'Did you mean "lr"' in lines[0], lines
    proc = _run(installed, tmp_path, "-m", "aptpose_jax.main", "--config=h36m_evl:demo",
                "--workdir=w")  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, lines
    assert "did you mean h36m_eval" in lines[0]
    assert not (tmp_path / "w").exists()


def test_resolve_names_paths_and_misses(tmp_path, monkeypatch):
    packaged = str(config_files.CONFIG_DIR / "h36m_eval.py")
    assert config_files.resolve("h36m_eval:gt,demo") == packaged + ":gt,demo"
    assert config_files.resolve("h36m_eval.py") == packaged
    mine = tmp_path / "mine.py"
    mine.write_text("def get_config(arg=None):\n    return None\n")
    assert config_files.resolve(f"{mine}:x") == f"{mine}:x"  # a file that exists wins
    monkeypatch.chdir(tmp_path)  # no configs/ here: the packaged one of that name
    assert config_files.resolve("configs/h36m_eval.py:demo") == packaged + ":demo"
    with pytest.raises(ConfigError, match="did you mean h36m_eval"):
        config_files.resolve("configs/h36m_evl.py")
    with pytest.raises(ConfigError, match="not found"):
        config_files.resolve("elsewhere/h36m_eval.py")  # a path that names a directory: no guess
    argv = ["prog", "--config", "h36m_eval", "--config.optim.lr=1", "--config=h36m_eval.py:gt"]
    assert config_files.resolve_flag_args(argv) == [
        "prog", "--config", packaged, "--config.optim.lr=1", f"--config={packaged}:gt"
    ]  # fmt: skip


def test_demo_stages_chain_relative_to_the_workdir(tmp_path, monkeypatch):
    from aptpose_jax import defaults

    monkeypatch.chdir(tmp_path)
    for name, sibling in (("h36m_finetune", "pretrain"), ("h36m_eval", "finetune")):
        c = config_files.load(f"{name}:demo")
        defaults.resolve_paths(c, "runs/demo/here")  # relative to the current directory
        assert c.init.from_workdir == str(tmp_path / "runs" / "demo" / sibling)
        assert c.data.root == "data/demo"  # the demo data: of the current directory
    c = config_files.load("h36m_finetune")
    c.init.from_workdir = "mine/pretrain"  # a user's value is left as given
    defaults.resolve_paths(c, "w")
    assert c.init.from_workdir == "mine/pretrain"
