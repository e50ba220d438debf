"""aptpose_jax: a JAX/Flax reimplementation of APTPose (BMVC 2024) and its P-STMO lifter.

`aptpose_jax.Predictor` (see `aptpose_jax/predictor.py`) is imported on first use, so that
importing the package stays free of jax/flax start-up work.
"""

__version__ = "0.1.0"
__all__ = ["Predictor"]


def __getattr__(name: str):
    if name == "Predictor":
        from aptpose_jax.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'aptpose_jax' has no attribute {name!r}")
