"""Run logs: `metrics.jsonl` (one JSON object per logged step) and TensorBoard scalars.

Scalar names follow `train/...`, `eval/...` and `perf/...`. Only process 0 writes.
TensorBoard needs `tensorboardX` (in requirements.txt); without it only the JSON lines
are written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
from absl import logging


class MetricLog:
    """Appends scalars to `<workdir>/metrics.jsonl` and TensorBoard event files."""

    def __init__(self, workdir: str | Path, tensorboard: bool = True):
        self._active = jax.process_index() == 0
        self._file = None
        self._tb = None
        if not self._active:
            return
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self._file = open(workdir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:  # optional dependency
                logging.warning("tensorboardX is not installed: TensorBoard scalars skipped")
            else:
                self._tb = SummaryWriter(str(workdir / "tensorboard"))

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
            for name, value in values.items():
                self._tb.add_scalar(name, float(value), int(step))

    def scalar(self, name: str, value: float, step: int) -> None:
        self.scalars({name: value}, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
