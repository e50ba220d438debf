"""Synthetic demo data in the exact file formats of the official Human3.6M and 3DHP files.

`generate_demo_data(out_dir)` writes, deterministically from `seed`, in a few seconds:

* `data_3d_h36m.npz`: positions_3d[subject][action] (N, 32, 3) float32 world metres,
* `data_2d_h36m_gt.npz`: positions_2d[subject][action] = 4 x (N, 17, 2) float32 pixels
  (exact projections, full distortion model, real H36M cameras) + metadata,
* `data_2d_h36m_cpn_ft_h36m_dbb.npz`: the same with detector-like noise (+ metadata),
* `data_2d_h36m_detectron_pt_coco.npz`: noisy COCO-order keypoints (+ metadata),
* `data_train_3dhp.npz` / `data_test_3dhp.npz`: 3DHP layout (mm, 3DHP joint order),
* `demo_manifest.json`: the generator's record (SHA-256 of every file); `complete` is set
  last. Files are only ever written into an empty directory or an unchanged demo set.

Motion comes from `choreography.synthesize_action`; every subject has its own bone lengths and
every (subject, action) its own random stream, so the test subjects S9/S11 are new motions.
CLI: `python -m aptpose_jax.datasets.demo --out data/demo [--seed 0] [--frames_per_sequence N]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from absl import logging

from aptpose_jax import atomic_files
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
from aptpose_jax.errors import ConfigError, UnsafeDirectoryError, exit_on_user_error

DEFAULT_FRAMES = 120
MANIFEST = "demo_manifest.json"
GENERATOR = "aptpose_jax.datasets.demo"  # the manifest's mark of files written here
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
    """Writes every demo file into `tmp` (atomic per file), with normal permissions (0644)."""
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
    for name in DEMO_FILES:
        os.chmod(tmp / name, 0o644)  # mkstemp creates 0600


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _record(path: Path) -> dict:
    return {"size": path.stat().st_size, "sha256": _sha256(path)}


def _write_manifest(out: Path, manifest: dict) -> None:
    """Writes the manifest atomically (temporary file, then `os.replace`), mode 0644."""
    atomic_files.write_text(out / MANIFEST, json.dumps(manifest, indent=1))


def _load_manifest(root: Path) -> dict | None:
    """The manifest of `root` as written by this generator, or None if there is none."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return None
    return manifest


def _written_by_us(path: Path, manifest: dict) -> bool:
    """Whether `path` holds exactly what the generator wrote (per the manifest's records).

    Records are {"sha256", "size"}; manifests of earlier versions recorded only sizes.
    """
    name = path.name
    records = [manifest["files"].get(name), manifest.get("pending", {}).get(name)]
    size = path.stat().st_size
    digest = None
    for rec in records:
        if isinstance(rec, int) and not isinstance(rec, bool):  # size-only (earlier manifests)
            if rec == size:
                return True
        elif isinstance(rec, dict) and rec.get("size") == size:
            digest = digest or _sha256(path)
            if rec.get("sha256") == digest:
                return True
    return False


def _is_own_temp(path: Path) -> bool:
    return path.name.startswith(".demo-")  # temporaries of an interrupted generation


def check_safe_to_write(out: Path) -> dict | None:
    """Refuses (UnsafeDirectoryError) unless the generator may write into `out`.

    Safe: `out` is missing or empty (but for the generator's own temporaries), or it has a
    demo manifest and every demo file present in it is exactly what the generator wrote.
    Files that are not demo files are left alone.

    Returns:
      The existing manifest, or None for a missing or empty directory.
    """
    how = (
        "choose a new or empty directory (--config.data.root=DIR for a run, --out DIR for "
        "python -m aptpose_jax.datasets.demo), or move those files away"
    )
    if out.exists() and not out.is_dir():
        raise UnsafeDirectoryError(f"demo data: {out} is a file, not a directory; {how}")
    if not out.exists():
        return None
    entries = sorted(p.name for p in out.iterdir() if not _is_own_temp(p))
    if not entries:
        return None
    manifest = _load_manifest(out)
    if manifest is None:
        shown = ", ".join(entries[:6]) + (
            f" and {len(entries) - 6} more" if len(entries) > 6 else ""
        )
        raise UnsafeDirectoryError(
            f"demo data: refusing to write into {out}: it holds files the demo generator did "
            f"not write ({shown}) and no {MANIFEST}; {how}"
        )
    changed = [
        n for n in DEMO_FILES if (out / n).exists() and not _written_by_us(out / n, manifest)
    ]
    if changed:
        raise UnsafeDirectoryError(
            f"demo data: refusing to replace {', '.join(changed)} in {out}: the file(s) differ "
            f"from what the demo generator wrote (edited, replaced or damaged); {how}"
        )
    return manifest


