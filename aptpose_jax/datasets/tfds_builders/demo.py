"""TFDS builder `aptpose_demo`: the synthetic demo data (`datasets/demo.py`) as TFDS datasets.

Configs `h36m_cpn_ft_h36m_dbb`, `h36m_gt`, `h36m_detectron_pt_coco` (splits per subject, as
the `h36m` builder) and `mpi_inf_3dhp` (splits `train`, `test`). The examples come from the
demo npz files in `source_dir` (generated there first if missing, `ensure_demo_data`), or,
without `source_dir`, from a fresh generation with the config's seed and length in a
temporary folder.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import tensorflow_datasets as tfds

from aptpose_jax.datasets.demo import DEFAULT_FRAMES, ensure_demo_data, generate_demo_data
from aptpose_jax.datasets.tfds_builders.features import pose_dataset_info
from aptpose_jax.datasets.tfds_builders.h36m import (
    H36M_SUBJECTS,
    KEYPOINT_SOURCES,
    h36m_split_generators,
)
from aptpose_jax.datasets.tfds_builders.mpi_inf_3dhp import mpi_inf_3dhp_split_generators


@dataclasses.dataclass(eq=False)
class DemoConfig(tfds.core.BuilderConfig):
    """Which demo dataset (`h36m` + keypoints, or `mpi_inf_3dhp`) and generator settings."""

    dataset: str = "h36m"
    keypoints: str = "cpn_ft_h36m_dbb"
    subjects: tuple[str, ...] = H36M_SUBJECTS
    seed: int = 0
    frames_per_sequence: int = DEFAULT_FRAMES


def demo_config_name(dataset: str, keypoints: str) -> str:
    """Config name of the demo dataset for `dataset` ("h36m" | "mpi_inf_3dhp")."""
    return "mpi_inf_3dhp" if dataset == "mpi_inf_3dhp" else f"h36m_{keypoints}"


class AptposeDemo(tfds.core.GeneratorBasedBuilder):
    """Synthetic Human3.6M / 3DHP-format pose sequences for demos and tests."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Demo data in the official layouts."}
    BUILDER_CONFIGS = [
        DemoConfig(name=demo_config_name("h36m", k), keypoints=k) for k in KEYPOINT_SOURCES
    ] + [DemoConfig(name="mpi_inf_3dhp", dataset="mpi_inf_3dhp")]

    def __init__(self, *, source_dir: str | Path | None = None, **kwargs):
        """Like any builder; `source_dir` = folder of the demo npz files to build from."""
        self._source_dir = None if source_dir is None else Path(source_dir)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return pose_dataset_info(self, __doc__)

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        cfg = self.builder_config
        if self._source_dir is not None:
            return self._splits(ensure_demo_data(self._source_dir))
        # The loaders read everything into memory, so the folder can go before the examples
        # are consumed.
        with tempfile.TemporaryDirectory(prefix="aptpose_demo_") as tmp:
            return self._splits(generate_demo_data(tmp, cfg.seed, cfg.frames_per_sequence))

    def _splits(self, root: Path):
        if self.builder_config.dataset == "mpi_inf_3dhp":
            return mpi_inf_3dhp_split_generators(self, root)
        return h36m_split_generators(self, root)

    def _generate_examples(self, **kwargs):
        raise NotImplementedError("examples come from the generators of _split_generators")
