"""TFDS builder `h36m`: Human3.6M from the official VideoPose3D-format npz files.

One builder config per 2D keypoint source (`cpn_ft_h36m_dbb`, `gt`, `detectron_pt_coco`), one
split per subject (`S1`, `S5`, ..., `S11`) so a reader can pick any train/test subject lists,
one example per (subject, action, camera) sequence, in the npz loader's order. Examples hold
the full sequences (no action filter, subset or downsampling: the reader applies those).
Written as ArrayRecord and read with `tfds.data_source`; TensorFlow is not needed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tensorflow_datasets as tfds

from aptpose_jax.datasets.h36m import load_h36m
from aptpose_jax.datasets.tfds_builders.features import (
    pose_dataset_info,
    sequence_examples,
    sequence_metadata,
)

H36M_SUBJECTS: tuple[str, ...] = ("S1", "S5", "S6", "S7", "S8", "S9", "S11")
KEYPOINT_SOURCES: tuple[str, ...] = ("cpn_ft_h36m_dbb", "gt", "detectron_pt_coco")


@dataclasses.dataclass(eq=False)
class H36mConfig(tfds.core.BuilderConfig):
    """Builder config: which 2D keypoint file (`data_2d_h36m_<keypoints>.npz`) to pair with 3D."""

    keypoints: str = "cpn_ft_h36m_dbb"
    subjects: tuple[str, ...] = H36M_SUBJECTS


def h36m_split_generators(builder, root: Path):
    """Per-subject example generators from the npz files in `root` (shared with the demo)."""
    cfg = builder.builder_config
    subjects = list(cfg.subjects)
    with_3d = load_h36m(root, keypoints=cfg.keypoints, subjects=subjects)
    only_2d = load_h36m(root, keypoints=cfg.keypoints, subjects=subjects, need_3d=False)
    builder.info.metadata.update(sequence_metadata(with_3d))
    splits = {}
    for subject in subjects:
        idx = [i for i, s in enumerate(with_3d.subjects) if s == subject]
        splits[subject] = sequence_examples(
            _take(only_2d, idx), _take(with_3d, idx), start=idx[0] if idx else 0
        )
    return splits


def _take(seqs, idx: list[int]):
    """The sequences `idx` of `seqs` (a shallow PoseSequences copy)."""
    pick = lambda values: None if values is None else [values[i] for i in idx]  # noqa: E731
    return dataclasses.replace(
        seqs,
        keys=pick(seqs.keys),
        poses_2d=pick(seqs.poses_2d),
        poses_3d=pick(seqs.poses_3d),
        cameras=seqs.cameras[idx],
        groups=pick(seqs.groups),
        subjects=pick(seqs.subjects),
        valid=pick(seqs.valid),
        cam_indices=pick(seqs.cam_indices),
        frame_info={k: pick(v) for k, v in seqs.frame_info.items()},
    )


class H36m(tfds.core.GeneratorBasedBuilder):
    """Human3.6M 2D/3D pose sequences (VideoPose3D npz layout, §1.1-§1.5)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "One example per (subject, action, camera) sequence."}
    BUILDER_CONFIGS = [
        H36mConfig(name=k, keypoints=k, description=f"2D from data_2d_h36m_{k}.npz")
        for k in KEYPOINT_SOURCES
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put the official files (see data/README.md) into the manual folder (e.g. data/h36m):
      data_3d_h36m.npz
      data_2d_h36m_cpn_ft_h36m_dbb.npz, data_2d_h36m_gt.npz, data_2d_h36m_detectron_pt_coco.npz
    (only the 2D file of the config you build is needed). They are licensed by Human3.6M and
    must not be redistributed or committed.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return pose_dataset_info(self, __doc__, "http://vision.imar.ro/human3.6m/")

    def _split_generators(self, dl_manager):
        return h36m_split_generators(self, Path(dl_manager.manual_dir))

    def _generate_examples(self, **kwargs):
        raise NotImplementedError("examples come from the generators of _split_generators")
