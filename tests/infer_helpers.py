"""Small generated weights and keypoint files for the infer / export / render tests."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from aptpose_jax.models import ModelConfig, build_model
from aptpose_jax.models.io import save_model

FRAMES = 9
RES = (640, 480)

# A standing person in COCO order, pixels of a 640 x 480 frame.
COCO_STANDING = np.array(
    [[320, 100], [328, 92], [312, 92], [338, 96], [302, 96], [350, 140], [290, 140],
     [362, 200], [278, 200], [368, 255], [272, 255], [340, 260], [300, 260],
     [342, 340], [298, 340], [344, 420], [296, 420]], np.float32,
)  # fmt: skip


def tiny_cfg(stage: str = "lifter") -> ModelConfig:
    extra = {"temporal_ratio": 0.5} if stage == "pretrain" else {}
    return ModelConfig(stage=stage, frames=FRAMES, layers=2, channel=16, d_hid=32, **extra)


def tiny_model(stage: str = "lifter", seed: int = 0):
    cfg = tiny_cfg(stage)
    model = build_model(cfg, nnx.Rngs(params=seed, dropout=seed + 1))
    model.eval()
    return model, cfg


def save_converted(directory: Path, stage: str = "lifter", seed: int = 0) -> Path:
    """A converter-style model directory (model_config.json + orbax state)."""
    model, cfg = tiny_model(stage, seed)
    return save_model(model, cfg, directory)


def save_pth(path: Path, stage: str = "lifter", seed: int = 0) -> Path:
    """An official-layout `.pth` state_dict (torch is a test requirement)."""
    import torch

    from aptpose_jax.convert import export_state_dict

    model, _ = tiny_model(stage, seed)
    sd = {k: torch.from_numpy(np.array(v)) for k, v in export_state_dict(model).items()}
    torch.save(sd, path)
    return path


def save_workdir(workdir: Path, stage: str = "lifter", seed: int = 0, keypoints="gt") -> Path:
    """A training workdir with one best checkpoint and its config.json."""
    import dataclasses

    from aptpose_jax import checkpointing

    model, cfg = tiny_model(stage, seed)
    _, params, batch_stats, _ = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    ckpts = checkpointing.RunCheckpoints(workdir, keep=1)
    meta = {"epoch": 1, "step": 1, "best_p1": 1.0, "model_config": dataclasses.asdict(cfg)}
    train = {"opt_state": {"m": jnp.zeros(1)}, "step": jnp.int32(1)}
    ckpts.save(1, {"params": params, "batch_stats": batch_stats}, train, meta, is_best=True)
    ckpts.close()
    config = {"data": {"dataset": "h36m", "keypoints": keypoints},
              "masks": {"joints_per_frame": 0, "bones_per_frame": 1, "in_eval": True}}  # fmt: skip
    (workdir / "config.json").write_text(json.dumps(config))
    return workdir


def walking_person(n: int, seed: int = 0, shift=(0.0, 0.0), conf: float = 0.9) -> np.ndarray:
    """(n, 17, 3) COCO keypoints [x, y, conf] of a person drifting sideways, with jitter."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float32)[:, None, None]
    xy = COCO_STANDING[None] + np.array(shift, np.float32) + t * np.array([1.5, 0.0], np.float32)
    xy = xy + rng.normal(0, 1.0, xy.shape).astype(np.float32)
    c = np.full((n, 17, 1), conf, np.float32)
    return np.concatenate([xy, c], axis=-1)


def coco_results(people: list[np.ndarray], missing: dict[int, set[int]] | None = None) -> list:
    """COCO keypoint results: one record per (frame, person); `missing[p]` = frames without p."""
    records = []
    for p, kp in enumerate(people):
        for t, frame in enumerate(kp):
            if missing and t in missing.get(p, set()):
                continue
            records.append({"image_id": t, "category_id": 1, "score": float(frame[:, 2].mean()),
                            "keypoints": frame.reshape(-1).tolist()})  # fmt: skip
    return records


def alphapose_results(people: list[np.ndarray], halpe: bool = False) -> list:
    """AlphaPose results (`image_id` = "<frame>.jpg", `box` = [x, y, w, h], COCO-17 / Halpe-26)."""
    records = []
    for p, kp in enumerate(people):
        for t, frame in enumerate(kp):
            pts = frame
            if halpe:  # 9 extra points (head, neck, hip, feet) after the COCO-17 ones
                pts = np.concatenate([frame, np.tile(frame[:1], (9, 1))])
            x0, y0 = frame[:, :2].min(0)
            x1, y1 = frame[:, :2].max(0)
            records.append({"image_id": f"{t}.jpg", "category_id": 1, "idx": p,
                            "score": float(frame[:, 2].mean()) * 3,
                            "box": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                            "keypoints": pts.reshape(-1).tolist()})  # fmt: skip
    return records
