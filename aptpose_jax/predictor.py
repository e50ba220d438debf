"""`Predictor`: a trained Stage II model as a function from 2D keypoints to 3D poses.

    predictor = Predictor.load("workdirs/wild_finetune")  # or a converted dir, or a .pth
    poses = predictor(keypoints_2d)  # (T, 17, 2) normalised -> (T, 17, 3) root-relative

Input joint order (`Predictor.input_layout`): the order the model was trained on. Models
trained on H36M-order keypoints (CPN / ground truth, e.g. `h36m_finetune`, the demo) take
H36M order; the in-the-wild model (`wild_finetune`, the reference's `run_in_the_wild.py`)
takes COCO order unchanged (Q23). `predict_pixels` takes COCO-order pixels from any detector
and converts (`coco_to_h36m`) and normalises (§1.5, by the width) for the model.

Inference is seq2frame (`seq2frame.run_batches`): one window centred on every frame, edges
replicated, batched and jitted once; each batch runs `steps.tta_forward`, the very function
the evaluation step runs (flip TTA, §1.10). Masks: none for the mask-free model (§2.7); for
the masked model the reference's evaluation behaviour (random masks, one set per batch, Q1/Q2)
unless `eval_masks=False`. The masks of batch i come from `fold_in(key(seed), i)`, so a call
is deterministic.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from aptpose_jax import seq2frame, steps
from aptpose_jax.datasets import skeleton
from aptpose_jax.datasets.camera import normalize_screen_coordinates
from aptpose_jax.errors import UserError
from aptpose_jax.masking import MaskSpec
from aptpose_jax.models import ModelConfig

INPUT_LAYOUTS = ("h36m", "coco")
_INPUT_LISTS = {
    "h36m": (skeleton.H36M_JOINTS_LEFT, skeleton.H36M_JOINTS_RIGHT),
    "coco": (skeleton.COCO_JOINTS_LEFT, skeleton.COCO_JOINTS_RIGHT),
}


@dataclasses.dataclass(frozen=True)
class WeightsInfo:
    """What the weights say beyond the model sizes (from a training workdir's config.json)."""

    source: str  # "workdir", "converted" or "pth"
    input_layout: str | None = None  # None: not recorded
    joints_per_frame: int = 0  # the training masks (-smn / -bmn), for evaluation masks (Q2)
    bones_per_frame: int = 1
    masks_in_eval: bool = True


def _info_from_run_config(path: Path) -> WeightsInfo:
    config = json.loads(path.read_text()) if path.is_file() else {}
    data, masks = config.get("data", {}), config.get("masks", {})
    if data.get("dataset", "h36m") != "h36m":
        raise UserError(
            f"{path.parent}: a {data['dataset']} model expects that dataset's joint order; "
            "infer serves Human3.6M-trained models (e.g. configs/wild_finetune.py)"
        )
    keypoints = data.get("keypoints")
    layout = None if keypoints is None else ("coco" if "coco" in keypoints else "h36m")
    return WeightsInfo(
        "workdir",
        layout,
        int(masks.get("joints_per_frame", 0)),
        int(masks.get("bones_per_frame", 1)),
        bool(masks.get("in_eval", True)),
    )


def load_weights(weights: str | Path) -> tuple[nnx.Module, ModelConfig, WeightsInfo]:
    """Loads a model (eval mode) from a training workdir, a converted directory or a `.pth`.

    The sizes (frames, layers, channel, masked or mask-free) come from the weights.

    Raises:
      UserError: missing path, unreadable weights, or Stage I weights.
    """
    from aptpose_jax import weights as weights_lib  # the training-side loaders, reused
    from aptpose_jax.models import io as model_io

    path = Path(weights)
    try:
        if path.is_file() and path.suffix in (".pth", ".pt", ".bin"):
            from aptpose_jax import convert  # needs torch

            model, cfg = convert.load_pth(path)
            info = WeightsInfo("pth")
        elif (path / model_io.CONFIG_FILE).is_file():
            model, cfg = model_io.load_model(path)
            info = WeightsInfo("converted")
        elif path.is_dir() and ((path / "best").is_dir() or (path / "checkpoints").is_dir()):
            info = _info_from_run_config(path / "config.json")
            model, cfg, _ = weights_lib.model_from_workdir(str(path), nnx.Rngs(params=0, dropout=1))
        else:
            raise UserError(
                f"{path}: not weights: give a training workdir, a directory written by "
                "`python -m aptpose_jax.convert`, or an official Stage II .pth file"
            )
    except UserError:
        raise
    except ModuleNotFoundError as e:
        raise UserError(f"{path}: reading .pth files needs {e.name} (pip install torch)") from None
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        raise UserError(f"{path}: cannot load the weights ({e})") from None
    if cfg.stage == "pretrain":
        raise UserError(
            f"{path}: these are Stage I (pre-training) weights; infer needs a Stage II model "
            "(fine-tune one with configs/h36m_finetune.py or configs/wild_finetune.py)"
        )
    model.eval()
    return model, cfg, info


def _windows_forward(graphdef, state, x, batch_index, *, cfg: steps.StepConfig, seed: int):
    """(B, F, J, 2) windows -> (B, J, 3) root-zeroed centre-frame poses after flip TTA."""
    model = nnx.merge(graphdef, state)
    key = jax.random.fold_in(jax.random.key(seed), batch_index)
    pose = steps.tta_forward(model, x, steps.eval_masks(cfg, key, x.shape[0]), cfg)  # (B,1,J,3)
    return pose[:, 0].at[:, cfg.root].set(0.0)  # (B, J, 3)


class Predictor:
    """A Stage II model lifting (T, 17, 2) keypoint sequences to (T, 17, 3) 3D poses.

    Attributes:
      model_cfg: the model's sizes.
      input_layout: "h36m" or "coco", the joint order the model takes (module docstring).
      step_cfg: the static facts of `steps.tta_forward` (flip lists, masks).
      batch_size: windows per jitted batch.
      seed: seed of the evaluation masks of a masked model.
      last_timing: {"compile_s", "run_s", "frames"} of the latest call.
    """

    def __init__(
        self,
        model: nnx.Module,
        model_cfg: ModelConfig,
        *,
        input_layout: str = "h36m",
        eval_masks: bool = True,
        joints_per_frame: int = 0,
        bones_per_frame: int = 1,
        test_flip: bool = True,
        batch_size: int = 256,
        seed: int = 0,
        tds: int = 1,
    ):
        if model_cfg.stage == "pretrain":
            raise UserError("Predictor needs Stage II weights, got a Stage I model")
        if input_layout not in INPUT_LAYOUTS:
            raise UserError(f"input layout must be one of {INPUT_LAYOUTS}, got {input_layout!r}")
        self.model_cfg, self.input_layout = model_cfg, input_layout
        self.batch_size, self.seed, self.tds = int(batch_size), int(seed), int(tds)
        in_left, in_right = _INPUT_LISTS[input_layout]
        spec = MaskSpec(  # H36M lists for the masks also on COCO input (Q23)
            frames=model_cfg.frames,
            joints_per_frame=joints_per_frame,
            bones_per_frame=bones_per_frame,
            n_joints=model_cfg.n_joints,
        )
        self.step_cfg = steps.StepConfig(
            stage=model_cfg.stage,
            mask_spec=spec,
            masks_in_eval=bool(eval_masks) and model_cfg.stage == "lifter",
            root=skeleton.H36M_ROOT,
            joints_left=skeleton.H36M_JOINTS_LEFT,
            joints_right=skeleton.H36M_JOINTS_RIGHT,
            input_joints_left=in_left,
            input_joints_right=in_right,
            test_flip=test_flip,
        )
        self.graphdef, self.state = nnx.split(model)
        self.last_timing: dict = {}
        self._jitted = jax.jit(self.windows_function())
        self._compiled: dict = {}

    @classmethod
    def load(cls, weights: str | Path, *, input_layout: str = "auto", **kwargs) -> Predictor:
        """Builds a Predictor from a training workdir, a converted directory or a `.pth`.

        Args:
          weights: the weights (see `load_weights`).
          input_layout: "h36m", "coco" or "auto": a workdir's training keypoints tell; other
            weights: COCO for the mask-free model (the reference trains it for the wild,
            §2.7), H36M for the masked one.
          **kwargs: `Predictor` options (eval_masks, batch_size, test_flip, seed, tds).
        """
        model, cfg, info = load_weights(weights)
        if input_layout == "auto":
            input_layout = info.input_layout or ("coco" if cfg.stage == "lifter_nomask" else "h36m")
        kwargs.setdefault("eval_masks", info.masks_in_eval)
        kwargs.setdefault("joints_per_frame", info.joints_per_frame)
        kwargs.setdefault("bones_per_frame", info.bones_per_frame)
        return cls(model, cfg, input_layout=input_layout, **kwargs)

    def windows_function(self):
        """`f(windows (B, F, J, 2), batch_index ()) -> (B, J, 3)` with the weights closed over."""
        fn = functools.partial(_windows_forward, cfg=self.step_cfg, seed=self.seed)
        return functools.partial(fn, self.graphdef, self.state)

    def _batch_fn(self, b: int):
        if b not in self._compiled:
            t0 = time.perf_counter()
            x = jax.ShapeDtypeStruct((b, self.model_cfg.frames, self.model_cfg.n_joints, 2), "f4")
            self._compiled[b] = self._jitted.lower(x, jax.ShapeDtypeStruct((), "i4")).compile()
            self.last_timing["compile_s"] = time.perf_counter() - t0
        return self._compiled[b]

    def __call__(self, keypoints_2d) -> np.ndarray:
        """Lifts (T, 17, 2) normalised keypoints in `input_layout` order to (T, 17, 3) poses.

        Returns root-relative camera-frame poses (metres for Human3.6M-trained models), the
        root joint zeroed, as a float32 numpy array.
        """
        kp = np.asarray(keypoints_2d, np.float32)
        if kp.ndim != 3 or kp.shape[1:] != (self.model_cfg.n_joints, 2) or len(kp) == 0:
            raise UserError(
                f"keypoints must have shape (T, {self.model_cfg.n_joints}, 2), got {kp.shape}"
            )
        if not np.isfinite(kp).all():
            raise UserError("keypoints contain NaN or inf: fill the gaps first (fill_gaps)")
        self.last_timing = {"compile_s": 0.0}
        fn = self._batch_fn(seq2frame.batch_plan(len(kp), self.batch_size)[0])
        t0 = time.perf_counter()
        out = seq2frame.run_batches(
            lambda x, i: fn(jnp.asarray(x), jnp.asarray(i)),
            kp,
            frames=self.model_cfg.frames,
            batch_size=self.batch_size,
            tds=self.tds,
        )
        self.last_timing.update(run_s=time.perf_counter() - t0, frames=len(kp))
        return out

    def to_model_input(self, keypoints_px, resolution: tuple[float, float]) -> np.ndarray:
        """(T, 17, 2) COCO-order pixels -> normalised keypoints in the model's layout."""
        w, h = resolution
        kp = np.asarray(keypoints_px, np.float32)[..., :2]
        if self.input_layout == "h36m":
            kp = skeleton.coco_to_h36m(kp)
        return normalize_screen_coordinates(kp, w, h).astype(np.float32)  # §1.5, by the width

    def predict_pixels(self, keypoints_px, resolution: tuple[float, float]) -> np.ndarray:
        """Lifts (T, 17, 2|3) COCO-order pixel keypoints of a (width, height) video."""
        return self(self.to_model_input(keypoints_px, resolution))
