"""MPI-INF-3DHP loader for the P-STMO/APTPose npz files (§1.11).

`data_train_3dhp.npz`: key `data` = {'S<s> Seq<q>': [cams, fps]}, cams = {'0': {'data_2d',
'data_3d'}, ...}. `data_test_3dhp.npz`: key `data` = {'TS1'..'TS6': {'data_2d', 'data_3d',
'valid'}}. The README spells the names `data_train.3dhp.npz` (Q24); both spellings are accepted.
3D is in millimetres, root-relative to joint 14 with the root kept absolute.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aptpose_jax.datasets.camera import normalize_screen_coordinates
from aptpose_jax.datasets.safe_npz import load_npz
from aptpose_jax.datasets.sequences import PoseSequences, check_pose_array, require_keys
from aptpose_jax.datasets.skeleton import MPI3DHP_JOINTS_LEFT, MPI3DHP_JOINTS_RIGHT, MPI3DHP_ROOT
from aptpose_jax.errors import DataError, MissingFileError

OBTAIN_HINT = (
    "Create the MPI-INF-3DHP files with the preprocessing scripts of the APTPose/P-STMO "
    "repositories (common/data_to_npz_3dhp.py and common/data_to_npz_3dhp_test.py, run on the "
    "official MPI-INF-3DHP download) or take the preprocessed files linked from the P-STMO "
    "README, and put data_train_3dhp.npz / data_test_3dhp.npz (the README's "
    "data_train.3dhp.npz spelling is accepted too) into the folder given as data.root. To run "
    "without them use the demo data (--config=configs/h36m_pretrain.py:demo)."
)
# Image size per test sequence; training sequences and TS1-TS4 are 2048 x 2048 (§1.5).
_TEST_RESOLUTION = {"TS5": (1920, 1080), "TS6": (1920, 1080)}
_DEFAULT_RESOLUTION = (2048, 2048)
_OPTIONAL_FRAME_KEYS = ("activity", "activity_annotation")


def find_3dhp_file(root: str | Path, split: str) -> Path:
    """Path of the 3DHP npz for `split` ("train" | "test"), either spelling (Q24)."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    names = (f"data_{split}_3dhp.npz", f"data_{split}.3dhp.npz")
    for name in names:
        if (root / name).is_file():
            return root / name
    raise MissingFileError(
        f"MPI-INF-3DHP file not found: {root / names[0]} (nor {names[1]}). {OBTAIN_HINT}"
    )


def _squeeze_pose(arr: np.ndarray, dims: int) -> np.ndarray:
    """Drops extra singleton axes (e.g. (N, 1, 17, 2) or (1, N, 17, 2)) that MATLAB exports
    can carry (§8); keeps only the first `dims` channels of the last axis."""
    arr = np.asarray(arr)
    while arr.ndim > 3:
        singles = [a for a in range(arr.ndim - 2) if arr.shape[a] == 1]
        if not singles:
            break
        arr = np.squeeze(arr, axis=singles[0])
    if arr.ndim == 3 and arr.shape[-1] > dims:
        arr = arr[..., :dims]
    return arr


def _prepare(anim: dict, source: str, name: str, resolution: tuple[int, int]):
    """Validated float32 (2D normalised, 3D root-14-relative) arrays of one sequence."""
    require_keys(anim, ("data_2d", "data_3d"), f"{source}: {name}")
    p2 = _squeeze_pose(anim["data_2d"], 2)
    p3 = _squeeze_pose(anim["data_3d"], 3)
    check_pose_array(p2, 2, source, f"{name} data_2d")
    check_pose_array(p3, 3, source, f"{name} data_3d")
    if len(p2) != len(p3):
        raise DataError(f"{source}: {name}: data_2d has {len(p2)} frames, data_3d {len(p3)}")
    # Arithmetic in float64 (the files are MATLAB exports), then float32 as the model consumes.
    p3 = p3.astype(np.float64)
    root = p3[:, MPI3DHP_ROOT : MPI3DHP_ROOT + 1].copy()  # (N, 1, 3)
    p3 -= root
    p3[:, MPI3DHP_ROOT : MPI3DHP_ROOT + 1] = root  # root keeps its absolute position (§1.11)
    w, h = resolution
    p2 = normalize_screen_coordinates(p2.astype(np.float64), w, h)
    return p2.astype(np.float32), p3.astype(np.float32)