def generate_demo_data(out_dir: str | os.PathLike, seed: int = 0,
                       frames_per_sequence: int = DEFAULT_FRAMES) -> Path:  # fmt: skip
    """Generates the demo files into `out_dir` (created if needed) and returns it.

    Only writes where it is safe (`check_safe_to_write`): a missing or empty directory, or an
    earlier demo set whose files are unchanged. All files are first written to a temporary
    folder inside `out_dir`; the manifest first records the files about to move in
    ("pending"), then they are moved with `os.replace`, then the final manifest marks the set
    complete. So an interrupted run never leaves a set that `ensure_demo_data` accepts, and
    every file in the folder stays recognisably the generator's.

    Args:
      out_dir: destination folder (e.g. data/demo).
      seed: everything is a deterministic function of this seed.
      frames_per_sequence: minimum frames per H36M sequence (each adds up to 25% more) and
        frames per 3DHP sequence; at least 30.

    Returns:
      `out_dir` as a Path.

    Raises:
      UnsafeDirectoryError: `out_dir` holds files the generator did not write.
    """
    if frames_per_sequence < 30:
        raise ConfigError(
            f"frames_per_sequence must be >= 30 (got {frames_per_sequence}); the windows and "
            "test-time flips need some frames"
        )
    out = Path(out_dir)
    check_safe_to_write(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():
        if _is_own_temp(stale) and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=out))
    try:
        _write_all(tmp, int(seed), int(frames_per_sequence))
        new = {
            n: {"size": (tmp / n).stat().st_size, "sha256": _sha256(tmp / n)} for n in DEMO_FILES
        }
        settings = {"seed": int(seed), "frames_per_sequence": int(frames_per_sequence)}
        base = {"generator": GENERATOR, **settings}
        present = {  # exactly the files there now (all checked to be ours)
            n: _record(out / n) for n in DEMO_FILES if (out / n).is_file()
        }
        _write_manifest(out, {**base, "complete": False, "files": present, "pending": new})
        for name in DEMO_FILES:
            os.replace(tmp / name, out / name)
        _write_manifest(out, {**base, "complete": True, "files": new})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logging.info("demo data written to %s in %.1f s", out, time.perf_counter() - start)
    return out


def read_manifest(root: str | os.PathLike) -> dict | None:
    """The manifest of a complete, unchanged demo set in `root`, or None otherwise."""
    root = Path(root)
    manifest = _load_manifest(root)
    if manifest is None or manifest.get("complete") is False:
        return None
    for name in DEMO_FILES:
        path = root / name
        if not path.is_file() or not _written_by_us(path, {"files": manifest["files"]}):
            return None
    return manifest


def ensure_demo_data(root: str | os.PathLike, seed: int | None = None,
                     frames_per_sequence: int | None = None) -> Path:  # fmt: skip
    """Returns `root`, generating the demo files there first if they are missing.

    Args:
      root: folder of the demo files.
      seed, frames_per_sequence: None accepts any complete set (and completes an interrupted
        one with its recorded settings, else uses the defaults 0 and `DEFAULT_FRAMES`); a
        value regenerates the set when the existing one was made with a different value.

    Raises:
      UnsafeDirectoryError: `root` holds files the generator did not write (a real data
        set, an edited demo file): they are never replaced.

    Safe to call from several processes at once: each writes its own temporary files and
    moves complete files into place, and the files are identical for identical arguments.
    """
    root = Path(root)
    manifest = read_manifest(root)
    recorded = manifest or _load_manifest(root) or {}
    wanted = {
        "seed": seed if seed is not None else recorded.get("seed", 0),
        "frames_per_sequence": frames_per_sequence
        if frames_per_sequence is not None
        else recorded.get("frames_per_sequence", DEFAULT_FRAMES),
    }
    if manifest is not None and all(manifest.get(k) == v for k, v in wanted.items()):
        return root
    logging.info("generating demo data in %s (%s)", root, wanted)
    return generate_demo_data(root, **wanted)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: generate the demo data set."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="data/demo", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames_per_sequence", type=int, default=DEFAULT_FRAMES)
    parser.add_argument("--debug", action="store_true", help="tracebacks for user errors")
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)
    out = exit_on_user_error(
        lambda: generate_demo_data(args.out, args.seed, args.frames_per_sequence),
        debug=args.debug,
    )
    total = sum((out / n).stat().st_size for n in DEMO_FILES)
    logging.info("%d files, %.1f MB in %s", len(DEMO_FILES), total / 1e6, out)


if __name__ == "__main__":
    main()
