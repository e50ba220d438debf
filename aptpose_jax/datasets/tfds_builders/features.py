"""One TFDS example per pose sequence: the feature spec and the PoseSequences <-> example maps.

An example holds everything `PoseSequences` keeps per sequence (key, 2D, 3D, camera 9-vector,
group, subject, camera index, valid frames, optional per-frame activity) plus its position
`index` in the loader's order, so a reader rebuilds exactly what the npz loader returns.
Dataset-level facts (name, flip lists, root joint) go into the dataset's `metadata.json`.
Keys are stored as JSON lists, which keeps their element types (H36M camera indices are ints,
3DHP camera names strings).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from aptpose_jax.datasets.sequences import PoseSequences


def pose_features(n_joints: int = 17) -> tfds.features.FeaturesDict:
    """The feature spec shared by every builder in this package."""
    return tfds.features.FeaturesDict(
        {
            "index": tfds.features.Scalar(dtype=np.int64),
            "key": tfds.features.Text(),
            "poses_2d": tfds.features.Tensor(shape=(None, n_joints, 2), dtype=np.float32),
            "poses_3d": tfds.features.Tensor(shape=(None, n_joints, 3), dtype=np.float32),
            "n_frames_3d": tfds.features.Scalar(dtype=np.int64),
            "camera": tfds.features.Tensor(shape=(9,), dtype=np.float32),
            "cam_index": tfds.features.Scalar(dtype=np.int64),
            "group": tfds.features.Text(),
            "subject": tfds.features.Text(),
            "valid": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
            "has_valid": tfds.features.Scalar(dtype=np.bool_),
            "activity": tfds.features.Tensor(shape=(None,), dtype=np.float64),
            "has_activity": tfds.features.Scalar(dtype=np.bool_),
        }
    )


def pose_dataset_info(builder, description: str, homepage: str | None = None):
    """The DatasetInfo every pose builder shares: `pose_features`, examples kept in order."""
    return tfds.core.DatasetInfo(
        builder=builder,
        description=description,
        features=pose_features(),
        disable_shuffling=True,  # keep the loader's sequence order
        metadata=tfds.core.MetadataDict(),
        homepage=homepage,
    )


def sequence_metadata(seqs: PoseSequences) -> dict:
    """Dataset-level fields of `seqs` as JSON-able data (stored in metadata.json)."""
    activity = seqs.frame_info.get("activity")
    return {
        "name": seqs.name,
        "joints_left_2d": list(seqs.joints_left_2d),
        "joints_right_2d": list(seqs.joints_right_2d),
        "joints_left_3d": list(seqs.joints_left_3d),
        "joints_right_3d": list(seqs.joints_right_3d),
        "root_joint": int(seqs.root_joint),
        "activity_dtype": str(np.asarray(activity[0]).dtype) if activity else "",
    }


def sequence_examples(
    seqs_2d: PoseSequences, seqs_3d: PoseSequences | None = None, start: int = 0
) -> Iterator[tuple[str, dict]]:
    """Yields (unique key, example) for every sequence, `index` counting from `start`.

    Args:
      seqs_2d: sequences whose 2D is stored untruncated (for H36M: loaded without 3D, so a
        reader asking for 2D only gets the full detector sequence, as the npz loader does).
      seqs_3d: the same sequences with 3D (2D truncated to the 3D length); None = `seqs_2d`
        already holds the 3D.
      start: index of the first sequence.
    """
    seqs_3d = seqs_2d if seqs_3d is None else seqs_3d
    if seqs_3d.keys != seqs_2d.keys:
        raise ValueError("2D-only and 3D loads list different sequences; the files disagree")
    activity = seqs_3d.frame_info.get("activity")
    for i, key in enumerate(seqs_3d.keys):
        n2d = len(seqs_2d.poses_2d[i])
        example = {
            "index": start + i,
            "key": json.dumps(list(key)),
            "poses_2d": seqs_2d.poses_2d[i],
            "poses_3d": seqs_3d.poses_3d[i],
            "n_frames_3d": len(seqs_3d.poses_3d[i]),
            "camera": seqs_3d.cameras[i],
            "cam_index": 0 if seqs_3d.cam_indices is None else int(seqs_3d.cam_indices[i]),
            "group": seqs_3d.groups[i],
            "subject": seqs_3d.subjects[i],
            "valid": np.ones(n2d, bool) if seqs_3d.valid is None else seqs_3d.valid[i],
            "has_valid": seqs_3d.valid is not None,
            "activity": np.zeros(0) if not activity else np.asarray(activity[i], np.float64),
            "has_activity": bool(activity),
        }
        yield f"{start + i:08d}", example


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def examples_to_sequences(
    examples: Sequence[dict], meta: dict, need_3d: bool = True
) -> PoseSequences:
    """Rebuilds PoseSequences from decoded examples (any order; sorted by `index`).

    With `need_3d`, 2D is truncated to the 3D length as the H36M loader does (§1.1);
    without, `poses_3d` is None and 2D keeps its stored length.
    """
    examples = sorted(examples, key=lambda ex: int(ex["index"]))
    poses_2d, poses_3d = [], []
    for ex in examples:
        n3d = int(ex["n_frames_3d"])
        poses_2d.append(np.asarray(ex["poses_2d"], np.float32)[:n3d] if need_3d else ex["poses_2d"])
        poses_3d.append(np.asarray(ex["poses_3d"], np.float32))
    has_valid = bool(examples) and bool(examples[0]["has_valid"])
    seqs = PoseSequences(
        name=meta["name"],
        keys=[tuple(json.loads(_text(ex["key"]))) for ex in examples],
        poses_2d=poses_2d,
        poses_3d=poses_3d if need_3d else None,
        cameras=np.stack([ex["camera"] for ex in examples]).astype(np.float32).reshape(-1, 9),
        groups=[_text(ex["group"]) for ex in examples],
        subjects=[_text(ex["subject"]) for ex in examples],
        valid=[np.asarray(ex["valid"], bool) for ex in examples] if has_valid else None,
        joints_left_2d=tuple(meta["joints_left_2d"]),
        joints_right_2d=tuple(meta["joints_right_2d"]),
        joints_left_3d=tuple(meta["joints_left_3d"]),
        joints_right_3d=tuple(meta["joints_right_3d"]),
        root_joint=int(meta["root_joint"]),
        cam_indices=[int(ex["cam_index"]) for ex in examples],
    )
    if examples and all(bool(ex["has_activity"]) for ex in examples):
        dtype = np.dtype(meta.get("activity_dtype") or "float64")
        seqs.frame_info["activity"] = [np.asarray(ex["activity"]).astype(dtype) for ex in examples]
    return seqs
