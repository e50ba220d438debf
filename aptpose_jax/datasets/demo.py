"""Synthetic demo data in the exact file formats of the official Human3.6M and 3DHP files.

`generate_demo_data(out_dir)` writes, deterministically from `seed`, in a few seconds:

* `data_3d_h36m.npz`: positions_3d[subject][action] (N, 32, 3) float32 world metres,
* `data_2d_h36m_gt.npz`: positions_2d[subject][action] = 4 x (N, 17, 2) float32 pixels
  (exact projections, full distortion model, real H36M cameras) + metadata,
* `data_2d_h36m_cpn_ft_h36m_dbb.npz`: the same with detector-like noise (+ metadata),
* `data_2d_h36m_detectron_pt_coco.npz`: noisy COCO-order keypoints (+ metadata),
* `data_train_3dhp.npz` / `data_test_3dhp.npz`: 3DHP layout (mm, 3DHP joint order),
* `demo_manifest.json`: written last; its presence marks the set as complete.

Motion comes from `choreography.synthesize_action`; every subject has its own bone lengths and
every (subject, action) its own random stream, so the test subjects S9/S11 are new motions.
CLI: `python -m aptpose_jax.datasets.demo --out data/demo [--seed 0] [--frames_per_sequence N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from absl import logging

from aptpose_jax.datasets import demo_3dhp
from aptpose_jax.datasets.choreography import synthesize_action
from aptpose_jax.datasets.demo_detections import (
    coco_keypoints_3d,
    detector_noise,
    project_world,
)
from aptpose_jax.datasets.motion import sample_bone_lengths
from aptpose_jax.datasets.safe_npz import save_npz_atomic
from aptpose_jax.datasets.skeleton import (
    COCO_JOINTS_LEFT,
    COCO_JOINTS_RIGHT,
    H36M_JOINTS_LEFT,
    H36M_JOINTS_RIGHT,
    H36M_KEPT_JOINTS,
)

DEFAULT_FRAMES = 120
MANIFEST = "demo_manifest.json"
H36M_FILES = (
    "data_3d_h36m.npz",
    "data_2d_h36m_gt.npz",
    "data_2d_h36m_cpn_ft_h36m_dbb.npz",
    "data_2d_h36m_detectron_pt_coco.npz",
)
DEMO_FILES = H36M_FILES + ("data_train_3dhp.npz", "data_test_3dhp.npz")
# Canonical VideoPose3D action names per subject. Train subjects cover all 15 classes, the two
# test subjects too (S11 has no plain "Directions", as in the real data).
ACTION_PLAN: dict[str, tuple[str, ...]] = {
    "S1": ("Directions", "Discussion 1", "Eating", "Walking"),
    "S5": ("Greeting 1", "Phoning", "Photo", "WalkDog"),
    "S6": ("Posing", "Purchases 1", "Sitting 2", "Walking 1"),
    "S7": ("SittingDown", "Smoking", "Waiting 1", "WalkTogether"),
    "S8": ("Directions 1", "Eating 2", "SittingDown 2", "WalkDog 1"),
    "S9": ("Directions", "Discussion 1", "Greeting", "Phoning 1", "Sitting 1", "Walking 1",
           "WalkTogether"),
    "S11": ("Directions 1", "Eating 1", "Photo 1", "Posing", "Purchases", "SittingDown",
            "Smoking 2", "Waiting", "WalkDog"),
}  # fmt: skip
_H36M_META = {
    "num_joints": 17,
    "keypoints_symmetry": [list(H36M_JOINTS_LEFT), list(H36M_JOINTS_RIGHT)],
}
_COCO_META = {
    "layout_name": "coco",
    "num_joints": 17,
    "keypoints_symmetry": [list(COCO_JOINTS_LEFT), list(COCO_JOINTS_RIGHT)],
}


def stream(seed: int, *names: str) -> np.random.Generator:
    """An independent, reproducible random generator for (seed, names...)."""
    return np.random.default_rng([seed] + [zlib.crc32(n.encode()) for n in names])


def subject_bones(seed: int, subject: str) -> dict[str, float]:
    """Bone lengths of a demo subject: overall scale in [0.92, 1.08], per-bone jitter."""
    rng = stream(seed, "bones", subject)
    return sample_bone_lengths(rng, float(rng.uniform(0.92, 1.08)))


def _h36m_sequence(seed: int, subject: str, action: str, frames: int, bones: dict):
    """World motion (N + extra, 32, 3) of one sequence and N, its mocap length."""
    rng = stream(seed, "motion", subject, action)
    n = frames + int(rng.integers(0, frames // 4 + 1))
    # Detector files may hold a few more frames than the mocap (§1.1); the loader truncates.
    extra = int(rng.choice([0, 0, 2, 3]))
    world = synthesize_action(action.split(" ")[0], n + extra, bones, rng)
    return world, n


def _h36m_dicts(seed: int, frames: int) -> dict[str, dict]:
    """positions_3d and the three positions_2d dicts, nested subject -> action."""
    out = {name: {} for name in ("3d", "gt", "cpn", "coco")}
    for subject, actions in ACTION_PLAN.items():
        bones = subject_bones(seed, subject)
        for name in out:
            out[name][subject] = {}
        for action in actions:
            world, n = _h36m_sequence(seed, subject, action, frames, bones)
            out["3d"][subject][action] = world[:n].astype(np.float32)
            kept = world[:, list(H36M_KEPT_JOINTS)]  # (N + extra, 17, 3)
            coco = coco_keypoints_3d(kept.astype(np.float64))
            gt, cpn, det = [], [], []
            for cam in range(4):
                rng = stream(seed, "detector", subject, action, str(cam))
                exact = project_world(kept, subject, cam)  # (N + extra, 17, 2) px
                gt.append(exact[:n])
                cpn.append(detector_noise(rng, exact, "h36m", 2.5, 0.002))
                det.append(detector_noise(rng, project_world(coco, subject, cam), "coco", 4, 0.005))
            out["gt"][subject][action] = gt
            out["cpn"][subject][action] = cpn
            out["coco"][subject][action] = det
    return out


def _write_all(tmp: Path, seed: int, frames: int) -> None:
    """Writes every demo file into `tmp` (atomic per file)."""
    h36m = _h36m_dicts(seed, frames)
    save_npz_atomic(tmp / H36M_FILES[0], compressed=True, positions_3d=h36m["3d"])
    save_npz_atomic(tmp / H36M_FILES[1], compressed=True, positions_2d=h36m["gt"],
                    metadata=_H36M_META)  # fmt: skip
    save_npz_atomic(tmp / H36M_FILES[2], compressed=True, positions_2d=h36m["cpn"],
                    metadata={"layout_name": "h36m", **_H36M_META})  # fmt: skip
    save_npz_atomic(tmp / H36M_FILES[3], compressed=True, positions_2d=h36m["coco"],
                    metadata=_COCO_META)  # fmt: skip
    train, test = demo_3dhp.make_3dhp(seed, frames)
    save_npz_atomic(tmp / "data_train_3dhp.npz", compressed=True, data=train)
    save_npz_atomic(tmp / "data_test_3dhp.npz", compressed=True, data=test)


def generate_demo_data(out_dir: str | os.PathLike, seed: int = 0,
                       frames_per_sequence: int = DEFAULT_FRAMES) -> Path:  # fmt: skip
    """Generates the demo files into `out_dir` (created if needed) and returns it.

    All files are first written to a temporary folder inside `out_dir`, then moved in with
    `os.replace`; the manifest is written last, so an interrupted run never leaves a set that
    `ensure_demo_data` accepts.

    Args:
      out_dir: destination folder (e.g. data/demo).
      seed: everything is a deterministic function of this seed.
      frames_per_sequence: minimum frames per H36M sequence (each adds up to 25% more) and
        frames per 3DHP sequence; at least 30.

    Returns:
      `out_dir` as a Path.
    """
    if frames_per_sequence < 30:
        raise ValueError(
            f"frames_per_sequence must be >= 30 (got {frames_per_sequence}); the windows and "
            "test-time flips need some frames"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=out))
    try:
        _write_all(tmp, int(seed), int(frames_per_sequence))
        (out / MANIFEST).unlink(missing_ok=True)  # the set is incomplete while files move
        for name in DEMO_FILES:
            os.replace(tmp / name, out / name)
        manifest = {
            "seed": int(seed),
            "frames_per_sequence": int(frames_per_sequence),
            "files": {name: (out / name).stat().st_size for name in DEMO_FILES},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        os.replace(tmp / MANIFEST, out / MANIFEST)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logging.info("demo data written to %s in %.1f s", out, time.perf_counter() - start)
    return out


def _manifest(root: Path) -> tuple[dict | None, bool]:
    """(manifest or None, whether every listed file is present with its recorded size)."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        sizes = manifest["files"]
        complete = all((root / n).stat().st_size == sizes[n] for n in DEMO_FILES)
        return manifest, complete
    except (OSError, ValueError, KeyError, TypeError):
        return None, False


