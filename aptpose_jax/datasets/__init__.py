"""Datasets: loaders for the official file formats, window sampling and flips.

`load_sequences(data_cfg, split)` is the single entry point used by training/evaluation; the
per-dataset loaders (`h36m.load_h36m`, `mpi_inf_3dhp.load_3dhp`, `wild.load_custom_npz`,
`wild.load_keypoints_npy`) and `windows.WindowDataset` can also be used directly.
"""

from __future__ import annotations

from pathlib import Path

from aptpose_jax.datasets.sequences import PoseSequences
from aptpose_jax.errors import ConfigError

__all__ = ["PoseSequences", "load_sequences"]

_DATASETS = ("h36m", "mpi_inf_3dhp")


def _field(cfg, name: str, default=None):
    """Attribute `name` of a ConfigDict or plain object (missing -> default)."""
    try:
        return getattr(cfg, name)
    except (AttributeError, KeyError):
        return default


def load_sequences(data_cfg, split: str) -> PoseSequences:
    """Loads the sequences of one split as configured.

    Args:
      data_cfg: ml_collections ConfigDict (or any attribute object) with fields dataset
        ("h36m" | "mpi_inf_3dhp"), root, keypoints, subjects_train, subjects_test (comma
        strings or lists), actions, downsample, subset, source ("npz" | "tfds"),
        tfds_data_dir, demo (bool: generate the demo files into root when missing) and,
        optionally, need_3d (default True).
      split: "train" or "test".

    Returns:
      PoseSequences of that split.

    Raises:
      ValueError: unknown dataset, split or source.
      FileNotFoundError: official files missing (the message says where to get them).
    """
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    dataset = _field(data_cfg, "dataset", "h36m")
    if dataset not in _DATASETS:
        raise ConfigError(f"data.dataset must be one of {_DATASETS}, got {dataset!r}")
    source = _field(data_cfg, "source", "npz")
    if source == "tfds":
        from aptpose_jax.datasets.tfds_builders import load_from_tfds  # lazy: imports tfds

        return load_from_tfds(data_cfg, split)
    if source != "npz":
        raise ConfigError(f"data.source must be 'npz' or 'tfds', got {source!r}")
    root = Path(_field(data_cfg, "root", "data"))
    if _field(data_cfg, "demo", False):
        from aptpose_jax.datasets.demo import ensure_demo_data  # lazy: only for demo runs

        root = Path(ensure_demo_data(root))
    if dataset == "mpi_inf_3dhp":
        from aptpose_jax.datasets.mpi_inf_3dhp import load_3dhp

        return load_3dhp(root, split=split)
    from aptpose_jax.datasets.h36m import load_h36m

    subjects = _field(data_cfg, "subjects_train" if split == "train" else "subjects_test")
    return load_h36m(
        root,
        keypoints=_field(data_cfg, "keypoints", "cpn_ft_h36m_dbb"),
        subjects=subjects,
        actions=_field(data_cfg, "actions", "*"),
        downsample=int(_field(data_cfg, "downsample", 1)),
        subset=float(_field(data_cfg, "subset", 1.0)),
        need_3d=bool(_field(data_cfg, "need_3d", True)),
    )
