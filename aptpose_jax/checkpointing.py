"""Orbax checkpoints of a training run: latest-k for resuming, best-by-P1 for evaluation.

Layout of a workdir:
  checkpoints/<step>/{model,train,meta}   latest k (model weights, optimiser + step, metadata)
  best/<step>/{model,meta}                the checkpoint with the lowest evaluation P1
  config.json                             the resolved run configuration

`model` holds `{"params", "batch_stats"}` (NNX states), `train` holds `{"opt_state", "step"}`,
`meta` (JSON) holds epoch, global step, best P1 and its step, the model config, the seed and
the fields a resume must agree with (`resume`, see `resume.resume_fields`). Masks, dropout
and data order are functions of (seed, epoch, step), so this is every RNG and data-order
state a resumed run needs. Orbax writes each step into a temporary directory and renames it
only when complete, so a half-written checkpoint is never listed and never restored. Best
is written before latest and both saves are idempotent (see `RunCheckpoints`), so the two
directories never contradict each other after a kill.
"""

from __future__ import annotations

import contextlib
import functools
import logging as std_logging
import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from aptpose_jax.errors import ConfigError, MissingFileError


@functools.cache
def _one_writer_per_array() -> None:
    """Makes orbax write each jax.Array from one replica (once per process, quietly).

    Orbax's default, replica-parallel saving, cuts every replicated array into per-device
    slices with eager ops: with 8 (fake CPU) devices that made one save of a small model take
    ~8 s. The state here is replicated and small (9 M parameters at the paper's size), so one
    writer per array is the faster choice on every backend. Orbax logs a warning when a
    handler is replaced; it is silenced here (nothing is wrong).
    """
    level = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        ocp.type_handlers.register_type_handler(
            jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True
        )
    finally:
        logging.set_verbosity(level)


def _abs(path: str | os.PathLike) -> str:
    return os.path.abspath(os.fspath(path))  # orbax requires absolute paths


class _DropReadOnlyNotes(std_logging.Filter):
    """Drops orbax's notes on a read-only manager (each restore logged six WARNING lines).

    A read-only manager is what we ask for when loading weights; orbax warns that it then sets
    `create=False`, `save_interval_steps=0`, ... and that the directory is read only. Only
    those messages are dropped, only while `_read_only_manager` opens a manager.
    """

    PREFIXES = ("CheckpointManagerOptions.read_only=True", "Given directory is read only")

    def filter(self, record: std_logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIXES)


@contextlib.contextmanager
def _read_only_manager(directory: str):
    """A read-only CheckpointManager of `model` and `meta` (orbax's notes on it dropped)."""
    absl_logger = std_logging.getLogger("absl")  # orbax logs through absl
    quiet = _DropReadOnlyNotes()
    absl_logger.addFilter(quiet)
    try:
        mngr = ocp.CheckpointManager(
            directory,
            item_names=("model", "meta"),
            options=ocp.CheckpointManagerOptions(read_only=True),
        )
    finally:
        absl_logger.removeFilter(quiet)
    try:
        yield mngr
    finally:
        mngr.close()


def _abstract(tree):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class RunCheckpoints:
    """Latest-k and best-by-P1 checkpoints of one workdir, kept as one consistent record.

    Saves are ordered (best first, then latest) and idempotent (a step that is already there,
    or a best step the run will reach again, is not written twice), so a process killed at
    any moment leaves a workdir that the next run resumes without error: it restarts from the
    newest complete `checkpoints/<step>`, replays the (deterministic) steps after it and finds
    any best step it already wrote. Leftover temporary directories of a killed save are
    removed when the managers open.
    """

    def __init__(self, workdir: str | os.PathLike, keep: int = 2):
        if keep < 1:
            raise ConfigError(f"checkpoint.keep must be >= 1, got {keep}")
        _one_writer_per_array()

        # Multi-process: both managers save the same step, so their barriers need their own
        # names (orbax keys them by step directory name otherwise, and they would collide).
        def mp(prefix):
            return ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=prefix)

        # Synchronous saves: every save is waited for anyway (best before latest).
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=False,
            multiprocessing_options=mp("latest"),
        )
        self.latest = ocp.CheckpointManager(
            _abs(Path(workdir) / "checkpoints"),
            options=options,
            item_names=("model", "train", "meta"),
        )
        best_options = ocp.CheckpointManagerOptions(
            max_to_keep=1,
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=False,
            multiprocessing_options=mp("best"),
        )
        self.best = ocp.CheckpointManager(
            _abs(Path(workdir) / "best"), options=best_options, item_names=("model", "meta")
        )

    def save(self, step: int, model_tree, train_tree, meta: dict, *, is_best: bool) -> None:
        """Saves the best checkpoint (when `is_best`), then the latest one, and waits."""
        if is_best:
            self.save_best(step, model_tree, meta)
        self.save_latest(step, model_tree, train_tree, meta)

    def save_best(self, step: int, model_tree, meta: dict) -> None:
        """Writes `best/<step>` unless it, or a later best step, is already there.

        A later one exists only when an earlier process of this run got further before it
        was killed: the replay reaches that step again with the same weights.
        """
        if any(s >= step for s in self.best.all_steps()):
            logging.info("best checkpoint %d already written (replayed step)", step)
            return
        self.best.save(
            step,
            args=ocp.args.Composite(
                model=ocp.args.StandardSave(model_tree), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self.best.wait_until_finished()  # complete before the latest step can refer to it

    def save_latest(self, step: int, model_tree, train_tree, meta: dict) -> None:
        """Writes `checkpoints/<step>` (skipped when that step is already complete)."""
        if step in self.latest.all_steps():
            return
        self.latest.save(
            step,
            args=ocp.args.Composite(
                model=ocp.args.StandardSave(model_tree),
                train=ocp.args.StandardSave(train_tree),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )
        self.latest.wait_until_finished()

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
        with _read_only_manager(str(directory)) as mngr:
            step = mngr.latest_step()
            if step is not None:
                meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
                return str(directory), step, dict(meta["meta"])
    raise MissingFileError(
        f"no complete checkpoint in {workdir!r} (looked in {', '.join(order)}); train there "
        "first, or point --config.init.from_workdir / from_pth at an existing run or .pth file"
    )


def restore_model_tree(directory: str, step: int, model_tree) -> Any:
    """Restores the `model` item ({"params", "batch_stats"}) of one checkpoint step."""
    with _read_only_manager(directory) as mngr:
        restored = mngr.restore(
            step, args=ocp.args.Composite(model=ocp.args.StandardRestore(_abstract(model_tree)))
        )
    return restored["model"]
