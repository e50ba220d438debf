"""TFDS builder `mpi_inf_3dhp`: MPI-INF-3DHP from the P-STMO/APTPose npz files (§1.11).

Splits `train` (one example per (subject, sequence, camera)) and `test` (one per TS1..TS6,
with per-frame `valid`), in the npz loader's order. ArrayRecord, no TensorFlow needed.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow_datasets as tfds

from aptpose_jax.datasets.mpi_inf_3dhp import load_3dhp
from aptpose_jax.datasets.tfds_builders.features import (
    pose_dataset_info,
    sequence_examples,
    sequence_metadata,
)


def mpi_inf_3dhp_split_generators(builder, root: Path):
    """`train` and `test` example generators from the npz files in `root`."""
    train, test = load_3dhp(root, split="train"), load_3dhp(root, split="test")
    builder.info.metadata.update(sequence_metadata(train))
    return {"train": sequence_examples(train), "test": sequence_examples(test)}


class MpiInf3dhp(tfds.core.GeneratorBasedBuilder):
    """MPI-INF-3DHP 2D/3D pose sequences (mm, 3DHP joint order, root joint 14)."""

    name = "mpi_inf_3dhp"  # the default from the class name would be "mpi_inf3dhp"

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "One example per sequence (train: per camera)."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put data_train_3dhp.npz and data_test_3dhp.npz (made by the P-STMO/APTPose preprocessing
    scripts; the README spelling data_train.3dhp.npz is accepted) into the manual folder (e.g.
    data/3dhp). See data/README.md. Do not redistribute or commit them.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return pose_dataset_info(self, __doc__, "https://vcai.mpi-inf.mpg.de/3dhp-dataset/")

    def _split_generators(self, dl_manager):
        return mpi_inf_3dhp_split_generators(self, Path(dl_manager.manual_dir))

    def _generate_examples(self, **kwargs):
        raise NotImplementedError("examples come from the generators of _split_generators")
