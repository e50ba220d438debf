"""aptpose_jax: a JAX/Flax reimplementation of APTPose (BMVC 2024) and its P-STMO lifter."""

__version__ = "0.1.0"
