"""Command line: `python -m aptpose_jax.main --config=<name>[:args] --workdir=DIR`.

`--config` takes a packaged config by name (`h36m_eval:demo`) or a file path
(`configs/h36m_eval.py:demo`, any file of your own); see `config_files`.
The configuration's `mode` decides: "train" (train, evaluate every epoch, checkpoint,
resume when the workdir already has checkpoints) or "eval" (one evaluation pass). Override
any field with `--config.<path>=<value>`; an unknown field is an error. A user error (bad
override, missing or corrupt file, mismatched weights, ...) is one line on stderr and exit
status 2; `--debug` or `--verbosity=1` shows its traceback. Logs: this package's INFO lines and
everyone's warnings by default; `--verbosity=N` sets absl's level for every library.
`.pth` files are converted with `python -m aptpose_jax.convert`.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from aptpose_jax import config_files, errors, logs, process, train

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Run configuration: a name (h36m_pretrain[:demo]) or a file (configs/h36m_pretrain.py).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs.")
_DEBUG = flags.DEFINE_bool("debug", False, "Show the traceback of user errors too.")
flags.mark_flags_as_required(["config", "workdir"])


def _parse_flags(argv):
    """absl's flag parsing; a config file that fails to load or a bad override is one line."""
    try:
        return flags.FLAGS(config_files.resolve_flag_args(argv))
    except Exception as e:  # noqa: BLE001  (narrowed below: anything else re-raises)
        if errors.debug_requested(argv):
            raise
        user = config_files.user_error_of(argv)
        if user is not None:  # a config's own check (ml_collections flattens it with a traceback)
            errors.fail(errors.one_line(user))
        if isinstance(e, flags.Error):  # absl's own message names the flag
            errors.fail(f"{e} (see --helpshort)")
        if not isinstance(e, (AttributeError, KeyError, OSError, TypeError, ValueError)):
            raise
        while e.args and isinstance(e.args[0], BaseException):  # ml_collections wraps twice
            e = e.args[0]
        text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
        overrides = " ".join(a for a in argv[1:] if a.startswith(("--config", "-config")))
        errors.fail(f"cannot build the configuration from {overrides}: {text}")


def overridden_fields(argv) -> frozenset[str]:
    """Dotted names of the fields set on the command line (`--config.model.frames=81`)."""
    names = [a.lstrip("-").removeprefix("config.").split("=")[0] for a in argv]
    return frozenset(n for a, n in zip(argv, names, strict=True) if a.startswith("--config."))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    verbosity = flags.FLAGS["verbosity"]
    logs.configure_console(explicit_verbosity=verbosity.present)
    debug = _DEBUG.value or (verbosity.present and verbosity.value >= 1)
    explicit = overridden_fields(sys.argv)
    config = _CONFIG.value

    def run_config():
        process.setup(config)  # before anything touches a device
        return train.train_and_evaluate(config, _WORKDIR.value, explicit=explicit)

    summary = errors.exit_on_user_error(run_config, debug=debug)
    if summary.get("table"):
        print(summary["table"])  # the entry point's result for the user


def run() -> None:
    """Console script `aptpose` (same as `python -m aptpose_jax.main`)."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
