"""Run logs: `metrics.jsonl` (one JSON object per logged step) and TensorBoard scalars.

Scalar names follow `train/...`, `eval/...` and `perf/...`. Only process 0 writes.
TensorBoard needs `tensorboardX` (in requirements.txt); without it only the JSON lines
are written. Both are flushed at every logged step. A resumed run first drops what a killed
process logged after the restored checkpoint, so every step appears once.
"""

from __future__ import annotations

import json
import logging as pylogging
import os
import time
from pathlib import Path

import jax
from absl import logging

from aptpose_jax import atomic_files

_PACKAGE_DIR = str(Path(__file__).resolve().parent)


def ours_or_warning(record: pylogging.LogRecord) -> bool:
    """Log filter: warnings and errors of every library, lower levels only of this package.

    Compares Python `logging` levels (absl's own constants are another scale).
    """
    if record.levelno >= pylogging.WARNING:
        return True
    return record.pathname.startswith(_PACKAGE_DIR) or record.name.startswith("aptpose_jax")


def configure_console(explicit_verbosity: bool) -> None:
    """Sets up the console log of an entry point.

    Args:
      explicit_verbosity: whether `--verbosity` was given. If not, this package logs at INFO
        and other libraries (orbax's per-save chatter, jax) only their warnings; if it was,
        absl's level applies to every library unfiltered.
    """
    handler = logging.get_absl_handler()
    if explicit_verbosity:
        return
    logging.set_verbosity(logging.INFO)
    if ours_or_warning not in handler.filters:
        handler.addFilter(ours_or_warning)


def _truncate_after(path: Path, step: int) -> None:
    """Drops the records of steps after `step` from a metrics.jsonl (atomic rewrite)."""
    if not path.is_file():
        return
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            keep = int(json.loads(line)["step"]) <= step
        except (ValueError, KeyError, TypeError):
            keep = False  # a line cut short by a kill
        if keep:
            kept.append(line + "\n")
        else:
            dropped += 1
    if not dropped:
        return
    atomic_files.write_text(path, "".join(kept))
    logging.info("metrics.jsonl: dropped %d records after step %d (to be replayed)", dropped, step)


class _TensorBoardFile:
    """A TensorBoard event file written synchronously: every call is on disk when it returns.

    (tensorboardX's SummaryWriter queues events for a background thread, so its `flush()`
    does not guarantee that the last scalars of a killed run were written.)
    """

    def __init__(self, logdir: Path, resume_step: int | None):
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.summary import scalar

        self._event, self._scalar = Event, scalar
        logdir.mkdir(parents=True, exist_ok=True)
        suffix = f".{os.getpid()}.{time.time_ns()}"  # unique even for restarts within a second
        self._writer = EventsWriter(str(logdir / "events"), suffix)
        if resume_step is not None:  # TensorBoard hides events of later steps (a replay)
            start = SessionLog(status=SessionLog.START)
            self._writer.write_event(Event(wall_time=time.time(), step=resume_step + 1,
                                           session_log=start))  # fmt: skip
            self._writer.flush()

    def scalars(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            summary = self._scalar(name, float(value))
            self._writer.write_event(self._event(wall_time=time.time(), step=step, summary=summary))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class MetricLog:
    """Appends scalars to `<workdir>/metrics.jsonl` and TensorBoard event files."""

    def __init__(
        self, workdir: str | Path, tensorboard: bool = True, resume_step: int | None = None
    ):
        """Opens the logs of `workdir` for appending.

        Args:
          workdir: the run's directory.
          tensorboard: also write TensorBoard event files (needs tensorboardX).
          resume_step: a training run restarting after global step `resume_step` (0 for a
            fresh start): records of later steps, written by a killed process and about to be
            replayed, are dropped from `metrics.jsonl` and purged from TensorBoard, so each
            step is there once. None (evaluation) appends.
        """
        self._active = jax.process_index() == 0
        self._file = None
        self._tb = None
        if not self._active:
            return
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "metrics.jsonl"
        if resume_step is not None:
            _truncate_after(path, resume_step)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115
        if tensorboard:
            try:
                self._tb = _TensorBoardFile(workdir / "tensorboard", resume_step)
            except ImportError:  # optional dependency
                logging.warning("tensorboardX is not installed: TensorBoard scalars skipped")

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Logs several scalars at one step."""
        if not self._active:
            return
        record = {
            "step": int(step),
            "time": time.time(),
            **{k: float(v) for k, v in values.items()},
        }
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            self._tb.scalars(values, int(step))  # written and flushed before returning

    def scalar(self, name: str, value: float, step: int) -> None:
        self.scalars({name: value}, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
