"""Test configuration: 8 fake CPU devices (set before JAX initialises) and the fixture paths."""

import os
import pathlib
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Tests build many small models with identical shapes in fresh `jax.jit`s, and many run
# `python -m aptpose_jax.main` in subprocesses: a persistent compilation cache (per test
# session, in the environment so that the subprocesses share it) turns repeats into hits.
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ.get(
    "APTPOSE_TEST_JIT_CACHE"
) or tempfile.mkdtemp(prefix="aptpose_jit_")
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The official code's reference data lives in the repository (tests/fixtures/README.md); the
# tests never look outside the checkout for it.
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    """Directory of the official PyTorch reference fixtures (tests/fixtures, in the repository)."""
    if not FIXTURES_DIR.is_dir():
        pytest.fail(
            f"reference fixtures not found at {FIXTURES_DIR}; they are committed in the "
            "repository: restore them with `git checkout -- tests/fixtures`"
        )
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> pathlib.Path:
    """A small demo dataset (official file formats), generated once per test session."""
    from aptpose_jax.datasets.demo import generate_demo_data

    return generate_demo_data(tmp_path_factory.mktemp("demo"), seed=0, frames_per_sequence=120)
