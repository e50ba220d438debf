"""Command line: `python -m aptpose_jax.main --config=configs/<name>.py[:args] --workdir=DIR`.

The configuration's `mode` decides: "train" (train, evaluate every epoch, checkpoint,
resume when the workdir already has checkpoints) or "eval" (one evaluation pass). Override
any field with `--config.<path>=<value>`; an unknown field is an error. `.pth` files are
converted with `python -m aptpose_jax.convert`.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from aptpose_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Run configuration file, e.g. configs/h36m_pretrain.py[:demo].",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs.")
flags.mark_flags_as_required(["config", "workdir"])


def _quiet_libraries(record) -> bool:
    """Keeps orbax's INFO chatter out of the run log (warnings still pass)."""
    return record.levelno >= logging.WARNING or "orbax" not in record.pathname


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(_quiet_libraries)
    summary = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    if summary.get("table"):
        print(summary["table"])  # the entry point's result for the user


if __name__ == "__main__":
    app.run(main)
