"""PyTorch `.pth` -> NNX/orbax conversion, Stage I -> II transfer and the freeze filter."""

from aptpose_jax.convert.pth import (
    apply_state_dict,
    convert_pth,
    export_state_dict,
    infer_config,
    load_pth,
    read_state_dict,
)
from aptpose_jax.convert.transfer import (
    freeze_batchnorms,
    freeze_labels,
    frozen_filter,
    is_frozen_key,
    transfer_pretrain_to_lifter,
)

__all__ = [
    "apply_state_dict",
    "convert_pth",
    "export_state_dict",
    "freeze_batchnorms",
    "freeze_labels",
    "frozen_filter",
    "infer_config",
    "is_frozen_key",
    "load_pth",
    "read_state_dict",
    "transfer_pretrain_to_lifter",
]