def _empty(split: str) -> PoseSequences:
    return PoseSequences(
        name="mpi_inf_3dhp", keys=[], poses_2d=[], poses_3d=[],
        cameras=np.zeros((0, 9), np.float32), groups=[], subjects=[],
        valid=[] if split == "test" else None,
        joints_left_2d=MPI3DHP_JOINTS_LEFT, joints_right_2d=MPI3DHP_JOINTS_RIGHT,
        joints_left_3d=MPI3DHP_JOINTS_LEFT, joints_right_3d=MPI3DHP_JOINTS_RIGHT,
        root_joint=MPI3DHP_ROOT, cam_indices=[],
    )  # fmt: skip


def load_3dhp(root: str | Path, *, split: str) -> PoseSequences:
    """Loads the MPI-INF-3DHP training or test sequences.

    Args:
      root: folder with `data_train_3dhp.npz` / `data_test_3dhp.npz` (or the `.3dhp` spelling).
      split: "train" (keys (subject, 'SeqN', cam_str), groups 'S1 Seq1') or "test" (keys
        ('TSn',), groups 'TSn', `valid` per frame, optional per-frame `activity` labels in
        `frame_info`).

    Returns:
      PoseSequences (3D in mm, root joint 14, cameras all zeros).
    """
    path = find_3dhp_file(root, split)
    entries = load_npz(path)
    require_keys(entries, ("data",), str(path), "Expected the P-STMO 3DHP npz layout.")
    data = entries["data"]
    if not isinstance(data, dict):
        raise DataError(f"{path}: entry 'data' must hold a dict, got {type(data).__name__}")
    seqs = _empty(split)
    for seq_name, item in data.items():
        if split == "train":
            _add_train(seqs, path, seq_name, item)
        else:
            _add_test(seqs, path, seq_name, item)
    if not seqs.keys:
        raise DataError(f"{path}: no sequences in entry 'data'")
    seqs.cameras = np.zeros((len(seqs.keys), 9), np.float32)  # 3DHP has no camera vector
    return seqs.validate(str(path))


def _add_train(seqs: PoseSequences, path: Path, seq_name: str, item) -> None:
    if not isinstance(item, list | tuple) or not isinstance(item[0], dict):
        raise DataError(f"{path}: data[{seq_name!r}] must be [cams_dict, fps]")
    subject, _, seq = seq_name.partition(" ")
    for cam, anim in item[0].items():
        p2, p3 = _prepare(anim, str(path), f"data[{seq_name!r}][0][{cam!r}]", _DEFAULT_RESOLUTION)
        seqs.keys.append((subject, seq, cam))
        seqs.poses_2d.append(p2)
        seqs.poses_3d.append(p3)
        seqs.groups.append(seq_name)
        seqs.subjects.append(subject)
        seqs.cam_indices.append(int(cam) if str(cam).isdigit() else 0)


def _add_test(seqs: PoseSequences, path: Path, seq_name: str, anim) -> None:
    name = f"data[{seq_name!r}]"
    if not isinstance(anim, dict):
        raise DataError(f"{path}: {name} must be a dict with data_2d, data_3d, valid")
    require_keys(anim, ("valid",), f"{path}: {name}")
    resolution = _TEST_RESOLUTION.get(seq_name, _DEFAULT_RESOLUTION)
    p2, p3 = _prepare(anim, str(path), name, resolution)
    valid = np.asarray(anim["valid"]).reshape(-1)
    if valid.shape != (len(p2),):
        raise DataError(f"{path}: {name}['valid'] has {valid.size} entries for {len(p2)} frames")
    seqs.keys.append((seq_name,))
    seqs.poses_2d.append(p2)
    seqs.poses_3d.append(p3)
    seqs.valid.append(valid.astype(bool))
    seqs.groups.append(seq_name)
    seqs.subjects.append(seq_name)
    seqs.cam_indices.append(0)
    # Optional per-frame activity labels; kept only when every test sequence has them.
    labels = next((anim[k] for k in _OPTIONAL_FRAME_KEYS if k in anim), None)
    if labels is not None and np.asarray(labels).size == len(p2):
        if len(seqs.frame_info.get("activity", [])) == len(seqs.keys) - 1:
            seqs.frame_info.setdefault("activity", []).append(np.asarray(labels).reshape(-1))
    else:
        seqs.frame_info.pop("activity", None)
