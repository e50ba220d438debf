"""Test configuration: 8 fake CPU devices (set before JAX initialises) and shared paths."""

import os
import pathlib
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

# Tests build many small models with identical shapes in fresh `jax.jit`s: a persistent
# compilation cache (per test session) turns the repeats into cache hits.
_CACHE = os.environ.get("APTPOSE_TEST_JIT_CACHE") or tempfile.mkdtemp(prefix="aptpose_jit_")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES_DIR = REPO_ROOT.parent / "shared" / "reference" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    """Directory of the official PyTorch reference fixtures (../shared/reference/fixtures)."""
    if not FIXTURES_DIR.is_dir():
        pytest.fail(
            f"reference fixtures not found at {FIXTURES_DIR}; tests need ../shared beside the repo"
        )
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> pathlib.Path:
    """A small demo dataset (official file formats), generated once per test session."""
    from aptpose_jax.datasets.demo import generate_demo_data

    return generate_demo_data(tmp_path_factory.mktemp("demo"), seed=0, frames_per_sequence=120)