def read_manifest(root: str | os.PathLike) -> dict | None:
    """The manifest of a complete demo set in `root`, or None if the set is missing/partial."""
    manifest, complete = _manifest(Path(root))
    return manifest if complete else None


def ensure_demo_data(root: str | os.PathLike, seed: int | None = None,
                     frames_per_sequence: int | None = None) -> Path:  # fmt: skip
    """Returns `root`, generating the demo files there first if they are missing or damaged.

    Args:
      root: folder of the demo files.
      seed, frames_per_sequence: None accepts any complete set (and repairs a damaged one
        with its recorded settings, else uses the defaults 0 and `DEFAULT_FRAMES`); a value
        regenerates the set when the existing one was made with a different value.

    Safe to call from several processes at once: each writes its own temporary files and
    moves complete files into place, and the files are identical for identical arguments.
    """
    root = Path(root)
    manifest, complete = _manifest(root)
    recorded = manifest or {}
    wanted = {
        "seed": seed if seed is not None else recorded.get("seed", 0),
        "frames_per_sequence": frames_per_sequence
        if frames_per_sequence is not None
        else recorded.get("frames_per_sequence", DEFAULT_FRAMES),
    }
    if complete and all(manifest.get(k) == v for k, v in wanted.items()):
        return root
    logging.info("generating demo data in %s (%s)", root, wanted)
    return generate_demo_data(root, **wanted)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: generate the demo data set."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="data/demo", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames_per_sequence", type=int, default=DEFAULT_FRAMES)
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)
    out = generate_demo_data(args.out, args.seed, args.frames_per_sequence)
    total = sum((out / n).stat().st_size for n in DEMO_FILES)
    logging.info("%d files, %.1f MB in %s", len(DEMO_FILES), total / 1e6, out)


if __name__ == "__main__":
    main()
