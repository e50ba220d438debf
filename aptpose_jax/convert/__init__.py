"""PyTorch `.pth` -> NNX/orbax conversion, Stage I -> II transfer and the freeze filter."""

from aptpose_jax.convert.pth import (
    apply_state_dict,
    export_state_dict,
    infer_config,
    load_pth,
    read_state_dict,
)

__all__ = [
    "apply_state_dict",
    "export_state_dict",
    "infer_config",
    "load_pth",
    "read_state_dict",
]
