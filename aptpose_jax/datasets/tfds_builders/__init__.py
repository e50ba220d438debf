"""TFDS builders for the pose datasets, written as ArrayRecord and read without TensorFlow.

Builders: `h36m` (configs cpn_ft_h36m_dbb, gt, detectron_pt_coco; manual folder with the
official npz files), `mpi_inf_3dhp` (manual folder with the 3DHP npz files) and
`aptpose_demo` (the synthetic demo data). `load_from_tfds(data_cfg, split)` builds the dataset
on first use and returns the same PoseSequences as the npz loaders. See docs/demo_data.md.
"""

from aptpose_jax.datasets.tfds_builders.demo import AptposeDemo, DemoConfig
from aptpose_jax.datasets.tfds_builders.h36m import H36m, H36mConfig
from aptpose_jax.datasets.tfds_builders.mpi_inf_3dhp import MpiInf3dhp
from aptpose_jax.datasets.tfds_builders.reader import (
    load_from_tfds,
    prepared_builder,
    tfds_data_dir,
)

__all__ = [
    "AptposeDemo",
    "DemoConfig",
    "H36m",
    "H36mConfig",
    "MpiInf3dhp",
    "load_from_tfds",
    "prepared_builder",
    "tfds_data_dir",
]
