"""Export for serving: a `jax.export` (StableHLO) artifact of a `Predictor`, and its loader.

    python -m aptpose_jax.export --weights W --out DIR

DIR gets `lifter.jax_export` (the serialised `jax.export.Exported` of the batched lifter
`f(windows (b, F, 17, 2) f32, batch_index () i32) -> (b, 17, 3) f32` with a symbolic batch
size b and the weights baked in as constants) and `contract.json` (shapes, joint orders,
normalisation, window length and batching). With tensorflow installed, `saved_model/` also
holds a TF SavedModel of the same function (jax2tf); tensorflow is never required.

`load(DIR)` returns a callable with `Predictor`'s signature, `(T, 17, 2)` normalised keypoints
of any length T -> `(T, 17, 3)`, that runs the artifact with jax and numpy alone: this module
imports neither flax nor the model classes unless it exports.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
from jax import export as jax_export

from aptpose_jax import seq2frame
from aptpose_jax.errors import UserError, exit_on_user_error

ARTIFACT = "lifter.jax_export"
CONTRACT = "contract.json"
NORMALISATION = (
    "pixels (u, v) of a w x h frame -> u' = u / w * 2 - 1, v' = v / w * 2 - h / w "
    "(both divided by the width, reference section 1.5)"
)


def _contract(predictor) -> dict:
    from aptpose_jax.datasets import skeleton

    cfg = predictor.model_cfg
    names = skeleton.COCO_JOINT_NAMES if predictor.input_layout == "coco" else None
    return {
        "artifact": ARTIFACT,
        "jax_version": jax.__version__,
        "input": {
            "shape": ["T", cfg.n_joints, 2], "dtype": "float32",
            "joint_order": predictor.input_layout,
            "joint_names": list(names or skeleton.H36M_JOINT_NAMES),
            "normalisation": NORMALISATION,
        },
        "output": {
            "shape": ["T", cfg.n_joints, 3], "dtype": "float32",
            "joint_names": list(skeleton.H36M_JOINT_NAMES),
            "frame": "camera frame, root-relative (root joint zeroed), metres",
        },
        "artifact_signature": {
            "args": [["b", cfg.frames, cfg.n_joints, 2], []], "arg_dtypes": ["float32", "int32"],
            "result": ["b", cfg.n_joints, 3],
            "meaning": "windows of 2D keypoints centred on b frames, batch index (mask seed)",
        },
        "seq2frame": {
            "frames": cfg.frames, "tds": predictor.tds, "batch_size": predictor.batch_size,
            "padding": "edge replication", "test_flip": predictor.step_cfg.test_flip,
        },
        "model": {**cfg.__dict__, "eval_masks": predictor.step_cfg.masks_in_eval,
                  "seed": predictor.seed},
    }  # fmt: skip


def _save_tf(fn, cfg, directory: Path) -> bool:
    """Writes a jax2tf SavedModel when tensorflow is installed; returns whether it did."""
    try:
        import tensorflow as tf
        from jax.experimental import jax2tf
    except ImportError:
        return False
    poly = [f"(b, {cfg.frames}, {cfg.n_joints}, 2)", "()"]
    module = tf.Module()
    module.f = tf.function(
        jax2tf.convert(fn, polymorphic_shapes=poly),
        autograph=False,
        input_signature=[
            tf.TensorSpec([None, cfg.frames, cfg.n_joints, 2], tf.float32),
            tf.TensorSpec([], tf.int32),
        ],
    )
    tf.saved_model.save(module, str(directory / "saved_model"))
    return True


def export_predictor(predictor, out: str | Path) -> Path:
    """Writes the artifact and its contract for `predictor` into `out` (must not exist)."""
    out = Path(out).expanduser().resolve()
    if out.exists():
        raise UserError(f"{out} already exists; choose another --out or remove it")
    cfg = predictor.model_cfg
    fn = predictor.windows_function()
    (b,) = jax_export.symbolic_shape("b")
    exported = jax_export.export(jax.jit(fn))(
        jax.ShapeDtypeStruct((b, cfg.frames, cfg.n_joints, 2), np.float32),
        jax.ShapeDtypeStruct((), np.int32),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp.chmod(0o755)
        (tmp / ARTIFACT).write_bytes(exported.serialize())
        contract = _contract(predictor)
        contract["saved_model"] = _save_tf(fn, cfg, tmp)
        (tmp / CONTRACT).write_text(json.dumps(contract, indent=1) + "\n")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


class ExportedLifter:
    """The exported lifter as a callable: `(T, J, 2)` normalised keypoints -> `(T, J, 3)`."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        try:
            self.contract = json.loads((directory / CONTRACT).read_text())
            blob = (directory / self.contract["artifact"]).read_bytes()
        except (OSError, KeyError, json.JSONDecodeError) as e:
            raise UserError(f"{directory}: not an export directory ({e})") from None
        self.exported = jax_export.deserialize(bytearray(blob))
        self._call = jax.jit(self.exported.call)

    def __call__(self, keypoints_2d) -> np.ndarray:
        s = self.contract["seq2frame"]
        kp = np.asarray(keypoints_2d, np.float32)
        shape = tuple(self.contract["input"]["shape"][1:])
        if kp.ndim != 3 or kp.shape[1:] != shape or len(kp) == 0:
            raise UserError(
                f"keypoints must have shape (T, {shape[0]}, {shape[1]}), got {kp.shape}"
            )
        return seq2frame.run_batches(
            self._call, kp, frames=s["frames"], batch_size=s["batch_size"], tds=s["tds"]
        )


def load(directory: str | Path) -> ExportedLifter:
    """Loads an export directory written by `export_predictor` (jax + numpy only)."""
    return ExportedLifter(directory)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m aptpose_jax.export", description=__doc__.split("\n")[0]
    )
    p.add_argument("--weights", required=True, help="training workdir, converted dir or .pth")
    p.add_argument("--out", required=True, help="output directory (must not exist)")
    p.add_argument("--input-layout", default="auto", choices=("auto", "h36m", "coco"))
    p.add_argument("--no-eval-masks", action="store_true", help="masked model: no masks")
    p.add_argument("--batch-size", type=int, default=256, help="windows per call of the artifact")
    p.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    args = p.parse_args(argv)

    def run():
        from aptpose_jax.predictor import Predictor

        if Path(args.out).exists():
            raise UserError(f"{args.out} already exists; choose another --out or remove it")
        extra = {"eval_masks": False} if args.no_eval_masks else {}
        predictor = Predictor.load(
            args.weights, input_layout=args.input_layout, batch_size=args.batch_size, **extra
        )
        return export_predictor(predictor, args.out)

    out = exit_on_user_error(run, debug=args.debug)
    print(f"wrote {out / ARTIFACT} and {out / CONTRACT}")


if __name__ == "__main__":
    main(sys.argv[1:])
