"""Orbax checkpoints of a training run: latest-k for resuming, best-by-P1 for evaluation.

Layout of a workdir:
  checkpoints/<step>/{model,train,meta}   latest k (model weights, optimiser + step, metadata)
  best/<step>/{model,meta}                the checkpoint with the lowest evaluation P1
  config.json                             the resolved run configuration

`model` holds `{"params", "batch_stats"}` (NNX states), `train` holds `{"opt_state", "step"}`,
`meta` (JSON) holds epoch, step within the epoch, global step, best P1, the model config and
the seed. Masks, dropout and data order are functions of (seed, epoch, step), so this is
every RNG and data-order state a resumed run needs. Orbax writes each step into a temporary
directory and renames it only when complete, so a half-written checkpoint is never listed
and never restored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging


def _abs(path: str | os.PathLike) -> str:
    return os.path.abspath(os.fspath(path))  # orbax requires absolute paths


def _abstract(tree):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class RunCheckpoints:
    """Latest-k and best-by-P1 checkpoint managers of one workdir."""

    def __init__(self, workdir: str | os.PathLike, keep: int = 2):
        if keep < 1:
            raise ValueError(f"checkpoint.keep must be >= 1, got {keep}")

        # Multi-process: both managers save the same step, so their barriers need their own
        # names (orbax keys them by step directory name otherwise, and they would collide).
        def mp(prefix):
            return ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=prefix)

        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, multiprocessing_options=mp("latest")
        )
        self.latest = ocp.CheckpointManager(
            _abs(Path(workdir) / "checkpoints"),
            options=options,
            item_names=("model", "train", "meta"),
        )
        best_options = ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, multiprocessing_options=mp("best")
        )
        self.best = ocp.CheckpointManager(
            _abs(Path(workdir) / "best"), options=best_options, item_names=("model", "meta")
        )

    def save(self, step: int, model_tree, train_tree, meta: dict, *, is_best: bool) -> None:
        """Saves the latest checkpoint (and the best one when `is_best`), then waits."""
        self.latest.save(
            step,
            args=ocp.args.Composite(
                model=ocp.args.StandardSave(model_tree),
                train=ocp.args.StandardSave(train_tree),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )
        if is_best:
            self.best.save(
                step,
                args=ocp.args.Composite(
                    model=ocp.args.StandardSave(model_tree), meta=ocp.args.JsonSave(meta)
                ),
                force=True,
            )
        self.wait()

    def restore_latest(self, model_tree, train_tree):
        """Restores the newest complete checkpoint into trees shaped like the given ones.

        Returns:
          (model_tree, train_tree, meta), or None when the workdir has no checkpoint.
        """
        step = self.latest.latest_step()
        if step is None:
            return None
        restored = self.latest.restore(
            step,
            args=ocp.args.Composite(
                model=ocp.args.StandardRestore(_abstract(model_tree)),
                train=ocp.args.StandardRestore(_abstract(train_tree)),
                meta=ocp.args.JsonRestore(),
            ),
        )
        logging.info("resumed from %s step %d", self.latest.directory, step)
        return restored["model"], restored["train"], restored["meta"]

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def read_run_meta(workdir: str | os.PathLike, which: str = "best") -> tuple[str, int, dict]:
    """Finds the checkpoint to load from a workdir and reads its metadata.

    Args:
      workdir: a training workdir.
      which: "best" (falls back to "latest" when no evaluation ran) or "latest".

    Returns:
      (manager directory, step, meta dict).
    """
    order = ("best", "checkpoints") if which == "best" else ("checkpoints",)
    for sub in order:
        directory = Path(_abs(workdir)) / sub
        if not directory.is_dir():
            continue
        mngr = ocp.CheckpointManager(
            str(directory),
            item_names=("model", "meta"),
            options=ocp.CheckpointManagerOptions(read_only=True),
        )
        step = mngr.latest_step()
        if step is not None:
            meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            mngr.close()
            return str(directory), step, dict(meta["meta"])
        mngr.close()
    raise FileNotFoundError(
        f"no complete checkpoint in {workdir!r} (looked in {', '.join(order)}); train there "
        "first, or point --config.init.from_workdir / from_pth at an existing run or .pth file"
    )


def restore_model_tree(directory: str, step: int, model_tree) -> Any:
    """Restores the `model` item ({"params", "batch_stats"}) of one checkpoint step."""
    mngr = ocp.CheckpointManager(
        directory,
        item_names=("model", "meta"),
        options=ocp.CheckpointManagerOptions(read_only=True),
    )
    try:
        restored = mngr.restore(
            step, args=ocp.args.Composite(model=ocp.args.StandardRestore(_abstract(model_tree)))
        )
    finally:
        mngr.close()
    return restored["model"]
