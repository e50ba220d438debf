"""The persistent compilation cache: a second run with the same shapes compiles nothing."""

import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _entries(cache: pathlib.Path) -> set[str]:
    return {p.name for p in cache.iterdir()} if cache.is_dir() else set()


def test_second_run_and_resume_hit_the_cache(demo_root, tmp_path):
    cache = tmp_path / "xla_cache"
    env = {**os.environ, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the config's own setting decides

    def run(workdir: str, epochs: int) -> None:
        args = [
            "--config=configs/h36m_pretrain.py:demo",
            f"--workdir={tmp_path / workdir}",
            f"--config.data.root={demo_root}",
            f"--config.compile_cache={cache}",
            "--config.model.frames=9",
            "--config.model.layers=2",
            "--config.model.channel=16",
            "--config.model.d_hid=32",
            "--config.data.subjects_train=S1",
            "--config.data.subjects_test=S9",
            "--config.data.actions=Walking",
            "--config.optim.batch_size=16",
            f"--config.optim.num_epochs={epochs}",
            "--config.optim.max_steps_per_epoch=2",
            "--config.eval.max_batches=1",
            "--config.log.progress_bar=False",
            "--config.log.tensorboard=False",
        ]
        cmd = [sys.executable, "-m", "aptpose_jax.main", *args]
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]

    run("first", epochs=1)
    after_first = _entries(cache)
    assert len(after_first) >= 2  # at least the train and eval steps
    run("second", epochs=1)  # a new run, same shapes
    assert _entries(cache) == after_first
    run("first", epochs=2)  # a resume of the first run, one more epoch
    assert _entries(cache) == after_first
