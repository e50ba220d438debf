"""`load_from_tfds`: PoseSequences from the TFDS datasets of this package, built on first use.

Applies the same selection as the npz loaders (subject lists in the given order, action
prefixes, subset/downsample of §1.7, 2D truncated to 3D), reusing `h36m.select_frames`, so
`load_sequences` returns identical arrays with `data.source = "tfds"` and `"npz"`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from aptpose_jax.datasets.demo import ensure_demo_data
from aptpose_jax.datasets.h36m import select_frames, split_list
from aptpose_jax.datasets.sequences import PoseSequences
from aptpose_jax.datasets.tfds_builders.demo import AptposeDemo, demo_config_name
from aptpose_jax.datasets.tfds_builders.features import examples_to_sequences
from aptpose_jax.datasets.tfds_builders.h36m import H36m
from aptpose_jax.datasets.tfds_builders.mpi_inf_3dhp import MpiInf3dhp
from aptpose_jax.errors import ConfigError, DataKeyError

FILE_FORMAT = "array_record"  # readable by tfds.data_source without TensorFlow


def _field(cfg, name: str, default=None):
    try:
        value = getattr(cfg, name)
    except (AttributeError, KeyError):
        return default
    return default if value is None else value


def tfds_data_dir(data_cfg) -> Path:
    """Where the TFDS datasets live: `data.tfds_data_dir`, else `<data.root>/tfds`."""
    explicit = _field(data_cfg, "tfds_data_dir", "")
    return Path(explicit) if explicit else Path(_field(data_cfg, "root", "data")) / "tfds"


def prepared_builder(data_cfg) -> tfds.core.DatasetBuilder:
    """The builder for `data_cfg`, building the dataset from `data.root` when missing.

    Demo runs (`data.demo`) use `aptpose_demo` built from the demo files in `data.root`
    (generated first if missing); otherwise `h36m/<keypoints>` or `mpi_inf_3dhp` built from
    the official npz files in `data.root` (the TFDS manual folder).
    """
    dataset = _field(data_cfg, "dataset", "h36m")
    if dataset not in ("h36m", "mpi_inf_3dhp"):
        raise ConfigError(f"data.dataset must be 'h36m' or 'mpi_inf_3dhp', got {dataset!r}")
    keypoints = _field(data_cfg, "keypoints", "cpn_ft_h36m_dbb")
    root = Path(_field(data_cfg, "root", "data"))
    data_dir = str(tfds_data_dir(data_cfg).absolute())

    def make():
        if _field(data_cfg, "demo", False):
            config = demo_config_name(dataset, keypoints)
            return AptposeDemo(config=config, data_dir=data_dir, file_format=FILE_FORMAT,
                               source_dir=root)  # fmt: skip
        if dataset == "mpi_inf_3dhp":
            return MpiInf3dhp(data_dir=data_dir, file_format=FILE_FORMAT)
        if keypoints not in [c.name for c in H36m.BUILDER_CONFIGS]:
            raise ConfigError(
                f"no TFDS h36m config for keypoints {keypoints!r}; use one of "
                f"{[c.name for c in H36m.BUILDER_CONFIGS]} or data.source='npz'"
            )
        return H36m(config=keypoints, data_dir=data_dir, file_format=FILE_FORMAT)

    builder = make()
    if not builder.is_prepared():
        if _field(data_cfg, "demo", False):
            ensure_demo_data(root)
        logging.info("building TFDS dataset %s into %s", builder.info.full_name, data_dir)
        config = tfds.download.DownloadConfig(manual_dir=str(root.absolute()))
        try:
            builder.download_and_prepare(download_config=config)
        except Exception:
            builder = make()  # another process may have finished the same build meanwhile
            if not builder.is_prepared():
                raise
    return builder


def _read_split(builder, split: str) -> list[dict]:
    source = builder.as_data_source(split=split)
    return [source[i] for i in range(len(source))]


def load_from_tfds(data_cfg, split: str, need_3d: bool | None = None) -> PoseSequences:
    """Loads one split from the TFDS dataset of `data_cfg` (built on first use).

    Args:
      data_cfg: the `data` config (fields dataset, root, keypoints, subjects_train,
        subjects_test, actions, downsample, subset, tfds_data_dir, demo, need_3d).
      split: "train" or "test".
      need_3d: overrides `data_cfg.need_3d` (default True); False gives 2D only.

    Returns:
      PoseSequences equal to what the npz loader returns for the same config.
    """
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    if need_3d is None:
        need_3d = bool(_field(data_cfg, "need_3d", True))
    builder = prepared_builder(data_cfg)
    meta = dict(builder.info.metadata)
    if _field(data_cfg, "dataset", "h36m") == "mpi_inf_3dhp":
        seqs = examples_to_sequences(_read_split(builder, split), meta, need_3d=True)
        return seqs.validate(builder.info.full_name)
    examples = _h36m_examples(builder, data_cfg, split)
    seqs = examples_to_sequences(examples, meta, need_3d=need_3d)
    downsample = int(_field(data_cfg, "downsample", 1))
    subset = float(_field(data_cfg, "subset", 1.0))
    if downsample < 1 or not 0 < subset <= 1:
        raise ConfigError(f"need downsample >= 1 and 0 < subset <= 1, got {downsample}, {subset}")
    for i in range(len(seqs)):
        sel = select_frames(len(seqs.poses_2d[i]), downsample, subset)
        seqs.poses_2d[i] = seqs.poses_2d[i][sel]
        if seqs.poses_3d is not None:
            seqs.poses_3d[i] = seqs.poses_3d[i][sel]
    return seqs.validate(builder.info.full_name)


def _h36m_examples(builder, data_cfg, split: str) -> list[dict]:
    """Examples of the requested subjects (in that order) whose action passes the filter."""
    key = "subjects_train" if split == "train" else "subjects_test"
    default = "S1,S5,S6,S7,S8" if split == "train" else "S9,S11"
    subjects = split_list(_field(data_cfg, key, default))
    actions = _field(data_cfg, "actions", "*")
    prefixes = None if actions == "*" else split_list(actions)
    available = set(builder.info.splits.keys())
    examples = []
    for subject in subjects:
        if subject not in available:
            raise DataKeyError(
                f"{builder.info.full_name}: subject {subject!r} not in the dataset; has "
                f"{sorted(available)}"
            )
        for ex in sorted(_read_split(builder, subject), key=lambda e: int(e["index"])):
            action = examples_action(ex)
            if prefixes is None or any(action.startswith(p) for p in prefixes):
                examples.append(dict(ex, index=np.int64(len(examples))))
    if not examples:
        raise ConfigError(
            f"{builder.info.full_name}: no sequence matches subjects={subjects} actions={actions!r}"
        )
    return examples


def examples_action(example: dict) -> str:
    """The action name (second key element) of an H36M example."""
    key = example["key"]
    return json.loads(key.decode() if isinstance(key, bytes) else key)[1]
